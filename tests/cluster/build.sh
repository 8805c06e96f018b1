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

build_kubernetes() {
  local dest="$CACHE/kubernetes-$K8S_VERSION/bin"
  if [[ -x "$dest/kube-apiserver" && -x "$dest/kube-controller-manager" && -x "$dest/kubectl" ]]; then
    return 0
  fi
  echo "build.sh: building kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl); the first build takes a while" >&2
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
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    go mod tidy -e >/dev/null 2>&1 || true
    local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local ld=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
      ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    mkdir -p "$dest.tmp"
    go build -trimpath -ldflags "-s -w $ld" -o "$dest.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl
  )
  rm -rf "$dest"; mv "$dest.tmp" "$dest"; rm -rf "$work"
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
