#!/usr/bin/env bash
# Regenerates the benchmark table in BENCHMARKS.md: installs what is missing (Mosquitto, openssl,
# PostgreSQL; rumqttd with `cargo install rumqttd`), builds rampart and rampart-bench in
# release, starts each broker itself and compares them in one run (broker pinned to CPU 0, load
# generator to CPU 1), writes the table between the markers in BENCHMARKS.md and the raw JSON
# lines to target/bench-results/. A throwaway PostgreSQL (loopback, temporary directory, stopped
# on exit) serves the auth-postgres scenario.
#
# Usage: scripts/bench.sh [extra rampart-bench compare arguments]
# Env:   BROKERS    (default rampart,mosquitto, plus rumqttd when it is installed)
#        SCENARIOS  (default all)
#        REPEAT     (default 3; medians are shown)
#        NO_DOC=1   do not touch BENCHMARKS.md
#        NO_RUMQTTD=1  do not install rumqttd when it is missing (nor compare it)
#        PG_URL=postgres://...  use this PostgreSQL instead of starting one; NO_PG=1: none
#        RAMPART_BIN=path  use this Rampart binary instead of building one
#        CARGO_TARGET_DIR  where to build (default: the workspace's target/)
# Example: REPEAT=1 SCENARIOS=fanin-q0,latency-20k scripts/bench.sh --duration 2
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/common.sh
. "$root/scripts/lib/common.sh"
cd "$root"

# Builds go to the workspace's own target dir unless the caller names one.
unset CARGO_BUILD_TARGET_DIR
target_dir="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TARGET_DIR="$target_dir"

apt_ensure mosquitto openssl util-linux postgresql postgresql-client

# rumqttd is a peer of the comparison (issue 7); it is built once into ~/.cargo/bin. Not with
# --locked: rumqttd 0.20.0's lock file pins metrics 0.22.1, which current rustc refuses (E0521,
# fixed in metrics 0.22.4). Failing to build it is not fatal: the comparison runs without it.
if [ "${NO_RUMQTTD:-0}" != 1 ] && ! have rumqttd; then
    log "installing rumqttd 0.20.0 (cargo install; once, several minutes)"
    if ! CARGO_TARGET_DIR="$target_dir/rumqttd-build" cargo install rumqttd --version 0.20.0 -q; then
        log "warning: rumqttd did not build; comparing without it (NO_RUMQTTD=1 skips this step)"
    fi
fi

rampart_bin="${RAMPART_BIN:-}"
if [ -n "$rampart_bin" ]; then
    log "building rampart-bench (release); Rampart from RAMPART_BIN=$rampart_bin"
    cargo build --release -q -p rampart-bench
else
    log "building rampart and rampart-bench (release)"
    cargo build --release -q -p rampart -p rampart-bench
    rampart_bin="$target_dir/release/rampart"
fi

brokers="${BROKERS:-rampart,mosquitto}"
if [ -z "${BROKERS:-}" ] && [ "${NO_RUMQTTD:-0}" != 1 ] && have rumqttd; then
    brokers="$brokers,rumqttd"
fi

# A throwaway PostgreSQL for auth-postgres: initdb in a temporary directory (as the postgres
# user when run as root: initdb refuses root), loopback only, fsync off, stopped on exit.
pg=()
pg_dir=""
pg_stop() {
    [ -n "$pg_dir" ] || return 0
    "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
}
if [ -n "${PG_URL:-}" ]; then
    pg=(--pg-url "$PG_URL")
elif [ "${NO_PG:-0}" != 1 ]; then
    pg_bin=""
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && pg_bin="$d"; done
    if [ -n "$pg_bin" ]; then
        pg_dir=$(mktemp -d /tmp/rampart-bench-pg.XXXXXX)
        pg_port=18860
        pg_pw="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
        printf '%s\n' "$pg_pw" >"$pg_dir/pw"
        pg_as=()
        if [ "$(id -u)" -eq 0 ]; then
            chown -R postgres: "$pg_dir"
            pg_as=(runuser -u postgres --)
        fi
        trap pg_stop EXIT
        # On the broker's CPU: the database is part of the system under test, not of the load.
        # On the broker's core (it is the broker's backend in auth-postgres), with its
        # background writers slowed to once per 10 s and autovacuum off: idle in every other
        # scenario, they would otherwise wake on that core every 200 ms and show in the
        # latency tails (BENCHMARKS.md, "Latency at 5k msg/s").
        pin_pg=()
        if [ "$(nproc)" -ge 2 ]; then pin_pg=(taskset -c 0); fi
        if "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U bench --pwfile="$pg_dir/pw" \
                --auth-local=trust --auth-host=scram-sha-256 >"$pg_dir/initdb.log" 2>&1 \
            && "${pin_pg[@]}" "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" \
                -w -t 30 -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c autovacuum=off -c bgwriter_delay=10s -c wal_writer_delay=10s -c checkpoint_timeout=1h" \
                start >/dev/null \
            && "${pg_as[@]}" "$pg_bin/psql" -h "$pg_dir" -p "$pg_port" -U bench -d postgres \
                -qc "CREATE DATABASE bench" >/dev/null; then
            pg=(--pg-url "postgres://bench:$pg_pw@127.0.0.1:$pg_port/bench")
            log "PostgreSQL on 127.0.0.1:$pg_port for auth-postgres"
        else
            log "warning: PostgreSQL did not start (see $pg_dir); auth-postgres will be skipped"
        fi
    else
        log "warning: PostgreSQL not installed; auth-postgres will be skipped"
    fi
fi
scenarios="${SCENARIOS:-all}"
repeat="${REPEAT:-3}"

# The idle-memory scenario holds 19,000 connections in the tool and as many in the broker: raise
# the soft open-file limit to the hard one (both processes inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 19500 ]; then
    log "warning: open-file limit $(ulimit -n) is below what the 19,000-connection scenario needs"
fi

pin=()
if [ "$(nproc)" -ge 2 ]; then pin=(--pin); fi

mkdir -p target/bench-results
out="target/bench-results/$(date -u +%Y%m%dT%H%M%SZ).jsonl"
cmd="scripts/bench.sh"
doc=(--doc BENCHMARKS.md --command-line "$cmd")
if [ "${NO_DOC:-0}" = 1 ]; then doc=(); fi

log "comparing $brokers on $scenarios, $repeat repeat(s); raw results in $out"
"$target_dir/release/rampart-bench" compare \
    --brokers "$brokers" --scenarios "$scenarios" --repeat "$repeat" "${pin[@]}" "${pg[@]}" \
    --rampart-bin "$rampart_bin" --json-out "$out" "${doc[@]}" \
    --note "Rampart: $rampart_bin, tree at commit $(git describe --always --dirty 2>/dev/null || echo unknown)" "$@"
