# The authentication backends' real servers for the rampart-auth tests: PostgreSQL, MariaDB,
# Redis and OpenLDAP slapd, each started from its Debian package's binaries on a free loopback
# port with its data in one temporary directory (never the system instances or their config),
# and stopped after. Sourced, never executed.
#
#   auth_services_install   apt-get installs whatever is missing (non-interactive; slapd's
#                           debconf is told not to configure a system directory)
#   auth_services_start     starts the four servers and exports, for `cargo test`:
#       RAMPART_TEST_PG_URL      postgres://rampart:...@127.0.0.1:PORT/rampart_test
#       RAMPART_TEST_MYSQL_URL   mysql://rampart:...@127.0.0.1:PORT/rampart_test
#       RAMPART_TEST_REDIS_URL   redis://:...@127.0.0.1:PORT/
#       RAMPART_TEST_LDAP_URL    ldap://127.0.0.1:PORT  (base dc=rampart,dc=test, people in
#                                ou=people: alice/alice-pw (departmentNumber mqtt-admins),
#                                bob/bob-pw; admin cn=admin,dc=rampart,dc=test)
#       RAMPART_TEST_LDAPS_URL   ldaps://127.0.0.1:PORT (same directory; also StartTLS on
#       RAMPART_TEST_LDAP_CA     the ldap:// port), certificate from this throwaway CA
#   auth_services_stop      stops them and removes the directory
#
# A server that cannot start is reported and its variable left unset: its tests then skip
# with a message instead of failing the whole run. Every wait is bounded.
# shellcheck shell=bash

AUTH_SERVICES_PASSWORD="rampart-test"
_auth_dir=""

_auth_log() {
    if declare -F log >/dev/null; then log "$*"; else printf '[auth-services] %s\n' "$*" >&2; fi
}

_auth_have() { command -v "$1" >/dev/null 2>&1; }

_auth_pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    return 1
}

auth_services_install() {
    local missing=()
    _auth_pg_bin >/dev/null || missing+=(postgresql)
    { _auth_have mariadbd || _auth_have mysqld; } && _auth_have mariadb-install-db || missing+=(mariadb-server)
    _auth_have redis-server || missing+=(redis-server)
    { _auth_have slapd || [ -x /usr/sbin/slapd ]; } || missing+=(slapd)
    _auth_have ldapadd || missing+=(ldap-utils)
    [ "${#missing[@]}" -eq 0 ] && return 0
    _auth_have apt-get || { _auth_log "auth services: missing ${missing[*]} and no apt-get"; return 1; }
    _auth_log "auth services: apt-get install ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    # No system slapd database: we run our own with its own config below.
    echo "slapd slapd/no_configuration boolean true" | $sudo debconf-set-selections 2>/dev/null || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    # policy-rc.d may forbid starting the system services; that is what we want anyway.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# A free TCP port on 127.0.0.1 (bound and released; the servers bind it a moment later).
_auth_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits up to $2 tenths of a second for `$1` (a command) to succeed.
_auth_wait() {
    local i
    for ((i = 0; i < $2; i++)); do
        eval "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

_auth_start_pg() {
    local bin port dir="$_auth_dir/pg"
    bin=$(_auth_pg_bin) || { _auth_log "auth services: PostgreSQL not installed"; return 1; }
    port=$(_auth_free_port)
    mkdir -p "$dir" && printf '%s\n' "$AUTH_SERVICES_PASSWORD" >"$_auth_dir/pgpw"
    local as=()
    if [ "$(id -u)" -eq 0 ]; then
        # initdb refuses to run as root.
        chown -R postgres: "$dir" "$_auth_dir/pgpw" && as=(runuser -u postgres --)
    fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U rampart --pwfile="$_auth_dir/pgpw" \
        --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 \
        || { _auth_log "auth services: initdb failed (see $dir/initdb.log)"; return 1; }
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
        || { _auth_log "auth services: PostgreSQL did not start (see $dir/server.log)"; return 1; }
    "${as[@]}" "$bin/psql" -h "$dir" -p "$port" -U rampart -d postgres -qc "CREATE DATABASE rampart_test" >/dev/null
    export RAMPART_TEST_PG_URL="postgres://rampart:$AUTH_SERVICES_PASSWORD@127.0.0.1:$port/rampart_test"
    _auth_pg_stop=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop)
}

_auth_start_mysql() {
    local port dir="$_auth_dir/mysql" daemon
    daemon=$(command -v mariadbd || command -v mysqld) || { _auth_log "auth services: MariaDB not installed"; return 1; }
    port=$(_auth_free_port)
    mkdir -p "$dir"
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$dir/data" \
        --auth-root-authentication-method=socket >"$dir/install.log" 2>&1 \
        || { _auth_log "auth services: mariadb-install-db failed (see $dir/install.log)"; return 1; }
    "$daemon" --no-defaults --user="$(id -un)" --datadir="$dir/data" --socket="$dir/sock" \
        --pid-file="$dir/pid" --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
        --innodb-flush-log-at-trx-commit=0 --log-error="$dir/server.log" >/dev/null 2>&1 &
    _auth_wait "mariadb --no-defaults -S '$dir/sock' -u root -e 'SELECT 1'" 300 \
        || { _auth_log "auth services: MariaDB did not start (see $dir/server.log)"; return 1; }
    mariadb --no-defaults -S "$dir/sock" -u root -e "
        CREATE DATABASE rampart_test;
        CREATE USER 'rampart'@'127.0.0.1' IDENTIFIED BY '$AUTH_SERVICES_PASSWORD';
        GRANT ALL ON rampart_test.* TO 'rampart'@'127.0.0.1';" \
        || { _auth_log "auth services: MariaDB setup failed"; return 1; }
    export RAMPART_TEST_MYSQL_URL="mysql://rampart:$AUTH_SERVICES_PASSWORD@127.0.0.1:$port/rampart_test"
}

_auth_start_redis() {
    local port dir="$_auth_dir/redis"
    _auth_have redis-server || { _auth_log "auth services: Redis not installed"; return 1; }
    port=$(_auth_free_port)
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
        --pidfile "$dir/pid" --logfile "$dir/server.log" --save '' --appendonly no \
        --requirepass "$AUTH_SERVICES_PASSWORD" >/dev/null \
        || { _auth_log "auth services: Redis did not start"; return 1; }
    _auth_wait "[ -s '$dir/pid' ] && redis-cli -p $port -a '$AUTH_SERVICES_PASSWORD' --no-auth-warning ping" 100 \
        || { _auth_log "auth services: Redis not answering (see $dir/server.log)"; return 1; }
    export RAMPART_TEST_REDIS_URL="redis://:$AUTH_SERVICES_PASSWORD@127.0.0.1:$port/"
}

_auth_start_ldap() {
    local port tls_port dir="$_auth_dir/ldap" slapd
    slapd=$(command -v slapd || echo /usr/sbin/slapd)
    [ -x "$slapd" ] || { _auth_log "auth services: slapd not installed"; return 1; }
    port=$(_auth_free_port)
    tls_port=$(_auth_free_port)
    mkdir -p "$dir/data"
    # A throwaway CA and a certificate for 127.0.0.1, for the ldaps:// and StartTLS tests.
    local tls_conf=""
    if _auth_have openssl && openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" \
            -days 2 -subj "/CN=rampart auth-services CA" >/dev/null 2>&1 \
        && openssl req -newkey rsa:2048 -nodes -keyout "$dir/server.key" -out "$dir/server.csr" \
            -subj "/CN=127.0.0.1" >/dev/null 2>&1 \
        && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/ext.cnf" \
        && openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
            -out "$dir/server.pem" -days 2 -extfile "$dir/ext.cnf" >/dev/null 2>&1; then
        chmod 0644 "$dir/server.key"
        tls_conf="TLSCACertificateFile $dir/ca.pem
TLSCertificateFile $dir/server.pem
TLSCertificateKeyFile $dir/server.key"
    fi
    cat >"$dir/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $dir/slapd.pid
argsfile $dir/slapd.args
$tls_conf
database mdb
maxsize 104857600
suffix "dc=rampart,dc=test"
rootdn "cn=admin,dc=rampart,dc=test"
rootpw $AUTH_SERVICES_PASSWORD
directory $dir/data
access to attrs=userPassword by anonymous auth by * none
access to * by * read
EOF
    local urls="ldap://127.0.0.1:$port/"
    [ -n "$tls_conf" ] && urls="$urls ldaps://127.0.0.1:$tls_port/"
    "$slapd" -f "$dir/slapd.conf" -h "$urls" >"$dir/slapd.log" 2>&1 \
        || { _auth_log "auth services: slapd did not start (see $dir/slapd.log)"; return 1; }
    local url="ldap://127.0.0.1:$port"
    _auth_wait "ldapsearch -x -H $url -b '' -s base namingContexts" 100 \
        || { _auth_log "auth services: slapd not answering"; return 1; }
    ldapadd -x -H "$url" -D "cn=admin,dc=rampart,dc=test" -w "$AUTH_SERVICES_PASSWORD" >/dev/null <<EOF
dn: dc=rampart,dc=test
objectClass: dcObject
objectClass: organization
o: Rampart test
dc: rampart

dn: ou=people,dc=rampart,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=rampart,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: A
departmentNumber: mqtt-admins
userPassword: alice-pw

dn: uid=bob,ou=people,dc=rampart,dc=test
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: B
departmentNumber: sensors
userPassword: bob-pw
EOF
    [ $? -eq 0 ] || { _auth_log "auth services: LDAP entries not added"; return 1; }
    export RAMPART_TEST_LDAP_URL="$url"
    if [ -n "$tls_conf" ]; then
        export RAMPART_TEST_LDAPS_URL="ldaps://127.0.0.1:$tls_port"
        export RAMPART_TEST_LDAP_CA="$dir/ca.pem"
    fi
}

auth_services_start() {
    _auth_dir=$(mktemp -d /tmp/rampart-auth-services.XXXXXX)
    chmod 0755 "$_auth_dir"
    _auth_pg_stop=()
    _auth_start_pg || true
    _auth_start_mysql || true
    _auth_start_redis || true
    _auth_start_ldap || true
    _auth_log "auth services in $_auth_dir: pg=${RAMPART_TEST_PG_URL:+up} mysql=${RAMPART_TEST_MYSQL_URL:+up} redis=${RAMPART_TEST_REDIS_URL:+up} ldap=${RAMPART_TEST_LDAP_URL:+up}"
}

# Reads a pid file and ends that one process (TERM, then KILL after a bounded wait).
_auth_kill_pidfile() {
    local pid
    [ -s "$1" ] || return 0
    pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || return 0
    _auth_wait "! kill -0 $pid" 100 || kill -KILL "$pid" 2>/dev/null || true
}

auth_services_stop() {
    [ -n "$_auth_dir" ] && [ -d "$_auth_dir" ] || return 0
    [ "${#_auth_pg_stop[@]}" -gt 0 ] && "${_auth_pg_stop[@]}" >/dev/null 2>&1
    _auth_kill_pidfile "$_auth_dir/mysql/pid"
    _auth_kill_pidfile "$_auth_dir/redis/pid"
    _auth_kill_pidfile "$_auth_dir/ldap/slapd.pid"
    rm -rf "$_auth_dir"
    _auth_dir=""
    unset RAMPART_TEST_PG_URL RAMPART_TEST_MYSQL_URL RAMPART_TEST_REDIS_URL RAMPART_TEST_LDAP_URL \
        RAMPART_TEST_LDAPS_URL RAMPART_TEST_LDAP_CA
}
