# Sourced by the bench scripts: installs nginx and wrk from Debian's packages if missing,
# builds the release binary into $BIN (unless BIN names one already), makes a scratch folder
# $WORK, and on exit runs the commands in CLEANUP, kills the processes in PIDS and every nginx
# started under $WORK.
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx wrk >/dev/null
fi
# BIN=path/to/portcullis measures that binary instead of building this checkout's.
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p portcullis
  BIN="$PWD/target/release/portcullis"
fi

WORK="$(mktemp -d)"
PIDS=()
CLEANUP=()
cleanup() {
  for command in "${CLEANUP[@]}"; do eval "$command" || true; done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pidfile in "$WORK"/*/nginx.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

# nginx_conf NAME WORKER_PROCESSES HTTP_BLOCK_BODY: writes $WORK/NAME/nginx.conf.
nginx_conf() { # name, worker_processes, body of the http block
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/nginx.conf" <<CONF
worker_processes $2;
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
  $3
}
CONF
}

# ok_upstream PORT: starts the upstream every bench proxies to, an nginx answering `200 ok`.
ok_upstream() {
  nginx_conf upstream 1 "
  server {
    listen 127.0.0.1:$1;
    keepalive_requests 1000000;
    location / { default_type text/plain; return 200 'ok'; }
  }"
  nginx -c "$WORK/upstream/nginx.conf"
}
