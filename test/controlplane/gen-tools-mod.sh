#!/usr/bin/env bash
# (Re)generate the wrapper module in $TOOLS_DIR for a given kube/helm/etcd version set.
# Only needed when bumping versions; the result (go.mod, go.sum, tools.go) is what gets committed.
#   KUBE_VERSION=v1.36.3 HELM_VERSION=v3.21.4 ETCD_VERSION=v3.6.16 ./gen-tools-mod.sh
# Constraint: the proxy here serves k8s.io/kubernetes zips only for some versions
# (v1.37.2 -> 403 "This module version is not available"); v1.36.3 works.
# helm must use the same k8s minor (helm v3.21.x -> k8s 0.36.x; v3.22.x -> 0.37.x).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS_DIR=${TOOLS_DIR:-$HERE/tools}
KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/edgemesh/gomod} GOCACHE=${GOCACHE:-$HOME/.cache/edgemesh/gobuild}
export GOFLAGS="-buildvcs=false -mod=mod" GOTOOLCHAIN=local
mkdir -p "$TOOLS_DIR"; cd "$TOOLS_DIR"

KMOD=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import sys,json; print(json.load(sys.stdin)["GoMod"])')
# every k8s.io/* module that k8s.io/kubernetes requires at v0.0.0 is a ./staging replace
mods=$(awk '/^require/,/^\)/' "$KMOD" | awk '$1 ~ /^k8s.io\// && $2=="v0.0.0"{print $1}')
{
  echo "module edgemesh-cp-tools"; echo; echo "go 1.26.0"; echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"; echo
  echo "replace ("
  for m in $mods; do printf "\t%s => %s %s\n" "$m" "$m" "$STAGING_VERSION"; done
  echo ")"
} > go.mod
cat > tools.go <<'EOF'
//go:build tools

// Package tools pins the control-plane binaries used by integration tests.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "helm.sh/helm/v3/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
EOF
go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION" -require="helm.sh/helm/v3@$HELM_VERSION"
rm -f go.sum
go mod tidy
echo "wrote $TOOLS_DIR/{go.mod,go.sum,tools.go}"
