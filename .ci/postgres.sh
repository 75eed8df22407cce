#!/usr/bin/env bash
# Start a throw-away PostgreSQL on 127.0.0.1:55432 for the optuna-storage tests; print its URL.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
data=/tmp/hpsearch-ci-pg
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_postgres "$bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
rm -rf "$data" && mkdir -p "$data" && { [ "$(id -u)" != 0 ] || chown postgres "$data"; }
as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -o "-p 55432 -k /tmp -c listen_addresses=127.0.0.1" -w start >/dev/null
as_postgres "$bin/createdb" -h 127.0.0.1 -p 55432 -U postgres hpsearch
echo "postgresql://postgres@127.0.0.1:55432/hpsearch"
