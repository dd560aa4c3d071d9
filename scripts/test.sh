#!/usr/bin/env bash
# The project's test command: installs what is missing, then runs formatting, lints, the Rust
# tests, builds the broker and runs the black-box MQTT tests (tests/) against the real binary.
#
# Usage: scripts/test.sh [--python-only] [-- extra pytest args]
#   --python-only   skip fmt/clippy/cargo test (still builds the binary); for quick iterations
# Env: RAMPART_TEST_PEER=mosquitto runs tests/ against Mosquitto instead (validates the tests).
#      PYTEST_WORKERS (default 2), PYTEST_TIMEOUT per test in seconds (default 90).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/common.sh
. "$root/scripts/lib/common.sh"
# shellcheck source=lib/services.sh
. "$root/scripts/lib/services.sh"
cd "$root"

# Builds go to the workspace's own target dir, whatever the caller's environment says.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR

python_only=0
pytest_extra=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --python-only) python_only=1 ;;
        --) shift; pytest_extra=("$@"); break ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
    shift
done

pytest_pid=""
cleanup() {
    local rc=$?
    if [ -n "$pytest_pid" ] && kill -0 "$pytest_pid" 2>/dev/null; then
        # pytest runs in its own process group: this reaches its workers and every broker.
        kill -TERM -- "-$pytest_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pytest_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$pytest_pid" 2>/dev/null || true
    fi
    stop_services
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$(date +%s)
step() { log "== $* ($(($(date +%s) - started))s)"; }

step "install dependencies"
"$root/scripts/install-deps.sh"

step "start services"
start_services

if [ "$python_only" -eq 0 ]; then
    step "cargo fmt --check"
    cargo fmt --all -- --check

    step "cargo clippy"
    cargo clippy --workspace --all-targets -- -D warnings

    if cargo nextest --version >/dev/null 2>&1; then
        step "cargo nextest run"
        cargo nextest run --workspace --no-fail-fast --no-tests=warn
        step "cargo test --doc"
        cargo test --doc --workspace
    else
        step "cargo test"
        cargo test --workspace --no-fail-fast
    fi
fi

step "build the broker"
cargo build -p rampart --bin rampart
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | "$(python_bin)" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
export RAMPART_BIN="$target_dir/debug/rampart"
[ -x "$RAMPART_BIN" ] || die "broker binary not found at $RAMPART_BIN"

step "pytest tests/ (RAMPART_BIN=$RAMPART_BIN${RAMPART_TEST_PEER:+, peer $RAMPART_TEST_PEER})"
# Own process group (setsid) so that cleanup can stop pytest, its xdist workers and brokers
# together; the whole run is bounded so a wedged test cannot eat CI's time.
set +e
setsid timeout --kill-after=30 2400 "$(python_bin)" -m pytest -n "${PYTEST_WORKERS:-2}" \
    --timeout="${PYTEST_TIMEOUT:-90}" -p no:cacheprovider -q -rfE tests/ "${pytest_extra[@]}" &
pytest_pid=$!
wait "$pytest_pid"
rc=$?
pytest_pid=""
set -e
case "$rc" in
    0) ;;
    5) die "pytest collected no tests" ;;
    124|137) die "pytest exceeded the run's time bound" ;;
    *) die "pytest failed (exit $rc)" ;;
esac

step "all tests passed"
