#!/bin/sh
# Installs Rampart as a hardened systemd service. Idempotent: running it again changes
# nothing that is already right, and never overwrites an existing config.
#
#   packaging/install.sh [--bin PATH] [--root DIR] [--no-activate]
#
#   --bin PATH      broker binary to install as /usr/local/bin/rampart
#                   (default: target/release/rampart if it exists; otherwise none)
#   --root DIR      install into DIR instead of / (an image or a test fixture); implies
#                   --no-activate, and the user goes into DIR/etc/passwd with the uid and
#                   gid from RAMPART_UID / RAMPART_GID (default 990)
#   --no-activate   do not load the sysctl settings or touch systemd
#
# What it does (each step is safe to repeat):
#   1. system user and group `rampart` (no login shell, home /var/lib/rampart);
#   2. /etc/rampart and /etc/rampart/tls (0700) and /var/lib/rampart (0700), owned by
#      rampart; config, ACL and private keys 0600 (C2);
#   3. /etc/rampart/rampart.toml from config/rampart.example.toml and an ACL that allows
#      nothing (/etc/rampart/acl.conf) if there are none;
#   4. the unit (/etc/systemd/system/rampart.service), the kernel settings
#      (/etc/sysctl.d/99-rampart.conf) and nf_conntrack in /etc/modules-load.d;
#   5. unless --no-activate: load nf_conntrack, sysctl --system, systemctl daemon-reload
#      and enable (it does not start the broker: put the certificates in place first).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
root=/
bin=
activate=yes
if [ -x "$repo/target/release/rampart" ]; then bin="$repo/target/release/rampart"; fi

while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin=$2; shift 2 ;;
        --root) root=$2; activate=no; shift 2 ;;
        --no-activate) activate=no; shift ;;
        --no-bin) bin=; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

r() { printf '%s%s' "${root%/}" "$1"; }
say() { printf 'rampart install: %s\n' "$*"; }

# 1. The service user.
if [ "$root" = / ]; then
    if ! getent group rampart >/dev/null; then
        groupadd --system rampart
        say "created group rampart"
    fi
    if ! getent passwd rampart >/dev/null; then
        useradd --system --gid rampart --home-dir /var/lib/rampart --no-create-home \
            --shell /usr/sbin/nologin --comment "Rampart MQTT broker" rampart
        say "created user rampart"
    fi
    owner=rampart:rampart
else
    uid=${RAMPART_UID:-990}
    gid=${RAMPART_GID:-990}
    mkdir -p "$(r /etc)"
    touch "$(r /etc/passwd)" "$(r /etc/group)"
    grep -q '^rampart:' "$(r /etc/group)" || echo "rampart:x:$gid:" >>"$(r /etc/group)"
    grep -q '^rampart:' "$(r /etc/passwd)" ||
        echo "rampart:x:$uid:$gid:Rampart MQTT broker:/var/lib/rampart:/usr/sbin/nologin" >>"$(r /etc/passwd)"
    owner=$uid:$gid
fi

# 2. Directories, owner-only.
for d in /etc/rampart /etc/rampart/tls /var/lib/rampart; do
    install -d -m 0700 "$(r $d)"
    chown "$owner" "$(r $d)"
    chmod 0700 "$(r $d)"
done

# 3. The config: never overwritten, only its mode and owner are corrected.
cfg=$(r /etc/rampart/rampart.toml)
if [ ! -e "$cfg" ]; then
    install -m 0600 "$repo/config/rampart.example.toml" "$cfg"
    say "installed $cfg from config/rampart.example.toml: edit it, then run rampart doctor"
fi
chown "$owner" "$cfg"
chmod 0600 "$cfg"
# The ACL named by the example config: empty of rules, so nothing is allowed until the
# operator writes some (M2: no match denies). Never overwritten.
acl=$(r /etc/rampart/acl.conf)
if [ ! -e "$acl" ]; then
    cat >"$acl" <<'ACL'
# Rampart ACL (acl.file in rampart.toml). One rule per line, the first match decides:
#   <allow|deny> <who> <action> <topic> [qos=0,1,2] [retain=true|false]
# who: all, anonymous, user:NAME, client:ID, cn:NAME, group:NAME, ip:CIDR
# action: publish, subscribe, all. Topics may use ${username}, ${clientid},
# ${cert_common_name}. Edits apply without a restart. Examples:
#   allow cn:* all devices/${cert_common_name}/#
#   allow group:operators subscribe devices/#
# Whatever no rule allows is denied (acl.no_match = "deny"); this last rule says so too.
deny all all #
ACL
    say "installed $acl (no rule allows anything yet)"
fi
chown "$owner" "$acl"
chmod 0600 "$acl"
for k in "$(r /etc/rampart/tls)"/*.key; do
    [ -e "$k" ] || continue
    chown "$owner" "$k"
    chmod 0600 "$k"
done

# 4. Binary, unit, kernel settings.
if [ -n "$bin" ]; then
    install -D -m 0755 "$bin" "$(r /usr/local/bin/rampart)"
fi
install -D -m 0644 "$here/rampart.service" "$(r /etc/systemd/system/rampart.service)"
install -D -m 0644 "$here/99-rampart.conf" "$(r /etc/sysctl.d/99-rampart.conf)"
mkdir -p "$(r /etc/modules-load.d)"
# Loaded before systemd-sysctl at boot, so that nf_conntrack_max applies.
echo nf_conntrack >"$(r /etc/modules-load.d/rampart.conf)"
chmod 0644 "$(r /etc/modules-load.d/rampart.conf)"

# 5. Activate on this host.
if [ "$activate" = yes ]; then
    modprobe nf_conntrack 2>/dev/null || say "warning: cannot load nf_conntrack (container?)"
    sysctl --system >/dev/null || say "warning: sysctl --system reported errors"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable rampart.service >/dev/null 2>&1
        say "enabled rampart.service (not started)"
    else
        say "systemd is not running here: unit installed but not enabled"
    fi
fi

say "done. Next: put the TLS files in $(r /etc/rampart/tls) (keys 0600), then"
say "  rampart doctor --config /etc/rampart/rampart.toml && systemctl start rampart"
