#!/usr/bin/env bash
# bench/login: what a login flood costs the rest of the gateway.
#   1. logins per second at the production parameters (Argon2id m=19456 KiB, t=2, p=1, the
#      hashing pool at its default size): 64 accounts logging in from their own addresses;
#   2. the proxy's p50/p99 on another route (a fast nginx upstream) without the flood, and
#      while the flood runs, and their ratio.
# Also the raw Argon2id rate of this machine (`portcullis` is not involved) as the ceiling.
#
# Usage: bench/login/run.sh [duration_seconds=10] [login_connections=32] [proxy_connections=16]
# Installs nginx and wrk from Debian's packages if missing. Traffic stays on 127.0.0.1; every
# load run is bounded by its duration.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${1:-10}"
LOGIN_CONNECTIONS="${2:-32}"
PROXY_CONNECTIONS="${3:-16}"
UPSTREAM_PORT=18201
PORTCULLIS_PORT=18203
PORTCULLIS_ADMIN=18204
PASSWORD="velvet tractor orbits quietly over the dunes"

source bench/common.sh

ok_upstream "$UPSTREAM_PORT"

cat > "$WORK/portcullis.toml" <<CONF
profile = "production"
[server]
listen = "127.0.0.1:$PORTCULLIS_PORT"
admin_listen = "127.0.0.1:$PORTCULLIS_ADMIN"
trusted_proxies = ["127.0.0.1/32"]
data_dir = "$WORK/data"
[storage]
allow_sqlite_in_production = true
[rate_limit]
# The flood comes from one address: this measures hashing and the proxy beside it, not the
# per-client limit (which would refuse it) or the intrusion detection (which would ban it).
client = "off"
[ids]
enabled = false
[identity]
public_url = "https://bench.test"
[[route]]
name = "app"
path = "/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
CONF
export PORTCULLIS_SERVER__SECRET_KEY="bench-server-key-0123456789abcdef0123456789"
# Many accounts, each logging in from its own address (through the trusted proxy's
# X-Forwarded-For), as a crowd of real users would: one account hammered from one address
# would be the brute-force defence's business, not a login rate.
USERS=64
for i in $(seq 0 $((USERS - 1))); do
  echo "$PASSWORD" | PORTCULLIS_LOG=error "$BIN" user -c "$WORK/portcullis.toml" add "bench$i@example.com" --password-stdin --verified >/dev/null
done
PORTCULLIS_LOG=error "$BIN" serve -c "$WORK/portcullis.toml" > "$WORK/portcullis.out" 2> "$WORK/portcullis.err" &
PIDS+=("$!")
for _ in $(seq 1 50); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORTCULLIS_PORT/" 2>/dev/null && break
  sleep 0.2
done

cat > "$WORK/login.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = "https://127.0.0.1"
counter = 0
request = function()
  counter = counter + 1
  local i = (counter * 7 + math.random(0, $USERS - 1)) % $USERS
  wrk.headers["X-Forwarded-For"] = string.format("10.1.%d.%d", i, math.random(1, 250))
  return wrk.format(nil, nil, nil, string.format('{"email":"bench%d@example.com","password":"$PASSWORD"}', i))
end
-- Each wrk thread has its own Lua state; only the summary reaches done().
done = function(summary, latency, requests)
  io.write(string.format("requests %d\nnon2xx %d\n", summary.requests, summary.errors.status))
end
LUA
one=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -H 'Origin: https://127.0.0.1' \
  -d "{\"email\":\"bench0@example.com\",\"password\":\"$PASSWORD\"}" "http://127.0.0.1:$PORTCULLIS_PORT/auth/api/login")
[ "$one" = 200 ] || { echo "a single login answered $one" >&2; cat "$WORK/portcullis.err" >&2; exit 1; }

ms() { awk '{ v = $1; if (v ~ /us$/) print v / 1000; else if (v ~ /ms$/) print v + 0; else if (v ~ /s$/) print v * 1000; else print v }'; }
proxy_run() { # writes wrk output for the proxied route to $1
  wrk -t1 -c"$PROXY_CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$PORTCULLIS_PORT/other" > "$1"
}
wrk -t1 -c"$PROXY_CONNECTIONS" -d2s "http://127.0.0.1:$PORTCULLIS_PORT/other" >/dev/null
proxy_run "$WORK/quiet"
wrk -t1 -c"$LOGIN_CONNECTIONS" -d"$((DURATION + 2))s" -s "$WORK/login.lua" "http://127.0.0.1:$PORTCULLIS_PORT/auth/api/login" > "$WORK/flood" &
FLOOD=$!
sleep 1
proxy_run "$WORK/busy"
wait "$FLOOD"

quiet_p50=$(awk '/^ +50%/ { print $2 }' "$WORK/quiet" | ms); quiet_p99=$(awk '/^ +99%/ { print $2 }' "$WORK/quiet" | ms)
busy_p50=$(awk '/^ +50%/ { print $2 }' "$WORK/busy" | ms); busy_p99=$(awk '/^ +99%/ { print $2 }' "$WORK/busy" | ms)
quiet_rps=$(awk '/Requests\/sec/ { print $2 }' "$WORK/quiet"); busy_rps=$(awk '/Requests\/sec/ { print $2 }' "$WORK/busy")
requests=$(awk '/^requests / { print $2 }' "$WORK/flood"); requests=${requests:-0}
refused=$(awk '/^non2xx / { print $2 }' "$WORK/flood"); refused=${refused:-0}
logins=$((requests - refused))
flood_seconds=$((DURATION + 2))

# The ceiling: Argon2id at these parameters on one core of this machine, in the reference C
# implementation (argon2-cffi, installed if missing).
ceiling="n/a"
python3 -c "import argon2" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check argon2-cffi >/dev/null 2>&1 || true
if python3 -c "import argon2" 2>/dev/null; then
  ceiling=$(python3 - <<'PY'
import time, argon2
h = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
start = time.perf_counter(); n = 0
while time.perf_counter() - start < 3:
    h.hash("velvet tractor orbits quietly over the dunes"); n += 1
print(f"{n / (time.perf_counter() - start):.1f}")
PY
)
fi

echo "bench/login: $(nproc) cores, Argon2id m=19456 t=2 p=1, $DURATION s, $(date -u +%FT%TZ)"
hash_threads=$(( $(nproc) / 2 )); [ "$hash_threads" -ge 1 ] || hash_threads=1
awk -v n="$logins" -v s="$flood_seconds" -v r="$refused" -v c="$ceiling" -v t="$hash_threads" -v u="$USERS" 'BEGIN {
  printf "logins/s: %.1f (%d in %d s over %d accounts, %d refused); hashing pool %d thread(s); one core hashes %s/s (argon2-cffi)\n", n / s, n, s, u, r, t, c }'
printf '%-22s %9s %8s %8s\n' "proxy route /other" req/s p50_ms p99_ms
printf '%-22s %9s %8s %8s\n' "without login flood" "$quiet_rps" "$quiet_p50" "$quiet_p99"
printf '%-22s %9s %8s %8s\n' "during login flood" "$busy_rps" "$busy_p50" "$busy_p99"
awk -v q="$quiet_p99" -v b="$busy_p99" 'BEGIN { printf "p99 during flood / without: %.2fx\n", b / q }'
