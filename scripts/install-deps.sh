#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (run as root).
# Installs only what is missing, so a second run takes a second or two.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"

# --- Debian packages -------------------------------------------------------------------------
# mosquitto: the peer broker for interop and for validating tests (RAMPART_TEST_PEER=mosquitto);
# mosquitto-clients: mosquitto_pub/mosquitto_sub interop tests; openssl: test certificates.
apt_pkgs=(mosquitto mosquitto-clients openssl)

# === Services for later backends (authn/authz, storage) =======================================
# Later sessions add their server packages here, e.g.:
#   apt_pkgs+=(postgresql mariadb-server redis-server slapd ldap-utils)
# and start them in scripts/lib/services.sh (start_services), which scripts/test.sh calls.
# ===============================================================================================

py=$(python_bin)
if ! have "$py" || ! "$py" -m pip --version >/dev/null 2>&1; then
    apt_pkgs+=(python3 python3-pip)
fi
apt_ensure "${apt_pkgs[@]}"
# Real servers for the authentication backends' tests (PostgreSQL, MariaDB, Redis, slapd).
# shellcheck source=lib/auth-services.sh
. "$here/lib/auth-services.sh"
auth_services_install
py=$(python_bin)

# Debian's mosquitto package enables a system service; the tests start their own instances on
# their own ports, so a running system one is harmless and is left alone.

# --- Python packages ---------------------------------------------------------------------------
# (module to import, pip requirement) pairs; paho-mqtt must be 2.x (CallbackAPIVersion).
pip_missing=()
if ! "$py" -c 'import paho.mqtt, sys; sys.exit(0 if int(paho.mqtt.__version__.split(".")[0]) >= 2 else 1)' >/dev/null 2>&1; then
    pip_missing+=("paho-mqtt>=2,<3")
fi
py_has pytest || pip_missing+=("pytest>=7")
py_has pytest_timeout || pip_missing+=("pytest-timeout")
py_has xdist || pip_missing+=("pytest-xdist")
if [ "${#pip_missing[@]}" -gt 0 ]; then
    log "pip install ${pip_missing[*]}"
    # Debian's own python3 marks its site-packages as externally managed (PEP 668); the test
    # dependencies are only for this machine's test runs, so installing over that is intended.
    "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "${pip_missing[@]}" 2>/dev/null \
    || "$py" -m pip install --quiet --disable-pip-version-check --break-system-packages \
        "${pip_missing[@]}"
fi

# --- Rust tooling ------------------------------------------------------------------------------
have cargo || die "cargo not found: install the Rust toolchain (rustup) first"
if ! cargo fmt --version >/dev/null 2>&1 && have rustup; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1 && have rustup; then rustup component add clippy; fi

log "dependencies present"
