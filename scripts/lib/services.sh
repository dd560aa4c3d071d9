# Services the tests need (databases, directories) started for one test run. Sourced by
# scripts/test.sh, which calls start_services before the tests and stop_services on exit.
# shellcheck shell=bash

# shellcheck source=auth-services.sh
. "$(dirname "${BASH_SOURCE[0]}")/auth-services.sh"

# Pids and commands that stop_services must undo, newest last.
_service_stops=()

start_services() {
    # === Later backends start here ============================================================
    # e.g. PostgreSQL / MariaDB / Redis / slapd on loopback-only ports, each checked ready with a
    # bounded wait, exporting its address for the tests (RAMPART_TEST_PG_URL=...), and pushing
    # its stop command:  _service_stops+=("pg_ctlcluster 15 rampart-test stop")
    # ==========================================================================================
    auth_services_start
    _service_stops+=("auth_services_stop")
}

stop_services() {
    local i
    for ((i = ${#_service_stops[@]} - 1; i >= 0; i--)); do
        eval "${_service_stops[$i]}" || true
    done
    _service_stops=()
}
