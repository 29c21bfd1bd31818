#!/usr/bin/env bash
# The root filesystem of an image archive (what test/image/build.sh wrote), mounted read-write by
# buildah in the test storage, for tests that run the image with runc the way a kubelet does.
#   bash test/image/rootfs.sh mount <archive> <name>   prints the rootfs path
#   bash test/image/rootfs.sh rm <name>                unmounts and removes it
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=test/image/buildah.sh
. "$ROOT/test/image/buildah.sh"

case ${1:-} in
  mount)
    [ $# -eq 3 ] || { echo "usage: rootfs.sh mount <archive> <name>" >&2; exit 2; }
    bh rm "$3" >/dev/null 2>&1 || true
    bh from --quiet --name "$3" "docker-archive:$2" >/dev/null
    bh mount "$3"
    ;;
  rm)
    [ $# -eq 2 ] || { echo "usage: rootfs.sh rm <name>" >&2; exit 2; }
    bh umount "$2" >/dev/null 2>&1 || true
    bh rm "$2" >/dev/null
    ;;
  *) echo "usage: rootfs.sh mount <archive> <name> | rm <name>" >&2; exit 2 ;;
esac
