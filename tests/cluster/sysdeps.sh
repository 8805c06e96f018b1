#!/usr/bin/env bash
# Installs the Debian packages the test harness needs when they are missing:
# PostgreSQL server binaries (initdb, postgres). Needs root or sudo.
set -euo pipefail
# --- web UI browser tests (tests/e2e/test_ui.py): Debian's chromium and chromedriver ---
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "sysdeps.sh: installing Debian's chromium and chromium-driver (web UI browser tests)" >&2
  UI_SUDO=""; [[ $(id -u) -ne 0 ]] && UI_SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $UI_SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $UI_SUDO apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null
fi
# --- end web UI block ---
have_pg() {
  command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if have_pg; then exit 0; fi
echo "sysdeps.sh: PostgreSQL server binaries are missing; installing Debian's 'postgresql' package" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "sysdeps.sh: not root and no sudo: install PostgreSQL (apt-get install postgresql) and run again" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# Debian starts a system cluster on install; the harness runs its own private ones.
$SUDO pg_ctlcluster --help >/dev/null 2>&1 && $SUDO service postgresql stop >/dev/null 2>&1 || true
have_pg || { echo "sysdeps.sh: PostgreSQL install did not provide initdb" >&2; exit 1; }
