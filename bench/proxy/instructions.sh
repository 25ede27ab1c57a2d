#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind, for Portcullis (bench/proxy's config)
# and for the bare hyper proxy beside it (the floor of the stack). A count does not drift with
# the load on a shared machine the way req/s does, so this is how two builds of the request
# path are compared: run it on each. Also prints the functions that cost the most per request,
# inclusive, so that a change can be aimed.
#
# Usage: bash bench/proxy/instructions.sh [top=40]
# With KEEP=DIR, the callgrind profiles are copied to DIR (for callgrind_annotate --tree=caller).
# With BIN=FILE, that Portcullis binary is counted instead of this checkout's release build.
# Each target runs under callgrind; wrk drives it on 127.0.0.1 for 3 s of warm-up and then 10 s
# with instrumentation on, and the count is divided by the requests wrk completed. Installs
# valgrind, nginx and wrk from Debian's packages if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOP="${1:-40}"
UPSTREAM_PORT=18111
PORTCULLIS_PORT=18113
FLOOR_PORT=18115
if ! command -v valgrind >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
fi
source bench/common.sh
source bench/proxy/conf.sh
cargo build --release -q --manifest-path bench/proxy/floor/Cargo.toml --target-dir target/bench-floor

ok_upstream "$UPSTREAM_PORT"
portcullis_conf "$WORK/portcullis.toml" "$PORTCULLIS_PORT" $((PORTCULLIS_PORT + 1)) "$UPSTREAM_PORT" "$WORK/data"

# count NAME PORT COMMAND...: runs COMMAND under callgrind and prints its instructions per request.
count() {
  local name=$1 port=$2
  shift 2
  PORTCULLIS_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/$name.cg" "$@" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.5
  done
  wrk -t1 -c8 -d3s "http://127.0.0.1:$port/bench" > /dev/null
  callgrind_control -i on "$pid" > /dev/null
  local requests
  requests=$(wrk -t1 -c8 -d10s "http://127.0.0.1:$port/bench" | awk '/ requests in / { print $1 }')
  callgrind_control -d "$pid" > /dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  local file
  file=$(ls -t "$WORK/$name".cg.* | head -1)
  if [ -n "${KEEP:-}" ]; then cp "$file" "$KEEP/$name.cg"; fi
  callgrind_annotate --inclusive=yes "$file" 2>/dev/null > "$WORK/$name.annotated"
  local total
  total=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' "$WORK/$name.annotated")
  printf '%-18s %8d instructions per request (%d requests)\n' "$name" $((total / requests)) "$requests"
  echo "$requests" > "$WORK/$name.requests"
}

count portcullis "$PORTCULLIS_PORT" "$BIN" serve -c "$WORK/portcullis.toml"
count floor "$FLOOR_PORT" target/bench-floor/release/bare-hyper-proxy "127.0.0.1:$FLOOR_PORT" "http://127.0.0.1:$UPSTREAM_PORT"

echo
echo "portcullis, inclusive instructions per request of its costliest functions:"
awk -v n="$(cat "$WORK/portcullis.requests")" -v top="$TOP" '
  /^-+$/ { rule++ ; next }
  rule >= 4 && $2 ~ /^\(/ && shown < top {
    count = $1; gsub(",", "", count)
    line = $0; sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, "", line); sub(/ \[.*$/, "", line); sub(/^\?\?\?:/, "", line)
    printf "%8d  %s\n", count / n, substr(line, 1, 150); shown++
  }' "$WORK/portcullis.annotated"
