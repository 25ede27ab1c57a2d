#!/usr/bin/env bash
# bench/proxy: requests per second and p50/p99 latency on loopback for
#   1. a small fast upstream alone (nginx answering `return 200`),
#   2. nginx as a reverse proxy set up as an operator would (upstream keep-alive, the same
#      security headers, request ids, limit_req at a rate that never rejects),
#   3. Portcullis in the production profile without TLS, behind trusted_proxies 127.0.0.1/32,
#      with security headers, request ids, the event pipeline, the IP decisions and a per-client
#      rate limit that never rejects (as nginx's limit_req above) on,
#   4. a bare hyper proxy (bench/proxy/floor: hyper-util's pooled client on one current-thread
#      runtime, as one Portcullis worker, and nothing else): the floor of this stack, so that
#      Portcullis over it is what Portcullis' own stages cost,
# in one run with one load generator (wrk), and prints the ratios.
#
# Usage: [WORKERS=N] [CLIENT_LIMIT=off] [BASELINE=path/to/portcullis] [BIN=path/to/portcullis] bench/proxy/run.sh [duration_seconds=10] [connections=64] [rounds=3]
# BIN=FILE measures that binary as Portcullis instead of building this checkout's release one.
# BASELINE=FILE also measures another Portcullis binary (an earlier commit's build) with the same
# config, in the same rounds, and prints this build against it: on a shared 2-core machine the
# rates drift by 10-20% from run to run, so a change is judged against a baseline measured
# alongside it, not against last week's figures.
# CLIENT_LIMIT=off runs Portcullis without its per-client rate limit, to see what the limiter
# costs on the path (nginx keeps its limit_req).
# Without WORKERS each proxy runs as its operator would leave it: nginx with
# `worker_processes auto` (one per CPU), Portcullis with its default server.workers (CPUs - 1).
# WORKERS=N gives both the same N: nginx's worker_processes and Portcullis's server.workers.
# The three targets are measured in turn, `rounds` times, and each figure is the median of its
# rounds: on a shared 2-core machine one run of nginx alone varies by a third.
# Installs nginx and wrk from Debian's packages if missing. Traffic stays on 127.0.0.1; every
# load run is bounded by its duration.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
ROUNDS="${3:-3}"
WORKERS="${WORKERS:-}"
CLIENT_LIMIT="${CLIENT_LIMIT:-1000000/s}"
THREADS=2
UPSTREAM_PORT=18101
NGINX_PORT=18102
PORTCULLIS_PORT=18103
PORTCULLIS_ADMIN=18104
FLOOR_PORT=18105
BASELINE_PORT=18106
BASELINE="${BASELINE:-}"

source bench/common.sh
source bench/proxy/conf.sh


nginx_conf upstream auto "
  server {
    listen 127.0.0.1:$UPSTREAM_PORT;
    keepalive_requests 1000000;
    location / { default_type text/plain; return 200 'ok'; }
  }"

nginx_conf proxy "${WORKERS:-auto}" "
  limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000000r/s;
  upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    location / {
      limit_req zone=perip burst=1000000 nodelay;
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Request-Id \$request_id;
      proxy_hide_header X-Powered-By;
      add_header X-Request-Id \$request_id always;
      add_header X-Content-Type-Options nosniff always;
      add_header X-Frame-Options DENY always;
      add_header X-XSS-Protection 0 always;
      add_header Referrer-Policy strict-origin-when-cross-origin always;
      add_header Permissions-Policy 'camera=(), microphone=(), geolocation=()' always;
      add_header Cross-Origin-Opener-Policy same-origin always;
      add_header Strict-Transport-Security 'max-age=63072000; includeSubDomains' always;
    }
  }"

nginx -c "$WORK/upstream/nginx.conf"
nginx -c "$WORK/proxy/nginx.conf"

portcullis_conf "$WORK/portcullis.toml" "$PORTCULLIS_PORT" "$PORTCULLIS_ADMIN" "$UPSTREAM_PORT" "$WORK/data"
PORTCULLIS_LOG=warn "$BIN" serve -c "$WORK/portcullis.toml" > "$WORK/portcullis.out" 2> "$WORK/portcullis.err" &
PORTCULLIS_PID=$!
PIDS+=("$PORTCULLIS_PID")

cargo build --release -q --manifest-path bench/proxy/floor/Cargo.toml --target-dir target/bench-floor
target/bench-floor/release/bare-hyper-proxy "127.0.0.1:$FLOOR_PORT" "http://127.0.0.1:$UPSTREAM_PORT" &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")

TARGETS="$UPSTREAM_PORT $NGINX_PORT $PORTCULLIS_PORT $FLOOR_PORT"
if [ -n "$BASELINE" ]; then
  mkdir -p "$WORK/baseline-data"
  sed -e "s/:$PORTCULLIS_PORT\"/:$BASELINE_PORT\"/" -e "s/:$PORTCULLIS_ADMIN\"/:$((BASELINE_PORT + 1))\"/" \
    -e "s|^data_dir = .*|data_dir = \"$WORK/baseline-data\"|" "$WORK/portcullis.toml" > "$WORK/baseline.toml"
  PORTCULLIS_LOG=warn "$BASELINE" serve -c "$WORK/baseline.toml" > "$WORK/baseline.out" 2> "$WORK/baseline.err" &
  BASELINE_PID=$!
  PIDS+=("$BASELINE_PID")
  TARGETS="$TARGETS $BASELINE_PORT"
fi

for port in $TARGETS; do
  for _ in $(seq 1 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.2
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$port/" || { echo "port $port not answering" >&2; cat "$WORK/portcullis.err" >&2; exit 1; }
done

# CPU time (ticks of 1/CLK_TCK s) used so far by the processes in $@, all threads included:
# "user system".
cpu_ticks() { for pid in "$@"; do awk '{ print $14, $15 }' "/proc/$pid/stat"; done | awk '{ u += $1; s += $2 } END { print u + 0, s + 0 }'; }
# The processes serving a port: the nginx master and its workers, or Portcullis.
pids_of() {
  case "$1" in
    "$UPSTREAM_PORT") echo "$(cat "$WORK/upstream/nginx.pid") $(pgrep -P "$(cat "$WORK/upstream/nginx.pid")" | tr '\n' ' ')" ;;
    "$NGINX_PORT") echo "$(cat "$WORK/proxy/nginx.pid") $(pgrep -P "$(cat "$WORK/proxy/nginx.pid")" | tr '\n' ' ')" ;;
    "$PORTCULLIS_PORT") echo "$PORTCULLIS_PID" ;;
    "$FLOOR_PORT") echo "$FLOOR_PID" ;;
    "$BASELINE_PORT") echo "$BASELINE_PID" ;;
  esac
}
CLK_TCK=$(getconf CLK_TCK)

# Each target: a short warm-up, then the measured run. Prints "rps p50_ms p99_ms
# cpu_us_per_request user_us_per_request": the CPU the target itself spent per request, which
# the load generator and the other processes sharing the cores disturb far less than the rate
# does, and its part in user space (the rest is the kernel's: on loopback, mostly the TCP
# stack, which every proxy here pays alike for its two reads and two writes a request).
measure() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$1/bench" >/dev/null
  local pids before after
  pids=$(pids_of "$1")
  # shellcheck disable=SC2086
  before=$(cpu_ticks $pids)
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$1/bench" > "$WORK/wrk.$1"
  # shellcheck disable=SC2086
  after=$(cpu_ticks $pids)
  awk -v ticks=$(( ${after% *} + ${after#* } - ${before% *} - ${before#* } )) -v user=$(( ${after% *} - ${before% *} )) -v hz="$CLK_TCK" '
    /Requests\/sec/ { rps = $2 }
    / requests in / { n = $1 }
    /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    END { printf "%.0f %.3f %.3f %.1f %.1f\n", rps, ms(p50), ms(p99), ticks / hz * 1e6 / n, user / hz * 1e6 / n }' "$WORK/wrk.$1"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

for round in $(seq 1 "$ROUNDS"); do
  for port in $TARGETS; do
    echo "$(measure $port)" >> "$WORK/results.$port"
  done
  echo "round $round of $ROUNDS done" >&2
done

col() { awk -v c="$2" '{ print $c }' "$WORK/results.$1" | median; }
up_rps=$(col $UPSTREAM_PORT 1)
ng_rps=$(col $NGINX_PORT 1); ng_p99=$(col $NGINX_PORT 3); ng_cpu=$(col $NGINX_PORT 4); ng_user=$(col $NGINX_PORT 5)
pc_rps=$(col $PORTCULLIS_PORT 1); pc_p99=$(col $PORTCULLIS_PORT 3); pc_cpu=$(col $PORTCULLIS_PORT 4); pc_user=$(col $PORTCULLIS_PORT 5)
fl_rps=$(col $FLOOR_PORT 1); fl_cpu=$(col $FLOOR_PORT 4)

# row LABEL PORT: the medians of a target and its rate in each round.
row() {
  printf '%-18s %9s %8s %8s %12s %12s   %s\n' "$1" "$(col "$2" 1)" "$(col "$2" 2)" "$(col "$2" 3)" "$(col "$2" 4)" \
    "$(col "$2" 5)" "$(cut -d' ' -f1 "$WORK/results.$2" | tr '\n' ' ')"
}
echo "bench/proxy: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, median of $ROUNDS rounds, $(nproc) cores, ${WORKERS:-default} worker(s) per proxy, $(date -u +%FT%TZ)"
printf '%-18s %9s %8s %8s %12s %12s   %s\n' target req/s p50_ms p99_ms cpu_us/req user_us/req "req/s of each round"
row "upstream direct" $UPSTREAM_PORT
row "nginx proxy" $NGINX_PORT
row "portcullis" $PORTCULLIS_PORT
row "bare hyper proxy" $FLOOR_PORT
awk -v pr="$pc_rps" -v nr="$ng_rps" -v pp="$pc_p99" -v np="$ng_p99" -v ur="$up_rps" -v pc="$pc_cpu" -v nc="$ng_cpu" -v fr="$fl_rps" -v fc="$fl_cpu" -v pu="$pc_user" -v nu="$ng_user" 'BEGIN {
  printf "portcullis/nginx cpu per request: %.2fx (lower is better); in user space %.2fx, in the kernel %.2fx\n", pc / nc, pu / nu, (pc - pu) / (nc - nu)
  printf "portcullis/nginx req/s: %.2fx (goal >= 1.0x)\n", pr / nr
  printf "portcullis/nginx p99:   %.2fx (goal <= 1.2x)\n", pp / np
  printf "nginx/upstream req/s:   %.2fx; portcullis/upstream req/s: %.2fx\n", nr / ur, pr / ur
  printf "bare hyper/nginx req/s: %.2fx; portcullis/bare hyper req/s: %.2fx, cpu per request %.2fx\n", fr / nr, pr / fr, pc / fc
  # A proxy whose workers are all busy is held by its own CPU, not by the machine.
  printf "cores kept busy: nginx %.2f, portcullis %.2f, bare hyper %.2f (one worker)\n", nr * nc / 1e6, pr * pc / 1e6, fr * fc / 1e6
}'
if [ -n "$BASELINE" ]; then
  bl_rps=$(col $BASELINE_PORT 1); bl_p99=$(col $BASELINE_PORT 3); bl_cpu=$(col $BASELINE_PORT 4)
  row "baseline" $BASELINE_PORT
  awk -v pr="$pc_rps" -v br="$bl_rps" -v pc="$pc_cpu" -v bc="$bl_cpu" -v pp="$pc_p99" -v bp="$bl_p99" 'BEGIN {
    printf "portcullis/baseline req/s: %.3fx, cpu per request %.3fx, p99 %.2fx\n", pr / br, pc / bc, pp / bp
  }'
fi
