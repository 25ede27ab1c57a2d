#!/usr/bin/env bash
# bench/waf: Portcullis' WAF beside Apache with mod_security2 and Debian's OWASP Core Rule Set
# at paranoia 1 and 2, on loopback, in one run:
#   - detection per CRS family, whole SQLi/XSS attacks, negatives and clean negatives flagged
#     (the CRS regression corpus as requests, bench/waf/replay.py);
#   - libinjection's attack samples and false positives as a query argument, and English
#     sentences from /usr/share/doc as a form field;
#   - requests per second and latency (wrk) for a GET with a query and a 1 KB form POST.
#
# Usage: bench/waf/run.sh [duration_seconds=10] [connections=32]
# Portcullis runs in the production profile (block mode, paranoia 1) in front of an nginx
# upstream answering `return 200`; Apache answers from a static file itself, which spares it the
# proxy hop Portcullis pays. Installs nginx, wrk, apache2, mod_security2 and modsecurity-crs from
# Debian's packages if missing. Traffic stays on 127.0.0.1; every load run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${1:-10}"
CONNECTIONS="${2:-32}"
UPSTREAM_PORT=18201
PORTCULLIS_PORT=18203
PORTCULLIS_ADMIN=18204
APACHE_PL1_PORT=18211
APACHE_PL2_PORT=18212

source bench/common.sh
CLEANUP+=("bench/waf/apache-crs.sh stop $WORK/apache1" "bench/waf/apache-crs.sh stop $WORK/apache2")

ok_upstream "$UPSTREAM_PORT"

cat > "$WORK/portcullis.toml" <<CONF
profile = "production"
[server]
listen = "127.0.0.1:$PORTCULLIS_PORT"
admin_listen = "127.0.0.1:$PORTCULLIS_ADMIN"
trusted_proxies = ["127.0.0.1/32"]
[storage]
allow_sqlite_in_production = true
# One loopback client replays thousands of requests: the per-client limit would answer them.
[rate_limit]
client = "off"
[[route]]
path = "/"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
CONF
PORTCULLIS_LOG=error "$BIN" serve -c "$WORK/portcullis.toml" --data-dir "$WORK/data" >/dev/null 2>&1 &
PIDS+=($!)
bench/waf/apache-crs.sh start "$APACHE_PL1_PORT" 1 "$WORK/apache1"
bench/waf/apache-crs.sh start "$APACHE_PL2_PORT" 2 "$WORK/apache2"
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$PORTCULLIS_PORT/" && break; sleep 0.1; done

FORM="name=Siobh%C3%A1n+O%27Brien&email=anna%40example.com&plan=pro"
while [ ${#FORM} -lt 1000 ]; do FORM="$FORM&note=Please+select+a+plan+that+fits+your+team%2C+then+update+billing+%2850%25+off%29"; done
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = "$FORM"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA

load() { # port, extra wrk args...
  local port=$1; shift
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "http://127.0.0.1:$port/search?q=red+shoes+for+O%27Brien&page=2" 2>/dev/null \
    | awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {printf "%10s req/s  p50 %8s  p99 %8s", rps, p50, p99}'
}

for target in "Portcullis PL1:$PORTCULLIS_PORT" "Apache+CRS PL1:$APACHE_PL1_PORT" "Apache+CRS PL2:$APACHE_PL2_PORT"; do
  name=${target%%:*}; port=${target##*:}
  echo "== $name"
  python3 bench/waf/replay.py --port "$port" --extra
  printf "GET with a query:  %s\n" "$(load "$port")"
  printf "1 KB form POST:    %s\n" "$(load "$port" -s "$WORK/post.lua")"
done
