#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests, from Debian's packages (installed when missing).
#
#   eval "$(bash .ci/start_postgres.sh)"     # exports BENCH_TEST_PG_DSN and BENCH_TEST_PG_DIR
#   bash .ci/start_postgres.sh stop "$BENCH_TEST_PG_DIR"
#
# The server runs as the `postgres` user when started by root (initdb refuses root), listens on
# 127.0.0.1 on a free port, trusts local connections and keeps its data under a fresh /tmp
# folder. tests/test_tuning.py calls this script itself when BENCH_TEST_PG_DSN is not set.
set -euo pipefail

if [ "${1:-}" = stop ]; then
  dir="${2:?usage: start_postgres.sh stop DIR}"
  bin="$(cat "$dir/bin")"
  if [ "$(id -u)" = 0 ]; then run=(runuser -u postgres --); else run=(); fi
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
  rm -rf "$dir"
  exit 0
fi

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return 0; fi
  return 1
}

bin="$(find_bin || true)"
if [ -z "$bin" ]; then
  if [ "$(id -u)" = 0 ] && [ "${BENCH_PG_NO_INSTALL:-0}" != 1 ]; then
    echo "installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin="$(find_bin)"
  else
    echo "PostgreSQL binaries not found (apt-get install postgresql)" >&2
    exit 3
  fi
fi

dir="$(mktemp -d /tmp/bench-pg.XXXXXX)"
echo "$bin" > "$dir/bin"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
  chown postgres "$dir"
  run=(runuser -u postgres --)
else
  run=()
fi
"${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
"${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50" start >&2 \
  || { cat "$dir/server.log" >&2; exit 1; }
echo "export BENCH_TEST_PG_DSN=postgresql://postgres@127.0.0.1:$port/postgres"
echo "export BENCH_TEST_PG_DIR=$dir"
