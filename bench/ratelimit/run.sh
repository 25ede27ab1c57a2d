#!/usr/bin/env bash
# The rate limiter's cost: ns a check in process, and a check's round trip on Redis beside the
# seeds' fixed window (INCR + EXPIRE) on the same Redis, in one run. Bounded: ~10 s of load.
# Usage: bench/ratelimit/run.sh [redis://127.0.0.1:6379]
set -euo pipefail
cd "$(dirname "$0")/../.."
url="${1:-${PORTCULLIS_TEST_REDIS_URL:-redis://127.0.0.1:6379}}"
cargo run --release -q -p portcullis-state --example rate_bench -- "$url"
