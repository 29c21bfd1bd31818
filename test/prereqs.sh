#!/usr/bin/env bash
# The system tools that the tests, the demo and the benchmarks need (network labs, a real DNS
# upstream, the control plane build). The one list of them: npm's pretest/demo/bench scripts and
# .ci/run all call this. Missing tools are installed with apt when running as root; otherwise it
# stops at once with one line giving the command to run.
#
#   bash test/prereqs.sh [group...]    groups: lab (default), controlplane (default), dnsperf,
#                                      cluster (test/cluster: runc, CNI plugins, gcc for the pause image),
#                                      image (test/image: buildah, mmdebstrap for the base image, runc)
#
# Uses only bash builtins besides `id`, `apt-get`, `go` and `systemctl`, all looked up in PATH, so
# a test can run it with a PATH of stubs (test/unit/prereqs.test.ts), and /bin/chmod and /bin/rm
# for its temporary policy-rc.d.
#
# No daemon starts because of this install: Debian's postinst scripts start (and enable) the
# services they ship, and openssh-server would start the host's own sshd on port 22 on a fresh VM
# (the labs run their own sshd in their namespaces). During apt-get install a policy-rc.d that
# answers 101 ("action forbidden") holds every start (invoke-rc.d and deb-systemd-invoke ask it);
# it is removed afterwards, also on failure or interrupt, and only if this script created it (an
# admin's own policy-rc.d stays and decides). openssh-server installed here is then disabled
# (ssh.service, ssh.socket), so it does not start at the next boot either.
set -euo pipefail

# group  command (checked in PATH)  Debian package
TOOLS='
lab ip iproute2
lab iptables iptables
lab iptables-restore iptables
lab conntrack conntrack
lab nft nftables
lab iperf3 iperf3
lab dig dnsutils
lab dnsmasq dnsmasq-base
lab curl curl
lab sysctl procps
lab killall psmisc
lab openssl openssl
lab update-ca-certificates ca-certificates
lab sshd openssh-server
lab ssh openssh-client
lab scp openssh-client
lab ssh-keygen openssh-client
lab nc.openbsd netcat-openbsd
lab ncat ncat
dnsperf dnsperf dnsperf
cluster runc runc
cluster nsenter util-linux
cluster /usr/lib/cni/bridge containernetworking-plugins
cluster gcc gcc
cluster /usr/include/stdio.h libc6-dev
cluster skopeo skopeo
image buildah buildah
image mmdebstrap mmdebstrap
image mount mount
image flock util-linux
image runc runc
'
GO_MIN_MINOR=26                 # test/controlplane/build.sh: k8s v1.36 needs Go >= 1.26
GO_RELEASE=1.26.8               # what the install hint downloads
LOCAL_GO=${EDGEMESH_LOCAL_GO:-/usr/local/go/bin/go}   # where build.sh looks when go is not in PATH
CP_BIN=${EDGEMESH_BIN:-$HOME/.cache/edgemesh/bin}
SBIN_DIRS=${EDGEMESH_SBIN_DIRS:-/usr/local/sbin /usr/sbin /sbin}   # installed but maybe not in a user's PATH
POLICY_RC_D=${EDGEMESH_POLICY_RC_D:-/usr/sbin/policy-rc.d}           # where invoke-rc.d looks (a test points it elsewhere)

fail() { echo "test prerequisites: $*" >&2; exit 1; }

groups=("$@"); [ "${#groups[@]}" -gt 0 ] || groups=(lab controlplane)
wanted() { local g; for g in "${groups[@]}"; do [ "$g" = "$1" ] && return 0; done; return 1; }
for g in "${groups[@]}"; do
  case $g in lab|controlplane|dnsperf|cluster|image) ;; *) fail "unknown group '$g' (lab, controlplane, dnsperf, cluster, image)" ;; esac
done

# Sets `missing` (commands) and `packages` (their packages, each once).
scan() {
  missing=(); packages=()
  local group cmd pkg p
  while read -r group cmd pkg; do
    [ -n "$group" ] && wanted "$group" || continue
    # a path (files that are no command in PATH, e.g. CNI plugins, headers) or a command
    if [[ $cmd == /* ]]; then [ -e "$cmd" ] && continue; else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    missing+=("$cmd")
    for p in "${packages[@]}"; do [ "$p" = "$pkg" ] && continue 2; done
    packages+=("$pkg")
  done <<< "$TOOLS"
}

# Go builds etcd/kube-apiserver/helm once (test/controlplane/build.sh); not needed once they are cached.
check_go() {
  [ -x "$CP_BIN/etcd" ] && [ -x "$CP_BIN/kube-apiserver" ] && [ -x "$CP_BIN/helm" ] && return 0
  local go arch version
  go=$(command -v go 2>/dev/null || true)
  [ -n "$go" ] || { [ -x "$LOCAL_GO" ] && go=$LOCAL_GO; }
  case ${HOSTTYPE:-x86_64} in aarch64|arm64) arch=arm64 ;; *) arch=amd64 ;; esac
  local hint="install it: curl -fsSL https://go.dev/dl/go$GO_RELEASE.linux-$arch.tar.gz | tar -C /usr/local -xz"
  [ -n "$go" ] || fail "Go >= 1.$GO_MIN_MINOR is needed once to build the control plane binaries into $CP_BIN (test/controlplane/build.sh) and neither 'go' in PATH nor $LOCAL_GO exists; $hint"
  version=$("$go" version 2>/dev/null || true)
  if [[ $version =~ go1\.([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -ge "$GO_MIN_MINOR" ]; then return 0; fi
  fail "Go >= 1.$GO_MIN_MINOR is needed once to build the control plane binaries (test/controlplane/build.sh), $go says '${version:-nothing}'; $hint (and put /usr/local/go/bin first in PATH)"
}

# Holds service starts during our apt install (see the top); release_services undoes it.
created_policy=
hold_services() {
  [ -e "$POLICY_RC_D" ] && return 0
  printf '#!/bin/sh\n# written by edgemesh test/prereqs.sh for its apt-get install, removed afterwards:\n# the packages it installs must not start their daemons (101 = action forbidden)\nexit 101\n' > "$POLICY_RC_D" \
    || fail "cannot write $POLICY_RC_D (it keeps installed daemons from starting)"
  created_policy=1
  /bin/chmod 755 "$POLICY_RC_D" || fail "cannot make $POLICY_RC_D executable"
}
release_services() {
  [ -n "$created_policy" ] || return 0
  created_policy=
  /bin/rm -f "$POLICY_RC_D"
}
trap release_services EXIT
trap 'release_services; exit 130' INT TERM HUP

install_cmd() { echo "apt-get update && apt-get install -y --no-install-recommends $*"; }

# Installed, but PATH lacks the sbin directories (the labs look tools up in PATH too).
off_path() {
  local cmd d
  for cmd in "${missing[@]}"; do
    for d in $SBIN_DIRS; do [ -x "$d/$cmd" ] && continue 2; done
    return 1
  done
}

scan
if [ "${#missing[@]}" -gt 0 ] && off_path; then
  fail "${missing[*]} installed but not in PATH; run: export PATH=\"\$PATH:${SBIN_DIRS// /:}\" (npm test needs root for its network labs)"
fi
if [ "${#missing[@]}" -gt 0 ]; then
  uid=$(id -u 2>/dev/null || echo unknown)
  have_apt=$(command -v apt-get 2>/dev/null || true)
  if [ -z "$have_apt" ]; then
    fail "missing ${missing[*]} and this machine has no apt-get; install the packages that provide them (Debian: ${packages[*]}), then run npm test as root again"
  fi
  if [ "$uid" != 0 ]; then
    fail "missing ${missing[*]}; as root run: $(install_cmd "${packages[*]}") (npm test needs root for its network labs)"
  fi
  echo "test prerequisites: installing ${packages[*]} (missing ${missing[*]})" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q </dev/null >&2 || fail "apt-get update failed; run: $(install_cmd "${packages[*]}")"
  hold_services
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${packages[@]}" </dev/null >&2 \
    || fail "apt-get install failed; run: $(install_cmd "${packages[*]}")"
  release_services
  for p in "${packages[@]}"; do
    if [ "$p" = openssh-server ] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable --quiet ssh.service ssh.socket </dev/null >/dev/null 2>&1 || true
      echo "test prerequisites: openssh-server installed for the labs; its ssh service stays disabled and stopped (the labs run their own sshd)" >&2
    fi
  done
  scan
  [ "${#missing[@]}" -eq 0 ] || fail "installed the packages but ${missing[*]} still not in PATH ($PATH)"
fi

if wanted controlplane; then check_go; fi
exit 0
