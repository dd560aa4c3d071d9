# Shared helpers for the project's scripts. Sourced, never executed.
# shellcheck shell=bash

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

# The Python interpreter the tests run with; pip installs into the same one.
python_bin() {
    if have python3; then echo python3; else echo python; fi
}

# True when every named Python module imports.
py_has() {
    local py
    py=$(python_bin)
    "$py" - "$@" <<'PY' >/dev/null 2>&1
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
PY
}

# apt-get update runs at most once per script run, and only when something is missing.
_apt_updated=0
apt_install() {
    [ "$#" -eq 0 ] && return 0
    have apt-get || die "missing packages ($*) and no apt-get to install them"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        have sudo || die "need root (or sudo) to install: $*"
        sudo="sudo"
    fi
    if [ "$_apt_updated" -eq 0 ]; then
        log "apt-get update"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _apt_updated=1
    fi
    log "apt-get install $*"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Installs the Debian packages among the arguments that are not installed yet.
apt_ensure() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    apt_install "${missing[@]}"
}

# A non-login shell (CI, cron) may lack rustup's and pyenv's directories on PATH.
for _dir in "$HOME/.cargo/bin" "$HOME/.pyenv/shims"; do
    case ":$PATH:" in
        *":$_dir:"*) ;;
        *) [ -d "$_dir" ] && PATH="$PATH:$_dir" ;;
    esac
done
export PATH
unset _dir
