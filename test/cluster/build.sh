#!/usr/bin/env bash
# Build the test cluster's node and controller binaries from Go modules (the Go module proxy only)
# into $EDGEMESH_BIN (default ~/.cache/edgemesh/bin):
#   kubelet, kube-proxy, kube-controller-manager,       (k8s.io/kubernetes, same version as the
#   kube-scheduler                                      control plane's kube-apiserver)
#   containerd, containerd-shim-runc-v2, ctr, crictl    (containerd 2.x: Debian's 1.6 is too old
#                                                       for kubelet 1.36's CRI v1 expectations)
# runc and the CNI plugins come from Debian's packages (test/prereqs.sh).
# Two wrapper modules (tools-k8s/, tools-cri/) so containerd's dependency versions never move
# Kubernetes' (or the control plane's) ones. Skips when the binaries exist and the stamp matches.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${EDGEMESH_BIN:-$HOME/.cache/edgemesh/bin}
CACHE=${EDGEMESH_CACHE:-$HOME/.cache/edgemesh}
KUBE_VERSION=v1.36.3
CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
KUBE_BUILD_DATE=2026-07-22T18:07:38Z

export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gobuild
export GOFLAGS="-buildvcs=false -p=2 -mod=readonly"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOGC=400
command -v go >/dev/null 2>&1 || { [ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"; }
log() { echo "[cluster-build $(date +%T)] $*"; }

stamp=$(cat "$HERE"/tools-k8s/go.{mod,sum} "$HERE"/tools-cri/go.{mod,sum} "$0" | sha256sum | cut -c1-16)
ok=1
for b in kubelet kube-proxy kube-controller-manager kube-scheduler containerd containerd-shim-runc-v2 ctr crictl; do
  [ -x "$BIN/$b" ] || ok=0
done
if [ $ok = 1 ] && [ "$(cat "$BIN/.cluster-stamp" 2>/dev/null)" = "$stamp" ]; then
  log "up to date ($stamp): $BIN"; exit 0
fi
mkdir -p "$BIN" "$CACHE"
t0=$(date +%s)

V=k8s.io/component-base/version
LDF="-s -w -X $V.gitVersion=$KUBE_VERSION -X $V.gitMajor=1 -X $V.gitMinor=$(echo $KUBE_VERSION | cut -d. -f2)"
LDF="$LDF -X $V.gitTreeState=clean -X $V.buildDate=$KUBE_BUILD_DATE"
OUT=$(mktemp -d "$CACHE/out.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
log "compiling kubelet, kube-proxy, kube-controller-manager, kube-scheduler $KUBE_VERSION (cold: several minutes on 2 cores)"
(cd "$HERE/tools-k8s" && nice -n 10 go build -trimpath -ldflags "$LDF" -o "$OUT/" \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
t1=$(date +%s); log "kubernetes binaries done in $((t1-t0))s"

C=github.com/containerd/containerd/v2/version
CLDF="-s -w -X $C.Version=$CONTAINERD_VERSION -X $C.Package=github.com/containerd/containerd/v2"
log "compiling containerd $CONTAINERD_VERSION (+ shim, ctr) and crictl $CRICTL_VERSION"
(cd "$HERE/tools-cri" && nice -n 10 go build -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" -ldflags "$CLDF" -o "$OUT/" \
  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
  github.com/containerd/containerd/v2/cmd/ctr)
(cd "$HERE/tools-cri" && nice -n 10 go build -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" -o "$OUT/" sigs.k8s.io/cri-tools/cmd/crictl)
t2=$(date +%s); log "runtime binaries done in $((t2-t1))s"
for b in kubelet kube-proxy kube-controller-manager kube-scheduler containerd containerd-shim-runc-v2 ctr crictl; do mv "$OUT/$b" "$BIN/$b"; done
echo "$stamp" > "$BIN/.cluster-stamp"
"$BIN/kubelet" --version; "$BIN/containerd" --version; "$BIN/crictl" --version
log "total $((t2-t0))s; binaries in $BIN"
