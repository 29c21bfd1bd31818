#!/bin/sh
# As in Debian's official images: packages installed in an image build start no services.
exit 101
