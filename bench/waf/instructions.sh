#!/usr/bin/env bash
# Instructions the WAF engine executes to parse and inspect one typical 4 KB form body and one
# 4 KB JSON body (the latency bench's), counted by callgrind over 20 warm inspections, and one of
# the benign-traffic test's small varied form and JSON requests (the mean over 200 of them). A count
# is exact and repeatable where a timing on a shared machine drifts by 10-20%, so it is how two
# builds of the engine are compared: `bash bench/waf/instructions.sh`, then again on the other
# build. Installs valgrind from Debian's packages if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v valgrind >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
fi
cargo build --release -q -p portcullis-waf --example inspect_bodies
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for kind in form json varied-form varied-json; do
  case $kind in varied-*) RUNS=200 ;; *) RUNS=20 ;; esac
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='inspect_bodies::measured' \
    --callgrind-out-file="$OUT/$kind" target/release/examples/inspect_bodies "$kind" "$RUNS" >/dev/null 2>&1
  total=$(callgrind_annotate "$OUT/$kind" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  printf '%-11s %9d instructions per inspection\n' "$kind" $((total / RUNS))
done
