#!/usr/bin/env bash
# Start a throw-away etcd + kube-apiserver on loopback (envtest style).
#   run.sh start   -> prints the state dir; writes $DIR/env (PORT, TOKEN, PIDs, URLs)
#   run.sh stop DIR
# Binaries are taken from $EDGEMESH_BIN (default ~/.cache/edgemesh/bin).
set -euo pipefail
BIN=${EDGEMESH_BIN:-$HOME/.cache/edgemesh/bin}
# envtest disables the ServiceAccount admission plugin (no controller-manager creates "default" SAs);
# DISABLE_ADMISSION_PLUGINS="" keeps the apiserver defaults (ServiceAccount admission on).
DISABLE_ADMISSION_PLUGINS=${DISABLE_ADMISSION_PLUGINS-ServiceAccount}

now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

start() {
  local D; D=$(mktemp -d "${TMPDIR:-/tmp}/edgemesh-cp.XXXXXX")
  mkdir -p "$D/etcd" "$D/certs"
  local EP PP AP TOKEN
  EP=$(free_port); PP=$(free_port); AP=$(free_port)
  TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

  # --- service-account signing key + static admin token -----------------------
  openssl genrsa -out "$D/sa.key" 2048 2>/dev/null
  openssl rsa -in "$D/sa.key" -pubout -out "$D/sa.pub" 2>/dev/null
  echo "$TOKEN,admin,admin-uid,\"system:masters\"" > "$D/tokens.csv"

  # --- etcd -------------------------------------------------------------------
  local t0; t0=$(now_ms)
  "$BIN/etcd" --name=default --data-dir="$D/etcd" \
    --listen-client-urls="http://127.0.0.1:$EP" --advertise-client-urls="http://127.0.0.1:$EP" \
    --listen-peer-urls="http://127.0.0.1:$PP" --initial-advertise-peer-urls="http://127.0.0.1:$PP" \
    --initial-cluster="default=http://127.0.0.1:$PP" \
    --unsafe-no-fsync=true --log-level=warn --logger=zap \
    > "$D/etcd.log" 2>&1 &
  local ETCD_PID=$!
  until curl -sf "http://127.0.0.1:$EP/health" >/dev/null 2>&1; do
    kill -0 $ETCD_PID 2>/dev/null || { echo "etcd died"; tail -20 "$D/etcd.log"; exit 1; }
    sleep 0.05
  done
  local t1; t1=$(now_ms)

  # --- kube-apiserver ----------------------------------------------------------
  "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$EP" \
    --advertise-address=127.0.0.1 --bind-address=127.0.0.1 --secure-port="$AP" \
    --cert-dir="$D/certs" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$D/sa.pub" \
    --service-account-signing-key-file="$D/sa.key" \
    --token-auth-file="$D/tokens.csv" \
    --allow-privileged=true \
    ${DISABLE_ADMISSION_PLUGINS:+--disable-admission-plugins=$DISABLE_ADMISSION_PLUGINS} \
    ${APISERVER_EXTRA_FLAGS:-} \
    > "$D/apiserver.log" 2>&1 &
  local API_PID=$!
  until [ "$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$AP/readyz")" = 200 ]; do
    kill -0 $API_PID 2>/dev/null || { echo "kube-apiserver died"; tail -30 "$D/apiserver.log"; exit 1; }
    sleep 0.1
  done
  local t2; t2=$(now_ms)

  cat > "$D/env" <<EOF
DIR=$D
ETCD_PID=$ETCD_PID
API_PID=$API_PID
ETCD_URL=http://127.0.0.1:$EP
API_URL=https://127.0.0.1:$AP
TOKEN=$TOKEN
ETCD_READY_MS=$((t1-t0))
API_READY_MS=$((t2-t1))
EOF
  # kubeconfig for helm/kubectl-style clients
  cat > "$D/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$AP", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: "$TOKEN"}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
EOF
  echo "etcd ready in $((t1-t0)) ms; kube-apiserver ready in $((t2-t1)) ms (pids etcd=$ETCD_PID api=$API_PID)" >&2
  echo "$D"
}

stop() {
  local D=$1; . "$D/env"
  kill "$API_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$API_PID" 2>/dev/null || break; sleep 0.1; done
  kill "$ETCD_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$ETCD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$API_PID" "$ETCD_PID" 2>/dev/null || true
  rm -rf "$D"
}

case "${1:-}" in
  start) start ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
