#!/usr/bin/env bash
# Builds Ratline's container images without a Docker engine and caches them:
#   ghcr.io/ratline/operator:0.1.0  (worker-image/operator.Dockerfile)
#   ghcr.io/ratline/worker:0.1.0    (worker-image/Dockerfile)
#   ghcr.io/ratline/examples:0.1.0  (worker-image/examples.Dockerfile)
#   registry.k8s.io/pause:3.10      (the pod sandbox, from worker-image/pause)
# The Dockerfiles are the ones Docker users build; here buildah runs them
# (vfs storage, chroot isolation) on a Python base made from Debian packages by
# mmdebstrap when the upstream python:3.11-slim cannot be pulled. The machine's
# CA bundle and pip configuration are mounted into each build, so pip installs
# go through the same certificate authority as the host's.
#
#   ratline-e2e:local               (worker-image/e2e.Dockerfile: + the e2e test workflows)
#   ratline.local/postgres:15       (Debian's PostgreSQL for the chart's bundled database)
# Output: docker-archive tarballs in ~/.cache/ratline/images-<hash>/, where
# <hash> covers every input (Dockerfiles, package sources, examples, this
# script); each image is cached under its own content hash in
# ~/.cache/ratline/images/, so a change to examples/ rebuilds only the images
# built from them. Prints the set's directory on stdout.
#
# Usage: worker-image/build.sh [--import <containerd-socket>]
#   --import loads the images into that containerd's k8s.io namespace.
#   RATLINE_PYTHON_IMAGE=<ref> builds on that base instead (e.g. a pulled python:3.11-slim).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RATLINE_CACHE:-$HOME/.cache/ratline}"
SUITE="${RATLINE_DEBIAN_SUITE:-bookworm}"
BASE_PKGS="python3,python3-venv,python-is-python3,passwd,ca-certificates"
PAUSE_REF="registry.k8s.io/pause:3.10"
die() { echo "worker-image/build.sh: $*" >&2; exit 1; }
say() { echo "worker-image/build.sh: $*" >&2; }

import_sock=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --import) import_sock="${2:?--import needs a containerd socket}"; shift 2 ;;
    *) die "unknown argument '$1' (usage: build.sh [--import <containerd-socket>])" ;;
  esac
done

# name|parent|Dockerfile|build-arg naming the parent|inputs (paths hashed)
SPECS=(
  "worker|base|worker-image/Dockerfile|PYTHON_IMAGE|pyproject.toml README.md operator"
  "operator|base|worker-image/operator.Dockerfile|PYTHON_IMAGE|pyproject.toml README.md operator"
  "examples|worker|worker-image/examples.Dockerfile|WORKER_IMAGE|examples"
  "e2e|examples|worker-image/e2e.Dockerfile|EXAMPLES_IMAGE|tests/__init__.py tests/e2e/__init__.py tests/e2e/workflows tests/e2e/node_flows"
)
declare -A REF=(
  [worker]=ghcr.io/ratline/worker:0.1.0 [operator]=ghcr.io/ratline/operator:0.1.0
  [examples]=ghcr.io/ratline/examples:0.1.0 [e2e]=ratline-e2e:local [pause]=$PAUSE_REF
)

# The content hash of files (tracked or new, not ignored) under the given paths.
files_hash() {
  (
    cd "$REPO"
    git ls-files -co --exclude-standard -- "$@" 2>/dev/null \
      | grep -v -E '__pycache__|\.egg-info/' | LC_ALL=C sort | while read -r f; do
        [[ -f "$f" ]] && { echo "$f"; sha256sum < "$f"; }
      done
  ) | sha256sum | cut -c1-16
}

# Each image's hash covers its own inputs, its Dockerfile, its parent's hash and this script.
declare -A HASH
HASH[base]="$( { echo "$SUITE $BASE_PKGS"; } | sha256sum | cut -c1-16)"
# Bump RECIPE when this script changes what it puts into an image.
RECIPE=1
SELF="recipe-$RECIPE"
for spec in "${SPECS[@]}"; do
  IFS='|' read -r name parent dockerfile _ inputs <<<"$spec"
  # shellcheck disable=SC2086
  HASH[$name]="$(echo "${HASH[$parent]} $SELF $(files_hash $inputs "$dockerfile" "$dockerfile.dockerignore")" | sha256sum | cut -c1-16)"
done
HASH[pause]="$(echo "$SELF $(files_hash worker-image/pause)" | sha256sum | cut -c1-16)"
HASH[postgres]="$(echo "$SELF $SUITE $(files_hash worker-image/postgres-entrypoint.sh)" | sha256sum | cut -c1-16)"
REF[postgres]=ratline.local/postgres:15
IMAGES=(operator worker examples e2e pause postgres)
ALL="$(for i in "${IMAGES[@]}"; do echo "${HASH[$i]}"; done | sha256sum | cut -c1-16)"
OUT="$CACHE/images-$ALL"
STORE="$CACHE/images"   # one tarball per image and hash, shared by the sets above
tarball() { echo "$STORE/$1-${HASH[$1]}.tar"; }

build_missing() {
  for c in buildah mmdebstrap go; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' is missing: run tests/cluster/sysdeps.sh (and install Go for the pause image)"
  done
  [[ $(id -u) -eq 0 ]] || die "building images with buildah's chroot isolation needs root"
  local started=$SECONDS
  local work; work="$(mktemp -d /tmp/ratline-images.XXXXXX)"
  # A private buildah store per build: nothing shared with other builds or users.
  local B=(buildah --storage-driver vfs --root "$work/storage" --runroot "$work/run")
  mkdir -p "$STORE"

  # -- the Python base -----------------------------------------------------------
  local base="localhost/ratline/python:3.11-$SUITE"
  if [[ -n "${RATLINE_PYTHON_IMAGE:-}" ]]; then
    base="$RATLINE_PYTHON_IMAGE"
  else
    local base_tar="$STORE/base-${HASH[base]}.tar"
    if [[ ! -s "$base_tar" ]]; then
      say "building a Debian $SUITE Python base with mmdebstrap ($BASE_PKGS)"
      mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PKGS" "$SUITE" "$base_tar.tmp" \
        || die "mmdebstrap failed (does this machine reach Debian's package mirror?)"
      mv "$base_tar.tmp" "$base_tar"
    fi
  fi
  local base_loaded=0
  load_base() {
    [[ $base_loaded -eq 1 || -n "${RATLINE_PYTHON_IMAGE:-}" ]] && return 0
    local ctr; ctr="$("${B[@]}" from scratch)"
    "${B[@]}" add --quiet "$ctr" "$base_tar" / >/dev/null
    "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 --cmd python3 "$ctr"
    "${B[@]}" commit --quiet "$ctr" "$base" >/dev/null
    "${B[@]}" rm "$ctr" >/dev/null
    base_loaded=1
  }

  # -- the machine's CA bundle and pip configuration, mounted into RUN steps ----
  local vols=()
  [[ -d /etc/ssl/certs ]] && vols+=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
  local pipconf="$work/pip.conf"
  # /etc/pip.conf plus the PIP_* settings of this environment, as one config file.
  python3 - "$pipconf" <<'PY'
import configparser, os, sys
conf = configparser.ConfigParser()
conf.read("/etc/pip.conf")
if not conf.has_section("global"):
    conf.add_section("global")
for var in ("INDEX_URL", "EXTRA_INDEX_URL", "TRUSTED_HOST", "DEFAULT_TIMEOUT", "CERT"):
    value = os.environ.get("PIP_" + var)
    if value and not (var == "CERT" and not value.startswith("/etc/ssl/certs/")):
        conf.set("global", var.lower().replace("_", "-"), value)
with open(sys.argv[1], "w") as out:
    conf.write(out)
PY
  vols+=(-v "$pipconf:/etc/pip.conf:ro")
  local bud=("${B[@]}" bud --quiet --isolation chroot --layers=false "${vols[@]}")

  local -A present=()
  for spec in "${SPECS[@]}"; do
    IFS='|' read -r name parent dockerfile arg _ <<<"$spec"
    [[ -s "$(tarball "$name")" ]] && continue
    if [[ $parent == base ]]; then
      load_base; parent_ref="$base"
    else
      parent_ref="${REF[$parent]}"
      if [[ -z "${present[$parent]:-}" ]]; then
        "${B[@]}" pull --quiet "docker-archive:$(tarball "$parent")" >/dev/null
      fi
    fi
    say "building ${REF[$name]} ($dockerfile)"
    (cd "$REPO" && "${bud[@]}" --ignorefile "$dockerfile.dockerignore" \
       --build-arg "$arg=$parent_ref" -f "$dockerfile" -t "${REF[$name]}" . >/dev/null)
    "${B[@]}" push --quiet "${REF[$name]}" "docker-archive:$(tarball "$name").tmp:${REF[$name]}"
    mv "$(tarball "$name").tmp" "$(tarball "$name")"
    present[$name]=1
  done

  if [[ ! -s "$(tarball pause)" ]]; then
    say "building $PAUSE_REF (worker-image/pause)"
    (cd "$REPO/worker-image/pause" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false GO111MODULE=off \
       go build -trimpath -ldflags "-s -w" -o "$work/pause" main.go)
    local pctr; pctr="$("${B[@]}" from scratch)"
    "${B[@]}" copy --quiet "$pctr" "$work/pause" /pause >/dev/null
    "${B[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$pctr"
    "${B[@]}" commit --quiet "$pctr" "$PAUSE_REF" >/dev/null
    "${B[@]}" push --quiet "$PAUSE_REF" "docker-archive:$(tarball pause).tmp:$PAUSE_REF"
    mv "$(tarball pause).tmp" "$(tarball pause)"
  fi
  if [[ ! -s "$(tarball postgres)" ]]; then
    # The chart's bundled database (postgresql.enabled) where docker.io cannot be pulled:
    # Debian's PostgreSQL 15 as uid 70 (the chart's default, the alpine image's user).
    say "building ${REF[postgres]} (mmdebstrap + worker-image/postgres-entrypoint.sh)"
    mmdebstrap --quiet --format=tar --variant=minbase --include=postgresql-15 \
      --customize-hook='chroot "$1" sh -c "groupadd --system --gid 70 pgdata && useradd --system --uid 70 --gid 70 --home-dir /var/lib/postgresql --no-create-home --shell /bin/sh pgdata && rm -rf /var/lib/postgresql/15 /etc/postgresql/15/main && install -d -o 70 -g 70 -m 0775 /var/run/postgresql"' \
      "$SUITE" "$work/pg-rootfs.tar" || die "mmdebstrap (postgresql-15) failed"
    local gctr; gctr="$("${B[@]}" from scratch)"
    "${B[@]}" add --quiet "$gctr" "$work/pg-rootfs.tar" / >/dev/null
    "${B[@]}" copy --quiet "$gctr" "$REPO/worker-image/postgres-entrypoint.sh" /usr/local/bin/postgres-entrypoint >/dev/null
    "${B[@]}" config --env PATH=/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env PGDATA=/var/lib/postgresql/data/pgdata --env LANG=C.UTF-8 --user 70:70 --port 5432 \
      --entrypoint '["/usr/local/bin/postgres-entrypoint"]' "$gctr"
    "${B[@]}" commit --quiet "$gctr" "${REF[postgres]}" >/dev/null
    "${B[@]}" push --quiet "${REF[postgres]}" "docker-archive:$(tarball postgres).tmp:${REF[postgres]}"
    mv "$(tarball postgres).tmp" "$(tarball postgres)"
  fi
  # The vfs store holds full copies of every layer; unmount before removing it.
  "${B[@]}" rm --all >/dev/null 2>&1 || true
  "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$work"
  say "images built in $((SECONDS - started)) s"
}

built() { for i in "${IMAGES[@]}"; do [[ -s "$OUT/$i.tar" ]] || return 1; done; }

assemble() {
  build_missing
  rm -rf "$OUT.tmp"; mkdir -p "$OUT.tmp"
  for i in "${IMAGES[@]}"; do ln "$(tarball "$i")" "$OUT.tmp/$i.tar"; done
  rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/images.lock"
flock 9
built || assemble
flock -u 9

if [[ -n "$import_sock" ]]; then
  for i in "${IMAGES[@]}"; do
    ctr --address "$import_sock" -n k8s.io images import --no-unpack=false "$OUT/$i.tar" >/dev/null \
      || die "importing $OUT/$i.tar into containerd at $import_sock failed"
  done
fi
echo "$OUT"
