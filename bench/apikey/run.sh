#!/usr/bin/env bash
# What API-key authentication costs on the request path, beside nginx doing the same: one
# Portcullis (production profile) with the same upstream behind an open route and a route that
# needs an API key with a scope; one nginx proxy with an open location and one that compares
# X-API-Key with a fixed key (the most nginx can do alone). Runs alternate with wrk, in ABBA
# order, so the machine's drift hits all alike; prints each round, then keyed/open for each proxy. Also runs
# the verification micro-benchmark (one API key or session check on a cache hit).
# Bounded: ROUNDS x 4 runs of DURATION seconds.
# Usage: bench/apikey/run.sh [duration_seconds=5] [rounds=3] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-5}"
ROUNDS="${2:-3}"
CONNECTIONS="${3:-64}"
UPSTREAM_PORT=18301
PORTCULLIS_PORT=18302
NGINX_PORT=18303
source bench/common.sh

cargo run --release -q -p portcullis-identity --example verify_bench

ok_upstream "$UPSTREAM_PORT"

cat > "$WORK/portcullis.toml" <<CONF
profile = "production"
[server]
listen = "127.0.0.1:$PORTCULLIS_PORT"
admin_listen = "127.0.0.1:$((PORTCULLIS_PORT + 10))"
trusted_proxies = ["127.0.0.1/32"]
data_dir = "$WORK/data"
[storage]
allow_sqlite_in_production = true
[rate_limit]
client = "off"
[[route]]
name = "open"
path = "/open"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
[[route]]
name = "keyed"
path = "/keyed"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
auth = "api_key"
scopes = ["customers:read"]
CONF
export PORTCULLIS_SERVER__SECRET_KEY="bench-only server key, not a secret anywhere"
KEY=$("$BIN" apikey -c "$WORK/portcullis.toml" create --name bench --scope customers:read --json \
  | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
PORTCULLIS_LOG=warn "$BIN" serve -c "$WORK/portcullis.toml" > "$WORK/portcullis.out" 2>&1 &
PIDS+=("$!")

WORKERS=$(($(nproc) > 1 ? $(nproc) - 1 : 1))
nginx_conf proxy "$WORKERS" "
  upstream app { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    proxy_http_version 1.1;
    proxy_set_header Connection '';
    location /open { proxy_pass http://app; }
    location /keyed {
      if (\$http_x_api_key != '$KEY') { return 401; }
      proxy_pass http://app;
    }
  }"
nginx -c "$WORK/proxy/nginx.conf"
for port in $PORTCULLIS_PORT $NGINX_PORT; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/open" && break; sleep 0.1; done
done
status=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $KEY" "http://127.0.0.1:$PORTCULLIS_PORT/keyed/x")
[ "$status" = 200 ] || { echo "keyed route answered $status" >&2; exit 1; }

declare -A total
for run in portcullis-open portcullis-keyed nginx-open nginx-keyed; do total[$run]=0; done
for round in $(seq "$ROUNDS"); do
  # ABBA: every other round runs keyed first, so a drift of the machine within a round falls on
  # both sides alike.
  order="portcullis-open portcullis-keyed nginx-open nginx-keyed"
  (( round % 2 == 0 )) && order="portcullis-keyed portcullis-open nginx-keyed nginx-open"
  for run in $order; do
    port=$([[ $run == portcullis-* ]] && echo $PORTCULLIS_PORT || echo $NGINX_PORT)
    path=$([[ $run == *-keyed ]] && echo /keyed/x || echo /open/x)
    rps=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -H "X-API-Key: $KEY" "http://127.0.0.1:$port$path" \
      | awk '/Requests\/sec/ {print $2}')
    echo "round $round: $run $rps req/s"
    total[$run]=$(awk -v a="${total[$run]}" -v b="$rps" 'BEGIN { print a + b }')
  done
done
ratio() { awk -v a="${total[$1]}" -v b="${total[$2]}" 'BEGIN { printf "%.3f", a / b }'; }
echo "portcullis keyed/open req/s: $(ratio portcullis-keyed portcullis-open)"
echo "nginx keyed/open req/s:      $(ratio nginx-keyed nginx-open)"
echo "keyed portcullis/nginx:      $(ratio portcullis-keyed nginx-keyed)"
