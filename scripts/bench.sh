#!/usr/bin/env bash
# Regenerates the benchmark table in BENCHMARKS.md: installs what is missing (Mosquitto, openssl),
# builds rampart and rampart-bench in release, starts each broker itself and compares them in one
# run (broker pinned to CPU 0, load generator to CPU 1), writes the table between the markers in
# BENCHMARKS.md and the raw JSON lines to target/bench-results/.
#
# Usage: scripts/bench.sh [extra rampart-bench compare arguments]
# Env:   BROKERS    (default rampart,mosquitto, plus rumqttd when it is installed)
#        SCENARIOS  (default all)
#        REPEAT     (default 3; medians are shown)
#        NO_DOC=1   do not touch BENCHMARKS.md
#        RAMPART_BIN=path  use this Rampart binary instead of building one
# Example: REPEAT=1 SCENARIOS=fanin-q0,latency-20k scripts/bench.sh --duration 2
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/common.sh
. "$root/scripts/lib/common.sh"
cd "$root"

# Builds go to the workspace's own target dir, whatever the caller's environment says.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR

apt_ensure mosquitto openssl util-linux

rampart_bin="${RAMPART_BIN:-}"
if [ -n "$rampart_bin" ]; then
    log "building rampart-bench (release); Rampart from RAMPART_BIN=$rampart_bin"
    cargo build --release -q -p rampart-bench
else
    log "building rampart and rampart-bench (release)"
    cargo build --release -q -p rampart -p rampart-bench
    rampart_bin=target/release/rampart
fi

brokers="${BROKERS:-rampart,mosquitto}"
if [ -z "${BROKERS:-}" ] && have rumqttd; then
    brokers="$brokers,rumqttd"
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
target/release/rampart-bench compare \
    --brokers "$brokers" --scenarios "$scenarios" --repeat "$repeat" "${pin[@]}" \
    --rampart-bin "$rampart_bin" --json-out "$out" "${doc[@]}" \
    --note "Rampart: $rampart_bin, tree at commit $(git describe --always --dirty 2>/dev/null || echo unknown)" "$@"
