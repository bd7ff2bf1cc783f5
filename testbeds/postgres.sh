#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for keyward's tests and benches, on a Unix socket in DIR
# (no TCP): initdb + pg_ctl from Debian's postgresql package.
#
#   testbeds/postgres.sh start DIR [OWNER_PID]  cluster in DIR/data, socket in DIR/sock,
#                                               database `keyward`, user `keyward` with a
#                                               random password in DIR/password (0600);
#                                               prints the URL
#   testbeds/postgres.sh stop DIR               stops it (fast shutdown, waits)
#   testbeds/postgres.sh restart DIR            restarts it (fast: open sessions are cut)
#   testbeds/postgres.sh reap                   stops the clusters under $TMPDIR whose owner
#                                               process (OWNER_PID) is gone
#
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user
# (runuser), and DIR is made traversable (0711) for it.
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "postgres.sh: initdb not found under /usr/lib/postgresql/*/bin; install PostgreSQL: apt-get install postgresql (or run testbeds/setup.sh)" >&2
    exit 1
fi

as_server() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

url_of() { echo "postgresql:///keyward?host=$1/sock&user=keyward"; }

start() {
    local dir=$1 owner=${2:-}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || { echo "postgres.sh: no postgres system user; install PostgreSQL (apt-get install postgresql)" >&2; exit 1; }
        chmod 0711 "$dir"
    fi
    mkdir -p "$dir/sock" "$dir/data"
    chmod 0700 "$dir/data"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir/sock" "$dir/data"; fi
    # The password: 0600 for keyward (this user), a copy for initdb readable by the server.
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$dir/password")
    local pw="$dir/sock/initdb-password"
    cp "$dir/password" "$pw"
    if [ "$(id -u)" = 0 ]; then chown postgres "$pw"; fi
    if [ -n "$owner" ]; then echo "$owner" > "$dir/owner.pid"; fi
    as_server "$bin/initdb" -D "$dir/data" -U keyward --pwfile="$pw" --auth=scram-sha-256 \
        --locale=C --encoding=UTF8 -N >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$pw"
    as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/sock/server.log" -w -t 60 \
        -o "-c listen_addresses='' -k $dir/sock -c max_connections=200" start >/dev/null
    PGPASSWORD=$(cat "$dir/password") "$bin/psql" -q -h "$dir/sock" -U keyward -d postgres \
        -c "CREATE DATABASE keyward" >/dev/null
    url_of "$dir"
}

stop() {
    local dir=$1
    [ -d "$dir/data" ] || return 0
    as_server "$bin/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >/dev/null 2>&1 || \
        as_server "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
}

restart() {
    local dir=$1
    as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/sock/server.log" -w -t 60 -m fast \
        -o "-c listen_addresses='' -k $dir/sock -c max_connections=200" restart >/dev/null
}

reap() {
    local d pid
    for d in "${TMPDIR:-/tmp}"/keyward-pg-*/; do
        [ -f "$d/owner.pid" ] && [ -f "$d/data/postmaster.pid" ] || continue
        pid=$(cat "$d/owner.pid")
        if ! kill -0 "$pid" 2>/dev/null; then
            stop "${d%/}"
        fi
    done
}

case "${1:-}" in
    start) start "${2:?DIR}" "${3:-}" ;;
    stop) stop "${2:?DIR}" ;;
    restart) restart "${2:?DIR}" ;;
    reap) reap ;;
    url) url_of "${2:?DIR}" ;;
    *) echo "usage: $0 start DIR [OWNER_PID] | stop DIR | restart DIR | reap | url DIR" >&2; exit 2 ;;
esac
