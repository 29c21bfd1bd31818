# Sourced by test/image/base.sh and build.sh: one buildah setup for both.
# The test images live in their own storage under the cache (not the host's
# /var/lib/containers), so they never mix with an admin's images and one directory holds all of
# it. Root, chroot isolation, host network: no Docker engine, no user namespaces, no CNI needed.
EDGEMESH_CACHE=${EDGEMESH_CACHE:-$HOME/.cache/edgemesh}
IMAGE_CACHE=$EDGEMESH_CACHE/image
BUILDAH_ROOT=${EDGEMESH_BUILDAH_ROOT:-$IMAGE_CACHE/storage}
BUILDAH_RUNROOT=${EDGEMESH_BUILDAH_RUNROOT:-/run/edgemesh-buildah}
# overlay unless the cache sits on a filesystem overlay cannot stack on (overlay itself, e.g.
# inside a container): then the slower but universal vfs
if [ -z "${EDGEMESH_BUILDAH_DRIVER:-}" ]; then
  mkdir -p "$BUILDAH_ROOT"
  case $(stat -f -c %T "$BUILDAH_ROOT") in overlayfs|overlay) EDGEMESH_BUILDAH_DRIVER=vfs ;; *) EDGEMESH_BUILDAH_DRIVER=overlay ;; esac
fi
export BUILDAH_ISOLATION=chroot

bh() { buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" --storage-driver "$EDGEMESH_BUILDAH_DRIVER" "$@"; }

# sha256 of stdin, hex only
sha() { sha256sum | cut -d' ' -f1; }

log() { echo "[image $(date -u +%H:%M:%S)] $*" >&2; }
