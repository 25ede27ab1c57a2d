#!/usr/bin/env bash
# Runs the WAF's fuzz targets (crates/waf/fuzz: decode, bodies, detectors) with cargo-fuzz,
# each for SECONDS (default 60). cargo-fuzz needs nightly flags; on the stable toolchain this
# machine has, RUSTC_BOOTSTRAP=1 enables them, and the sanitizer is off (the crate has no
# `unsafe`, so libFuzzer's coverage and panics are what matter). Installs cargo-fuzz if missing.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../crates/waf"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(decode bodies detectors)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
  echo "== $target"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --sanitizer none -- \
    -max_total_time="$seconds" -max_len=4096 2>&1 | grep -E "^Done|panicked|SUMMARY|artifact" || true
done
