#!/usr/bin/env bash
# Build the Go test helpers under tests/tools/ (CGO off) into a cache keyed by
# the hash of their sources, so an unchanged helper is built once per machine:
#   ~/.cache/ratline/tools-<hash>/bin/<tool>
# Prints the bin directory on stdout. Usage: tests/tools/build.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${RATLINE_CACHE:-$HOME/.cache/ratline}"
hash="$(cd "$here" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
out="$cache/tools-$hash/bin"
tools=()
for mod in "$here"/*/go.mod; do tools+=("$(basename "$(dirname "$mod")")"); done
missing=0
for tool in "${tools[@]}"; do [[ -x "$out/$tool" ]] || missing=1; done
if [[ $missing == 1 ]]; then
  tmp="$(mktemp -d "$cache/tools-build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  for tool in "${tools[@]}"; do
    (cd "$here/$tool" && CGO_ENABLED=0 go build -trimpath -o "$tmp/$tool" .) >&2
  done
  mkdir -p "$out"
  for tool in "${tools[@]}"; do mv -f "$tmp/$tool" "$out/$tool"; done
fi
echo "$out"
