#!/usr/bin/env bash
# A PostgreSQL cluster of its own on loopback, for the real-cluster tests and
# for running the production binaries by hand.
#
#   scripts/postgres.sh start     install (Debian package) if missing, create the cluster once, start it
#   scripts/postgres.sh stop
#   scripts/postgres.sh restart   used by the fault suite
#   scripts/postgres.sh status
#   scripts/postgres.sh url       print the connection URL
#   scripts/postgres.sh tls-url   the same over TLS, verifying the server (sslmode=verify-full)
#   scripts/postgres.sh pid       print the postmaster's process id (the benchmark counts its CPU and memory)
#   scripts/postgres.sh drop-test-databases   remove the e2e_* databases of earlier suite runs
#
# The cluster is named "switchboard" and listens on 127.0.0.1:15432, so it
# never touches a cluster the machine already runs. The role `sb` (password
# `sb`, allowed to create databases) owns the database `sb`. TLS is on, with
# a certificate signed by the project's test CA (scripts/tls.sh), as a
# managed PostgreSQL offers it; plain connections still work.
set -euo pipefail

PORT="${SB_POSTGRES_PORT:-15432}"
CLUSTER=switchboard
URL="postgres://sb:sb@127.0.0.1:$PORT/sb"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install() {
    if command -v pg_createcluster >/dev/null; then return; fi
    echo "installing PostgreSQL from Debian packages"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

# The newest PostgreSQL major version installed.
version() {
    ls /usr/lib/postgresql | sort -n | tail -1
}

cluster_exists() {
    pg_lsclusters -h | awk -v c="$CLUSTER" '$2 == c { found = 1 } END { exit !found }'
}

running() {
    command -v pg_lsclusters >/dev/null && pg_lsclusters -h | awk -v c="$CLUSTER" '$2 == c && $4 == "online" { found = 1 } END { exit !found }'
}

psql_admin() {
    as_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"
}

start() {
    install
    local v
    v="$(version)"
    if ! cluster_exists; then
        as_root pg_createcluster "$v" "$CLUSTER" -p "$PORT" -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null
        # Loopback only; enough connections for several pools per test.
        as_root tee "/etc/postgresql/$v/$CLUSTER/conf.d/switchboard.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
max_connections = 300
CONF
    fi
    install_certificate "$v"
    if ! running; then as_root pg_ctlcluster "$v" "$CLUSTER" start; fi
    for _ in $(seq 1 60); do
        if pg_isready -q -h 127.0.0.1 -p "$PORT"; then break; fi
        sleep 0.5
    done
    pg_isready -q -h 127.0.0.1 -p "$PORT" || { echo "postgres did not start" >&2; exit 1; }
    psql_admin -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sb') THEN
    CREATE ROLE sb LOGIN CREATEDB PASSWORD 'sb';
  END IF;
END \$\$;
SQL
    if [ -z "$(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'sb'")" ]; then
        psql_admin -d postgres -c "CREATE DATABASE sb OWNER sb"
    fi
    echo "postgres $v running: $URL"
}

# The server's certificate and key, where only postgres reads them (it
# refuses a key others can read), and ssl on. A checkout with other
# certificates installs its own and restarts the cluster.
install_certificate() {
    local v="$1" tls dir
    tls="$("$ROOT/scripts/tls.sh" make)"
    dir="/var/lib/postgresql/$v/$CLUSTER-tls"
    if as_root cmp -s "$tls/server.crt" "$dir/server.crt" 2>/dev/null; then return; fi
    as_root mkdir -p "$dir"
    as_root cp "$tls/server.crt" "$tls/server.key" "$dir/"
    as_root chown -R postgres:postgres "$dir"
    as_root chmod 600 "$dir/server.key"
    as_root tee "/etc/postgresql/$v/$CLUSTER/conf.d/tls.conf" >/dev/null <<CONF
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
CONF
    if running; then as_root pg_ctlcluster "$v" "$CLUSTER" restart -m fast; fi
}

stop() {
    if running; then as_root pg_ctlcluster "$(version)" "$CLUSTER" stop -m fast; fi
}

# The end-to-end suite creates one database per test, named e2e_*.
drop_test_databases() {
    local db
    for db in $(psql_admin -d postgres -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'e2e\_%'"); do
        psql_admin -d postgres -c "DROP DATABASE \"$db\" WITH (FORCE)"
    done
}

restart() {
    as_root pg_ctlcluster "$(version)" "$CLUSTER" restart -m fast
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart) restart ;;
    status) if running; then echo "running: $URL"; else echo "stopped"; exit 1; fi ;;
    url) echo "$URL" ;;
    tls-url) echo "postgres://sb:sb@localhost:$PORT/sb?sslmode=verify-full&sslrootcert=$("$ROOT/scripts/tls.sh" dir)/ca.crt" ;;
    pid) running && head -1 "$(pg_lsclusters -h | awk -v c="$CLUSTER" '$2 == c { print $6 }')/postmaster.pid" ;;
    drop-test-databases) drop_test_databases ;;
    *) echo "usage: $0 start|stop|restart|status|url|tls-url|pid|drop-test-databases" >&2; exit 64 ;;
esac
