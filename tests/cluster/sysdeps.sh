#!/usr/bin/env bash
# Installs the Debian packages the test harness needs when they are missing:
# PostgreSQL server binaries (initdb, postgres), chromium + chromedriver (the
# web UI browser tests) and, for the real node,
# containerd, runc, the CNI plugins, iptables, and mmdebstrap + buildah to
# build images without a Docker engine. Needs root or sudo to install; the
# node itself needs root and user/mount/network namespaces (checked at the end).
set -euo pipefail
die() { echo "sysdeps.sh: $*" >&2; exit 1; }
have_pg() {
  command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
have_cmd() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }
missing=()
have_pg || missing+=(postgresql)
have_cmd containerd || missing+=(containerd)
have_cmd runc || missing+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
have_cmd iptables || missing+=(iptables)
have_cmd mmdebstrap || missing+=(mmdebstrap)
have_cmd buildah || missing+=(buildah)
have_cmd conntrack || missing+=(conntrack)
# The web UI browser tests (tests/e2e/test_ui.py): Debian's chromium and chromedriver.
have_cmd chromium || missing+=(chromium)
have_cmd chromedriver || missing+=(chromium-driver)
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "sysdeps.sh: installing Debian packages: ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install ${missing[*]} (apt-get install ...) and run again"
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # containerd's Debian package would start a system daemon; the harness runs
  # its own per cluster, so policy-rc.d keeps the package from starting one.
  pol=/usr/sbin/policy-rc.d
  made_pol=0
  if [[ ! -e $pol ]]; then printf '#!/bin/sh\nexit 101\n' | $SUDO tee $pol >/dev/null; $SUDO chmod +x $pol; made_pol=1; fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ $made_pol -eq 1 ]] && $SUDO rm -f $pol
  # Debian starts a system Postgres cluster on install; the harness runs its own.
  $SUDO service postgresql stop >/dev/null 2>&1 || true
fi
have_pg || die "PostgreSQL install did not provide initdb"
# The real node: containers need root, and user + network + mount namespaces.
why=""
if [[ $(id -u) -ne 0 ]]; then why="the node's kubelet and containerd must run as root (uid $(id -u) here)";
elif ! unshare --net --mount --pid --fork true 2>/dev/null; then why="this machine cannot create network/mount/pid namespaces (unshare failed)";
elif [[ ! -d /sys/fs/cgroup/memory && ! -f /sys/fs/cgroup/cgroup.controllers ]]; then why="no memory cgroup controller is mounted";
fi
if [[ -n $why ]]; then
  echo "sysdeps.sh: WARNING: this machine cannot run containers: $why. The real node (make demo, tests/e2e/test_real_node*.py) will not start; the process kubelet still works." >&2
fi
exit 0
