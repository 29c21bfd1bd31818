#!/usr/bin/env bash
# Builds the edgemesh image from manifests/Dockerfile the way a user builds it (the Dockerfile and
# its manifests/Dockerfile.dockerignore unchanged, the repository root as context) with buildah,
# no Docker engine: the base node:24-slim assembled locally first (test/image/base.sh), then
#   buildah bud -f manifests/Dockerfile -t ghcr.io/edgemesh-ts/edgemesh:<Chart appVersion> .
# and writes a docker-archive tarball that `ctr -n k8s.io images import` (and `docker load`)
# reads, at $IMAGE_CACHE/edgemesh-<tag>-<key>.tar (named by the cache key below: a run building
# other sources never replaces the archive another run is importing).
#
# Cached: the archive is rebuilt only when its key changes, a hash over the files the Dockerfile
# copies (package*.json, tsconfig*.json, bin/, shared/, server/, agent/), the Dockerfile, its
# .dockerignore, this script and the base image's hash. Sizes and the build time go to stderr;
# stdout gets one JSON line for test/image/image.ts:
#   {"archive":...,"ref":...,"sizeBytes":<uncompressed layers>,"archiveBytes":...,"buildMs":...,"cached":...}
#
#   bash test/image/build.sh     needs root, buildah, mmdebstrap (bash test/prereqs.sh image)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=test/image/buildah.sh
. "$ROOT/test/image/buildah.sh"
cd "$ROOT"

[ "$(id -u)" = 0 ] || { echo "test/image/build.sh: needs root (buildah with chroot isolation)" >&2; exit 1; }
TAG=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' manifests/helm/edgemesh/Chart.yaml)
[ -n "$TAG" ] || { echo "test/image/build.sh: no appVersion in manifests/helm/edgemesh/Chart.yaml" >&2; exit 1; }
REF=ghcr.io/edgemesh-ts/edgemesh:$TAG
mkdir -p "$IMAGE_CACHE"

# one build at a time (parallel test files share the cache)
exec 9>"$IMAGE_CACHE/build.lock"
flock 9

now_ms() { date +%s%3N; }
started=$(now_ms)

BASE_HASH=$(bash test/image/base.sh)
KEY=$( {
  echo "ref $REF base $BASE_HASH"
  sha256sum manifests/Dockerfile manifests/Dockerfile.dockerignore test/image/build.sh
  find package.json package-lock.json tsconfig.json tsconfig.build.json bin shared server agent -type f -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum
} | sha)
ARCHIVE=$IMAGE_CACHE/edgemesh-$TAG-${KEY:0:16}.tar
META=$ARCHIVE.json

json_field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$META"; }

if [ -s "$ARCHIVE" ] && [ -s "$META" ] && grep -q "\"key\":\"$KEY\"" "$META"; then
  touch "$ARCHIVE" "$META" # in use: kept by the pruning below
  size=$(json_field sizeBytes); archive_bytes=$(json_field archiveBytes); build_ms=$(json_field buildMs)
  log "cached: $ARCHIVE ($REF, image $((size / 1048576)) MiB, archive $((archive_bytes / 1048576)) MiB, built in $((build_ms / 1000)) s)"
  printf '{"archive":"%s","ref":"%s","sizeBytes":%s,"archiveBytes":%s,"buildMs":%s,"cached":true}\n' \
    "$ARCHIVE" "$REF" "$size" "$archive_bytes" "$build_ms"
  exit 0
fi

log "building $REF from manifests/Dockerfile (buildah, $EDGEMESH_BUILDAH_DRIVER storage)"
# A host behind a TLS-inspecting proxy trusts its CA through NODE_EXTRA_CA_CERTS; the build's
# `npm ci` needs the same trust. Mounted for the RUN steps only, over /usr/local/etc (npm's global
# npmrc lives there; the directory exists and is empty in node:24-slim, so no mount point is left
# behind in a layer): the Dockerfile stays as is.
ca_mounts=()
build_ca=${EDGEMESH_BUILD_CA:-${NODE_EXTRA_CA_CERTS:-}}
if [ -n "$build_ca" ] && [ -f "$build_ca" ]; then
  npm_etc=$IMAGE_CACHE/build-npm-etc
  mkdir -p "$npm_etc"
  cp "$build_ca" "$npm_etc/build-ca.crt"
  echo "cafile=/usr/local/etc/build-ca.crt" > "$npm_etc/npmrc"
  ca_mounts=(--volume "$npm_etc:/usr/local/etc:ro")
  log "trusting $build_ca for the build's npm (NODE_EXTRA_CA_CERTS)"
fi
# --layers: an unchanged package-lock.json reuses the npm ci layers; --pull=never: the base is
# the local one; --ignorefile: the Dockerfile's own .dockerignore, which buildah also finds by
# itself, named here so an older buildah cannot silently send the whole tree
bh bud --layers --force-rm --pull=never --network host --isolation chroot "${ca_mounts[@]}" \
  --ignorefile manifests/Dockerfile.dockerignore \
  -f manifests/Dockerfile -t "$REF" . >&2

rm -f "$ARCHIVE" "$META" "$ARCHIVE.partial"
bh push --quiet "$REF" "docker-archive:$ARCHIVE.partial:$REF" >&2
mv "$ARCHIVE.partial" "$ARCHIVE"
# archives of other sources: gone once no run has used them for a day (a run uses its archive
# within minutes of this script's exit)
find "$IMAGE_CACHE" -maxdepth 1 -name 'edgemesh-*.tar*' ! -name "$(basename "$ARCHIVE")*" -mmin +1440 -delete
build_ms=$(( $(now_ms) - started ))

# uncompressed size: the layer tarballs inside the archive (what the runtime unpacks)
size=$(tar -tvf "$ARCHIVE" | awk '$NF ~ /\.tar$/ { s += $3 } END { print s + 0 }')
archive_bytes=$(stat -c %s "$ARCHIVE")
printf '{"key":"%s","ref":"%s","sizeBytes":%s,"archiveBytes":%s,"buildMs":%s}\n' \
  "$KEY" "$REF" "$size" "$archive_bytes" "$build_ms" > "$META"
log "built $REF in $((build_ms / 1000)) s: image $((size / 1048576)) MiB uncompressed, archive $ARCHIVE $((archive_bytes / 1048576)) MiB"
printf '{"archive":"%s","ref":"%s","sizeBytes":%s,"archiveBytes":%s,"buildMs":%s,"cached":false}\n' \
  "$ARCHIVE" "$REF" "$size" "$archive_bytes" "$build_ms"
