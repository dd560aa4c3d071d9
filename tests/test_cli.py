"""The rampart command line: --version, --help, check-config, serve with bad config, env
overrides. Rampart only (these are Rampart's own interface)."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import free_port, port_accepts

pytestmark = pytest.mark.rampart_only

ROOT = Path(__file__).resolve().parent.parent


def rampart(*args, env=None, timeout=20):
    binary = os.environ.get("RAMPART_BIN")
    if not binary:
        pytest.fail("RAMPART_BIN is not set")
    e = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_")}
    e.update(env or {})
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                          env=e, stdin=subprocess.DEVNULL)


def workspace_version() -> str:
    import tomllib
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def good_config(tmp_path, port=None) -> Path:
    port = port or free_port()
    p = tmp_path / "good.toml"
    p.write_text(f"""[node]
data_dir = "{tmp_path / 'data'}"

[[listeners]]
name = "test"
kind = "tcp"
bind = "127.0.0.1:{port}"

[mqtt]
max_packet_size = 1048576

[storage]
backend = "memory"

[sys]
interval_secs = 1

[log]
level = "info"
""")
    return p


# Each line that is wrong is marked with the key its error must name.
BAD = """[node]
data_dir = "{data}"
[[listeners]]
name = "test"
kind = "tcp"
bind = "127.0.0.1:{port}"
[mqtt]
bogus_key = 1
max_packet_size = "big"
receive_maximum = 0
[sys]
interval_secs = 0
"""
BAD_ERRORS = [(8, "mqtt.bogus_key"), (9, "mqtt.max_packet_size"),
              (10, "mqtt.receive_maximum"), (12, "sys.interval_secs")]


def bad_config(tmp_path, port=None) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(BAD.format(data=tmp_path / "data", port=port or free_port()))
    return p


def assert_lists_all_errors(output: str, path: Path):
    for line, key in BAD_ERRORS:
        pattern = rf"{re.escape(str(path))}:{line}: {re.escape(key)}: \S"
        assert re.search(pattern, output), f"missing `{path}:{line}: {key}: ...` in:\n{output}"


def test_version():
    r = rampart("--version")
    assert r.returncode == 0, r.stderr
    assert "rampart" in r.stdout.lower()
    assert workspace_version() in r.stdout


def test_help_lists_subcommands():
    r = rampart("--help")
    assert r.returncode == 0, r.stderr
    for word in ("serve", "check-config"):
        assert word in r.stdout, f"--help does not mention {word}:\n{r.stdout}"
    r = rampart("serve", "--help")
    assert r.returncode == 0 and "--config" in r.stdout


def test_unknown_subcommand_fails():
    r = rampart("no-such-command")
    assert r.returncode != 0


def test_check_config_good_file(tmp_path):
    """check-config on a valid file exits 0 and prints the limits in effect."""
    p = good_config(tmp_path)
    r = rampart("check-config", str(p))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "max_packet_size" in out and "1048576" in out, out


def test_check_config_reports_all_errors(tmp_path):
    """Unknown key, wrong type and out-of-range values are all reported at once as
    `file:line: key: message`, and the exit code is non-zero."""
    p = bad_config(tmp_path)
    r = rampart("check-config", str(p))
    assert r.returncode != 0
    assert_lists_all_errors(r.stdout + r.stderr, p)


def test_check_config_syntax_error_has_line(tmp_path):
    p = tmp_path / "syntax.toml"
    p.write_text('[node]\ndata_dir = "x"\n[mqtt\nmax_packet_size = 1\n')
    r = rampart("check-config", str(p))
    assert r.returncode != 0
    assert re.search(rf"{re.escape(str(p))}:\d+: ", r.stdout + r.stderr), r.stdout + r.stderr


def test_check_config_missing_file(tmp_path):
    r = rampart("check-config", str(tmp_path / "absent.toml"))
    assert r.returncode != 0
    assert "absent.toml" in r.stdout + r.stderr


def test_serve_with_bad_config_does_not_start(tmp_path):
    """`serve` refuses a bad config: it prints every error, exits non-zero, never listens."""
    port = free_port()
    p = bad_config(tmp_path, port)
    r = rampart("serve", "--config", str(p), timeout=20)
    assert r.returncode != 0
    assert_lists_all_errors(r.stdout + r.stderr, p)
    assert not port_accepts("127.0.0.1", port)


def test_env_override_applies(tmp_path):
    """RAMPART_<SECTION>__<KEY> overrides a config key (seen by check-config)."""
    p = good_config(tmp_path)
    r = rampart("check-config", str(p), env={"RAMPART_MQTT__MAX_PACKET_SIZE": "4096"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "4096" in out


def test_env_override_error_reported(tmp_path):
    p = good_config(tmp_path)
    r = rampart("check-config", str(p), env={"RAMPART_MQTT__MAX_PACKET_SIZE": "lots"})
    assert r.returncode != 0
    assert "RAMPART_MQTT__MAX_PACKET_SIZE" in r.stdout + r.stderr


def test_env_override_reaches_serve(broker_factory):
    """An env override changes the running broker: CONNACK announces the new Maximum Packet
    Size."""
    from mqtt_raw import raw
    b = broker_factory(env={"RAMPART_MQTT__MAX_PACKET_SIZE": "2048"})
    with raw(b, 5) as c:
        assert c.connect("envmps").props.get("maximum_packet_size") == 2048


def test_logs_never_contain_payloads_or_passwords(broker, clients):
    """Debug logs carry no payload bytes and no password (DESIGN: secrets never in logs)."""
    c = clients.new(username="u", password="hunter2-secret", expect_rc=None)
    if c.connacks.empty() and c.disconnected.is_set():
        pass
    sub = clients.new()
    sub.subscribe("log/t", 1)
    clients.new().publish("log/t", b"PAYLOAD-MARKER-73", qos=1)
    sub.expect_message()
    broker.stop()
    text = broker.log_text()
    assert "PAYLOAD-MARKER-73" not in text
    assert "hunter2-secret" not in text


def test_serve_exits_on_port_in_use(tmp_path, broker):
    """A listener that cannot bind is an error at start (non-zero exit), not a silent run."""
    p = good_config(tmp_path, broker.port)
    r = rampart("serve", "--config", str(p), timeout=20)
    assert r.returncode != 0
