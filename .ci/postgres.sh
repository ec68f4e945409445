# Source me: starts a throw-away PostgreSQL for the store tests and exports
# PRIORAUTH_TEST_DATABASE_URL. Idempotent: a second run reuses the running server.
# Runs as root in CI: the server runs as the unprivileged user `pgtest` (initdb refuses root).
# If PostgreSQL cannot be installed or started, it says so and leaves the variable unset
# (the PostgreSQL store tests then skip, naming the reason).

_pg_main() {
  local state=/tmp/priorauth-pg
  if [ -f "$state/url" ] && PGCONNECT_TIMEOUT=3 "$(cat "$state/bindir")/pg_isready" -q -h 127.0.0.1 -p "$(cat "$state/port")"; then
    export PRIORAUTH_TEST_DATABASE_URL="$(cat "$state/url")"
    echo "postgres.sh: reusing PostgreSQL on port $(cat "$state/port")"
    return 0
  fi
  local bindir
  bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "postgres.sh: installing Debian's postgresql"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || { echo "postgres.sh: could not install postgresql: PostgreSQL store tests will skip"; return 0; }
    bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  fi
  id pgtest >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin pgtest
  rm -rf "$state" && mkdir -p "$state" && chown pgtest "$state" && chmod 700 "$state"
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  local run="runuser -u pgtest --"
  [ "$(id -u)" = 0 ] || run=""
  $run "$bindir/initdb" -D "$state/db" -U pgtest -A trust --no-sync -E UTF8 >/dev/null \
    || { echo "postgres.sh: initdb failed: PostgreSQL store tests will skip"; return 0; }
  $run "$bindir/pg_ctl" -D "$state/db" -l "$state/log" -w -t 30 \
    -o "-h 127.0.0.1 -p $port -k $state -F -c fsync=off -c full_page_writes=off" start >/dev/null \
    || { echo "postgres.sh: pg_ctl start failed (see $state/log): PostgreSQL store tests will skip"; return 0; }
  $run "$bindir/createdb" -h 127.0.0.1 -p "$port" -U pgtest priorauth_test
  echo "$bindir" > "$state/bindir"; echo "$port" > "$state/port"
  echo "postgresql://pgtest@127.0.0.1:$port/priorauth_test" > "$state/url"
  export PRIORAUTH_TEST_DATABASE_URL="$(cat "$state/url")"
  echo "postgres.sh: PostgreSQL on 127.0.0.1:$port (PRIORAUTH_TEST_DATABASE_URL=$PRIORAUTH_TEST_DATABASE_URL)"
}
_pg_main
unset -f _pg_main
