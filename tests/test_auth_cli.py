"""`rampart ctl users add|list|delete|passwd|import` and `rampart passwd` against a data
directory, checked by logging in through the broker (issue 5)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess

import pytest

from auth_helpers import BUILTIN, ctl
from mqtt_raw import RawClient

pytestmark = pytest.mark.rampart_only

ACL = '\n[acl]\nsources = ["identity"]\n'


@pytest.fixture
def stopped(broker_factory):
    b = broker_factory(start=False, extra_toml=BUILTIN.replace("{auth_extra}", "") + ACL,
                       storage={"backend": "redb"})
    b.config_path.chmod(0o600)
    return b


def rc_of(broker, user, password, version=5):
    c = RawClient(broker.host, broker.port, version)
    ack = c.connect("cli-test", username=user, password=password, expect_rc=None)
    c.close()
    return ack.reason


def users(broker) -> str:
    r = ctl(broker, "ctl", "users", "list")
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_users_add_list_passwd_delete(stopped):
    b = stopped
    r = ctl(b, "ctl", "users", "add", "alice", "--password-stdin", "--acl",
            "allow publish a/${username}/#", "--group", "ops", stdin="first-pw\n")
    assert r.returncode == 0, r.stderr
    r = ctl(b, "ctl", "users", "add", "root", "--password-stdin", "--superuser", stdin="root-pw\n")
    assert r.returncode == 0, r.stderr
    # Adding an existing user is refused; a bad rule is refused before anything is written.
    r = ctl(b, "ctl", "users", "add", "alice", "--password-stdin", stdin="x\n")
    assert r.returncode != 0 and "exists" in r.stderr
    r = ctl(b, "ctl", "users", "add", "eve", "--password-stdin", "--acl", "allow jump x",
            stdin="x\n")
    assert r.returncode != 0
    out = users(b)
    assert "first-pw" not in out and "root-pw" not in out and "$argon2id" not in out
    lines = {line.split("\t")[0]: line.split("\t") for line in out.splitlines() if "\t" in line}
    assert set(lines) == {"alice", "root"}
    assert lines["root"][1] == "superuser" and lines["alice"][1] == "-"
    assert "argon2" in lines["alice"][2]
    assert "allow publish a/${username}/#" in lines["alice"][3]
    assert out.strip().endswith("2 user(s)")

    b.start()
    assert rc_of(b, "alice", "first-pw") == 0
    assert rc_of(b, "root", "root-pw") == 0
    b.stop()

    r = ctl(b, "ctl", "users", "passwd", "alice", "--password-stdin", stdin="second-pw\n")
    assert r.returncode == 0, r.stderr
    r = ctl(b, "ctl", "users", "passwd", "nobody", "--password-stdin", stdin="x\n")
    assert r.returncode != 0 and "no user" in r.stderr
    r = ctl(b, "ctl", "users", "delete", "root")
    assert r.returncode == 0, r.stderr
    r = ctl(b, "ctl", "users", "delete", "root")
    assert r.returncode != 0
    assert "root" not in users(b)

    b.start()
    assert rc_of(b, "alice", "first-pw") == 0x86
    assert rc_of(b, "alice", "second-pw") == 0
    assert rc_of(b, "root", "root-pw") == 0x86
    assert rc_of(b, "root", "root-pw", version=4) == 4  # 3.1.1: bad user name or password


def mosquitto_sha512(password: str, salt: bytes) -> str:
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def mosquitto_pbkdf2(password: str, salt: bytes, iterations: int = 101) -> str:
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def test_import_mosquitto_password_file(stopped, tmp_path):
    b = stopped
    pwfile = tmp_path / "passwd"
    lines = [f"old:{mosquitto_sha512('old-pw', os.urandom(12))}",
             f"new:{mosquitto_pbkdf2('new-pw', os.urandom(12))}"]
    tool = shutil.which("mosquitto_passwd")
    if tool:
        # The real tool's output too, when it is installed.
        made = tmp_path / "made"
        subprocess.run([tool, "-c", "-b", str(made), "tool", "tool-pw"], check=True,
                       capture_output=True, timeout=30)
        lines.append(made.read_text().strip())
    pwfile.write_text("# a comment\n" + "\n".join(lines) + "\n")
    r = ctl(b, "ctl", "users", "add", "old", "--password-stdin", stdin="kept-pw\n")
    assert r.returncode == 0, r.stderr
    r = ctl(b, "ctl", "users", "import", str(pwfile))
    assert r.returncode == 0, r.stderr
    n = len(lines)
    assert f"imported {n - 1} user(s), kept 1 existing" in r.stdout
    out = users(b)
    assert "mosquitto" in out.lower()
    b.start()
    assert rc_of(b, "old", "kept-pw") == 0  # existing users are left alone
    assert rc_of(b, "new", "new-pw") == 0
    assert rc_of(b, "new", "wrong") == 0x86
    if tool:
        assert rc_of(b, "tool", "tool-pw") == 0
    b.stop()
    r = ctl(b, "ctl", "users", "import", "--replace", str(pwfile))
    assert r.returncode == 0, r.stderr
    b.start()
    assert rc_of(b, "old", "old-pw") == 0
    assert rc_of(b, "old", "kept-pw") == 0x86
    b.stop()
    bad = tmp_path / "bad"
    bad.write_text("x:plaintext\n")
    r = ctl(b, "ctl", "users", "import", str(bad))
    assert r.returncode != 0 and ":1:" not in r.stdout and "line 1" in r.stderr


def test_passwd_prints_a_hash_the_broker_accepts(stopped, tmp_path):
    binary = os.environ["RAMPART_BIN"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_")}
    r = subprocess.run([binary, "passwd", "--username", "carol", "--password-stdin"],
                       input="carol-pw\n", capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("carol:$argon2id$") and "carol-pw" not in line
    f = tmp_path / "carol"
    f.write_text(line + "\n")
    r = ctl(stopped, "ctl", "users", "import", str(f))
    assert r.returncode == 0, r.stderr
    stopped.start()
    assert rc_of(stopped, "carol", "carol-pw") == 0
    assert rc_of(stopped, "carol", "carol-pX") == 0x86
