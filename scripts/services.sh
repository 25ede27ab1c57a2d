#!/usr/bin/env bash
# Makes sure the local PostgreSQL (127.0.0.1:5432, trust auth, database `test`) and Redis
# (127.0.0.1:6379) that the test matrix uses are running. Starts them if they are installed
# and down. With CI=true, a service that cannot be reached is an error.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! redis_up && command -v redis-server >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi

status=0
if pg_up; then echo "services: PostgreSQL up"; else echo "services: PostgreSQL unreachable"; status=1; fi
if redis_up; then echo "services: Redis up"; else echo "services: Redis unreachable"; status=1; fi
if [ "$status" -ne 0 ] && [ "${CI:-}" = "true" ]; then
  echo "services: CI=true and a service is unreachable" >&2
  exit 1
fi
exit 0
