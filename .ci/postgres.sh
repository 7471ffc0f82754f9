# shellcheck shell=bash
# A throwaway PostgreSQL for the state-store tests. `source` it (from .ci/run, or by hand in a shell
# that then runs pytest): it installs PostgreSQL from Debian packages if needed, starts a private cluster
# on 127.0.0.1 on a free port with trust auth on loopback, creates the database `capctl_test`, exports
#   CAPCTL_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:PORT/capctl_test
# and stops the cluster and deletes its files when the sourcing shell exits.
# It only defines `capctl_pg_*` names, works under `set -euo pipefail`, and leaves shell options alone.
# A caller that sets its own EXIT trap afterwards must call `capctl_pg_stop` from it.

capctl_pg_bindir() {
    # The newest installed major version (Debian keeps each in /usr/lib/postgresql/N/bin).
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5n | tail -n 1) || true
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
        echo "$dir"
    fi
}

capctl_pg_as_owner() {
    # PostgreSQL refuses to run as root: as root, run the server tools as the `postgres` user.
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

capctl_pg_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

capctl_pg_stop() {
    if [ -n "${CAPCTL_PG_DIR:-}" ] && [ -d "$CAPCTL_PG_DIR" ]; then
        capctl_pg_as_owner "$CAPCTL_PG_BIN/pg_ctl" -D "$CAPCTL_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$CAPCTL_PG_DIR"
    fi
    unset CAPCTL_PG_DIR CAPCTL_TEST_POSTGRES_URL
}

capctl_pg_start() {
    local port url attempt
    CAPCTL_PG_BIN=$(capctl_pg_bindir)
    if [ -z "$CAPCTL_PG_BIN" ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "postgres.sh: PostgreSQL is not installed and installing it needs root" >&2
            return 1
        fi
        echo "postgres.sh: installing PostgreSQL from Debian packages" >&2
        apt-get update -qq >&2 || return 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 || return 1
        CAPCTL_PG_BIN=$(capctl_pg_bindir)
        [ -n "$CAPCTL_PG_BIN" ] || { echo "postgres.sh: no initdb after installing postgresql" >&2; return 1; }
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres || return 1
    fi

    CAPCTL_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/capctl-pg.XXXXXX") || return 1
    # Set the trap before anything can fail half-way, chaining any EXIT trap the caller already has.
    local previous
    previous=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")
    # shellcheck disable=SC2064  # expand $previous now, on purpose
    trap "capctl_pg_stop${previous:+; $previous}" EXIT
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$CAPCTL_PG_DIR" || return 1
    fi

    capctl_pg_as_owner "$CAPCTL_PG_BIN/initdb" -D "$CAPCTL_PG_DIR/data" -U postgres --auth=trust \
        -E UTF8 --locale=C.UTF-8 --no-sync >"$CAPCTL_PG_DIR/initdb.log" 2>&1 || {
        echo "postgres.sh: initdb failed:" >&2; cat "$CAPCTL_PG_DIR/initdb.log" >&2; return 1
    }
    # Another process may take the port between the probe and the bind: try a few.
    for attempt in 1 2 3 4 5; do
        port=$(capctl_pg_free_port) || return 1
        # Durability settings off: this cluster lives for one test run.
        if capctl_pg_as_owner "$CAPCTL_PG_BIN/pg_ctl" -D "$CAPCTL_PG_DIR/data" -l "$CAPCTL_PG_DIR/server.log" \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $CAPCTL_PG_DIR -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            -w -t 60 start >/dev/null; then
            break
        fi
        port=""
        echo "postgres.sh: start attempt $attempt failed; server log:" >&2
        tail -n 5 "$CAPCTL_PG_DIR/server.log" >&2
    done
    [ -n "$port" ] || return 1
    for attempt in $(seq 1 60); do
        "$CAPCTL_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" && break
        sleep 0.5
    done
    "$CAPCTL_PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres capctl_test || return 1
    url="postgresql://postgres@127.0.0.1:$port/capctl_test"
    export CAPCTL_TEST_POSTGRES_URL="$url"
    echo "postgres.sh: $("$CAPCTL_PG_BIN/postgres" --version) ready at $url" >&2
}

capctl_pg_start
