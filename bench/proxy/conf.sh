# Sourced by bench/proxy scripts. portcullis_conf FILE PORT ADMIN_PORT UPSTREAM_PORT DATA_DIR:
# writes the config bench/proxy measures: the production profile without TLS, behind
# trusted_proxies 127.0.0.1/32, with security headers, request ids, the event pipeline, the IP
# decisions and a per-client rate limit that never rejects ($CLIENT_LIMIT, or off) on;
# server.workers = $WORKERS when set.
portcullis_conf() {
  cat > "$1" <<CONF
profile = "production"
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
trusted_proxies = ["127.0.0.1/32"]
$([ -n "${WORKERS:-}" ] && echo "workers = $WORKERS")
data_dir = "$5"
[storage]
allow_sqlite_in_production = true
[rate_limit]
client = "${CLIENT_LIMIT:-1000000/s}"
$([ "${CLIENT_LIMIT:-}" != off ] && echo "client_burst = 1000000")
[[route]]
name = "app"
path = "/"
upstream = "http://127.0.0.1:$4"
CONF
}
