#!/usr/bin/env bash
# What the per-client rate limit costs on the request path: two Portcullis processes in the
# production profile in front of one nginx `return 200`, one with a per-client limit that never
# rejects (as nginx's limit_req in bench/proxy), one with the limit off, measured alternately
# with wrk so that the machine's drift hits both alike; prints each round and the ratio of the
# means. Bounded: ROUNDS x 2 runs of DURATION seconds.
# Usage: bench/ratelimit/path.sh [duration_seconds=5] [rounds=4] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-5}"
ROUNDS="${2:-4}"
CONNECTIONS="${3:-64}"
UPSTREAM_PORT=18201
source bench/common.sh

ok_upstream "$UPSTREAM_PORT"

start() { # name, port, [rate_limit] body
  cat > "$WORK/$1.toml" <<CONF
profile = "production"
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$(($2 + 10))"
trusted_proxies = ["127.0.0.1/32"]
data_dir = "$WORK/data-$1"
[storage]
allow_sqlite_in_production = true
[rate_limit]
$3
[[route]]
name = "app"
path = "/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
CONF
  PORTCULLIS_LOG=warn "$BIN" serve -c "$WORK/$1.toml" > "$WORK/$1.out" 2>&1 &
  PIDS+=("$!")
}
start limited 18202 $'client = "1000000/s"\nclient_burst = 1000000'
start unlimited 18203 'client = "off"'
for port in 18202 18203; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

declare -A total=([limited]=0 [unlimited]=0)
for round in $(seq "$ROUNDS"); do
  for name in limited unlimited; do
    port=$([ "$name" = limited ] && echo 18202 || echo 18203)
    rps=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port/x" | awk '/Requests\/sec/ {print $2}')
    echo "round $round: $name $rps req/s"
    total[$name]=$(awk -v a="${total[$name]}" -v b="$rps" 'BEGIN { print a + b }')
  done
done
awk -v a="${total[limited]}" -v b="${total[unlimited]}" -v n="$ROUNDS" \
  'BEGIN { printf "limited/unlimited req/s (means of %d rounds): %.3f\n", n, a / b }'
