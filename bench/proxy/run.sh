#!/usr/bin/env bash
# bench/proxy: requests per second and p50/p99 latency on loopback for
#   1. a small fast upstream alone (nginx answering `return 200`),
#   2. nginx as a reverse proxy set up as an operator would (upstream keep-alive, the same
#      security headers, request ids, limit_req at a rate that never rejects),
#   3. Portcullis in the production profile without TLS, behind trusted_proxies 127.0.0.1/32,
#      with security headers, request ids and the event pipeline on,
# in one run with one load generator (wrk), and prints the ratios.
#
# Usage: bench/proxy/run.sh [duration_seconds=10] [connections=64]
# Installs nginx and wrk from Debian's packages if missing. Traffic stays on 127.0.0.1; every
# load run is bounded by its duration.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
THREADS=2
UPSTREAM_PORT=18101
NGINX_PORT=18102
PORTCULLIS_PORT=18103
PORTCULLIS_ADMIN=18104

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx wrk >/dev/null
fi
cargo build --release -q -p portcullis
BIN="$PWD/target/release/portcullis"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/upstream/nginx.pid" ] && kill "$(cat "$WORK/upstream/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/proxy/nginx.pid" ] && kill "$(cat "$WORK/proxy/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

nginx_conf() { # name, body of the http block
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1/body;
  proxy_temp_path $WORK/$1/proxy;
  fastcgi_temp_path $WORK/$1/fastcgi;
  uwsgi_temp_path $WORK/$1/uwsgi;
  scgi_temp_path $WORK/$1/scgi;
  server_tokens off;
  $2
}
CONF
}

nginx_conf upstream "
  server {
    listen 127.0.0.1:$UPSTREAM_PORT;
    keepalive_requests 1000000;
    location / { default_type text/plain; return 200 'ok'; }
  }"

nginx_conf proxy "
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

cat > "$WORK/portcullis.toml" <<CONF
profile = "production"
[server]
listen = "127.0.0.1:$PORTCULLIS_PORT"
admin_listen = "127.0.0.1:$PORTCULLIS_ADMIN"
trusted_proxies = ["127.0.0.1/32"]
data_dir = "$WORK/data"
[storage]
allow_sqlite_in_production = true
[[route]]
name = "app"
path = "/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
CONF
PORTCULLIS_LOG=warn "$BIN" serve -c "$WORK/portcullis.toml" > "$WORK/portcullis.out" 2> "$WORK/portcullis.err" &
PIDS+=($!)

for port in $UPSTREAM_PORT $NGINX_PORT $PORTCULLIS_PORT; do
  for _ in $(seq 1 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.2
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$port/" || { echo "port $port not answering" >&2; cat "$WORK/portcullis.err" >&2; exit 1; }
done

# Each target: a short warm-up, then the measured run. Prints "rps p50_ms p99_ms".
measure() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$1/bench" >/dev/null
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$1/bench" > "$WORK/wrk.$1"
  awk '
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    END { printf "%.0f %.3f %.3f\n", rps, ms(p50), ms(p99) }' "$WORK/wrk.$1"
}

read -r up_rps up_p50 up_p99 < <(measure $UPSTREAM_PORT)
read -r ng_rps ng_p50 ng_p99 < <(measure $NGINX_PORT)
read -r pc_rps pc_p50 pc_p99 < <(measure $PORTCULLIS_PORT)

echo "bench/proxy: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s on $(nproc) cores, $(date -u +%FT%TZ)"
printf '%-22s %10s %9s %9s\n' target req/s p50_ms p99_ms
printf '%-22s %10s %9s %9s\n' "upstream direct" "$up_rps" "$up_p50" "$up_p99"
printf '%-22s %10s %9s %9s\n' "nginx proxy" "$ng_rps" "$ng_p50" "$ng_p99"
printf '%-22s %10s %9s %9s\n' "portcullis" "$pc_rps" "$pc_p50" "$pc_p99"
awk -v pr="$pc_rps" -v nr="$ng_rps" -v pp="$pc_p99" -v np="$ng_p99" -v ur="$up_rps" 'BEGIN {
  printf "portcullis/nginx req/s: %.2fx (goal >= 1.0x)\n", pr / nr
  printf "portcullis/nginx p99:   %.2fx (goal <= 1.2x)\n", pp / np
  printf "nginx/upstream req/s:   %.2fx; portcullis/upstream req/s: %.2fx\n", nr / ur, pr / ur
}'
