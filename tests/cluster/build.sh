#!/usr/bin/env bash
# Builds the local control plane's binaries from their published Go modules
# (the only source this project's machines can reach) and caches each one
# under ~/.cache/ratline/<tool>-<version>/bin. Idempotent: a cached binary is
# reused. Usage: tests/cluster/build.sh [kubernetes|etcd|helm ...]
set -euo pipefail

K8S_VERSION="${RATLINE_K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${RATLINE_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${RATLINE_HELM_VERSION:-v3.21.4}"
CACHE="${RATLINE_CACHE:-$HOME/.cache/ratline}"

die() { echo "build.sh: $*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || die "Go is not installed (needed to build kube-apiserver, etcd and helm). Install Go >= 1.24 (https://go.dev/doc/install or 'apt-get install golang') and run again."

export GOFLAGS="-buildvcs=false -mod=mod"
export CGO_ENABLED=0

# The control plane's commands and the real node's (tests/cluster/node.py).
K8S_CMDS=(kube-apiserver kube-controller-manager kubectl kubelet kube-proxy kube-scheduler)

build_kubernetes() {
  local dest="$CACHE/kubernetes-$K8S_VERSION/bin"
  local missing=() cmd
  for cmd in "${K8S_CMDS[@]}"; do [[ -x "$dest/$cmd" ]] || missing+=("$cmd"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "build.sh: building kubernetes $K8S_VERSION (${missing[*]}); the first build takes a while" >&2
  local work; work="$(mktemp -d)"
  local minor="${K8S_VERSION#v1.}"   # 35.4 -> staging modules are v0.35.4
  (
    cd "$work"
    go mod init ratline.local/k8sbuild >/dev/null 2>&1
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    # Each staging module is required at v0.0.0 and replaced by a local path
    # upstream; point it at its published release instead.
    local staging
    staging="$(python3 - "$gomod" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
print("\n".join(sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) v0\.0\.0\s*$", text, re.M)))))
PY
)"
    {
      echo "module ratline.local/k8sbuild"
      echo
      echo "go 1.24"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      for m in $staging; do echo "	$m => $m v0.$minor"; done
      echo ")"
    } > go.mod
    {
      printf '//go:build tools\n\npackage tools\n\nimport (\n'
      for cmd in "${missing[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
      printf ')\n'
    } > tools.go
    go mod tidy -e >/dev/null 2>&1 || true
    local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local ld=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
      ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    local pkgs=()
    for cmd in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
    mkdir -p out
    go build -trimpath -ldflags "-s -w $ld" -o out/ "${pkgs[@]}"
  )
  # Each binary lands whole or not at all: a cached one is never half written.
  mkdir -p "$dest"
  for cmd in "${missing[@]}"; do mv "$work/out/$cmd" "$dest/$cmd.tmp" && mv "$dest/$cmd.tmp" "$dest/$cmd"; done
  rm -rf "$work"
}

build_etcd() {
  local dest="$CACHE/etcd-$ETCD_VERSION/bin"
  [[ -x "$dest/etcd" ]] && return 0
  echo "build.sh: building etcd $ETCD_VERSION" >&2
  local work; work="$(mktemp -d)"
  (
    cd "$work"
    cat > go.mod <<MOD
module ratline.local/etcdbuild

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
    cat > main.go <<'GO'
// Command etcd runs the published etcd server module as a binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go mod tidy >/dev/null
    mkdir -p "$dest.tmp"
    go build -trimpath -ldflags "-s -w" -o "$dest.tmp/etcd" .
  )
  rm -rf "$dest"; mv "$dest.tmp" "$dest"; rm -rf "$work"
}

build_helm() {
  local dest="$CACHE/helm-$HELM_VERSION/bin"
  [[ -x "$dest/helm" ]] && return 0
  echo "build.sh: building helm $HELM_VERSION" >&2
  mkdir -p "$dest.tmp"
  GOBIN="$dest.tmp" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(etcd helm kubernetes)
for t in "${targets[@]}"; do
  case "$t" in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    paths)
      echo "KUBE_BIN=$CACHE/kubernetes-$K8S_VERSION/bin"
      echo "ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin"
      echo "HELM_BIN=$CACHE/helm-$HELM_VERSION/bin" ;;
    *) die "unknown target '$t' (kubernetes, etcd, helm, paths)" ;;
  esac
done
