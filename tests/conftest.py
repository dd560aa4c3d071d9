"""Fixtures that run the real broker binary for the black-box tests.

`broker` starts `$RAMPART_BIN serve --config <tmp>/rampart.toml` on a free loopback port with its own
data dir; `broker_factory` starts more, with config overrides. With RAMPART_TEST_PEER=mosquitto the
same fixtures start Mosquitto instead, to validate tests of behaviour both brokers share; tests
marked `rampart_only` are skipped then.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

PEER = os.environ.get("RAMPART_TEST_PEER", "").strip().lower()
START_TIMEOUT = float(os.environ.get("RAMPART_TEST_START_TIMEOUT", "20"))
STOP_TIMEOUT = 10.0


def pytest_collection_modifyitems(config, items):
    if not PEER:
        return
    skip = pytest.mark.skip(reason=f"rampart_only: not expected of peer {PEER}")
    for item in items:
        if "rampart_only" in item.keywords:
            item.add_marker(skip)
        for mark in item.iter_markers("peer_deviates"):
            if not mark.kwargs.get("peer") or mark.kwargs["peer"] == PEER:
                reason = mark.args[0] if mark.args else "known deviation of the peer"
                item.add_marker(pytest.mark.xfail(reason=f"{PEER}: {reason}", strict=False))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets fixtures see at teardown whether the test failed, to print the broker's log then.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


_GIVEN_PORTS: set = set()


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range (32768+): there, the
    kernel hands the same port to several callers in a row and to outgoing client sockets,
    so a broker started a moment later could find it taken. Never the same port twice in one
    process; random, so that parallel test processes rarely meet."""
    for _ in range(200):
        port = random.randrange(20000, 32768)
        if port in _GIVEN_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN_PORTS.add(port)
        return port
    raise RuntimeError("no free loopback port found in 200 tries")


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def toml_table(name: str, values: dict) -> str:
    lines = [f"[{name}]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def merge(base: dict, extra: Optional[dict]) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


class Broker:
    """One broker process on 127.0.0.1:port; restartable with the same port, config and data."""

    def __init__(self, workdir: Path, sections: Optional[dict] = None, extra_toml: str = "",
                 peer: str = PEER, env: Optional[dict] = None):
        self.peer = peer or "rampart"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "broker.log"
        self.proc: Optional[subprocess.Popen] = None
        self._log_file = None
        self.starts = 0
        self.env = dict(env or {})
        if self.peer == "rampart":
            self.config_path = workdir / "rampart.toml"
            self.config_path.write_text(self.rampart_config(sections or {}, extra_toml))
        elif self.peer == "mosquitto":
            self.config_path = workdir / "mosquitto.conf"
            self.config_path.write_text(self.mosquitto_config(sections or {}))
        else:
            raise RuntimeError(f"unknown RAMPART_TEST_PEER {peer!r}")

    @property
    def is_rampart(self) -> bool:
        return self.peer == "rampart"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def rampart_config(self, sections: dict, extra_toml: str) -> str:
        base = {
            "node": {"data_dir": str(self.data_dir)},
            "mqtt": {"max_packet_size": 1048576},
            "storage": {"backend": "memory"},
            "sys": {"interval_secs": 1},
            "log": {"level": "debug"},
        }
        tables = merge(base, sections)
        out = toml_table("node", tables.pop("node"))
        out += "\n[[listeners]]\nname = \"test\"\nkind = \"tcp\"\n"
        out += f"bind = \"{self.host}:{self.port}\"\n\n"
        out += "\n".join(toml_table(k, v) for k, v in tables.items())
        return out + ("\n" + extra_toml if extra_toml else "")

    def mosquitto_config(self, sections: dict) -> str:
        mqtt = sections.get("mqtt", {})
        lines = [
            "user root",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            f"sys_interval {sections.get('sys', {}).get('interval_secs', 1)}",
            "persistence false",
            "log_dest stderr",
            "log_type all",
            f"max_packet_size {mqtt.get('max_packet_size', 1048576)}",
        ]
        # The few [mqtt] knobs that have a Mosquitto spelling, so validation runs use the same limits.
        mapping = {
            "max_keep_alive": "max_keepalive",
            "topic_alias_maximum": "max_topic_alias",
            "max_inflight": "max_inflight_messages",
            "max_queued_messages": "max_queued_messages",
        }
        for key, value in mqtt.items():
            name = mapping.get(key)
            if name:
                lines.append(f"{name} {value}")
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        if self.is_rampart:
            binary = os.environ.get("RAMPART_BIN")
            if not binary:
                pytest.fail("RAMPART_BIN is not set: run scripts/test.sh, or export "
                            "RAMPART_BIN=target/debug/rampart (or RAMPART_TEST_PEER=mosquitto)")
            cmd = [binary, "serve", "--config", str(self.config_path)]
        else:
            binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            cmd = [binary, "-c", str(self.config_path)]
        # The broker dies with the pytest process that started it, even on SIGKILL of pytest.
        setpriv = shutil.which("setpriv")
        if setpriv:
            cmd = [setpriv, "--pdeathsig", "KILL", "--"] + cmd
        return cmd

    def start(self, timeout: float = START_TIMEOUT) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"---- start #{self.starts + 1}\n".encode())
        self._log_file.flush()
        # RAMPART_* variables are config overrides to the broker (an unknown one is an error),
        # so the test harness's own (RAMPART_BIN, RAMPART_TEST_*) must not reach it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_")}
        env.update(self.env)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     cwd=str(self.workdir), env=env)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.peer} exited with {self.proc.returncode} at start:\n"
                                   + self.log_tail())
            if port_accepts(self.host, self.port) and self._extra_binds_accept():
                return self
            time.sleep(0.02)  # polling the port; bounded by the deadline
        self.kill()
        raise RuntimeError(f"{self.peer} did not accept on {self.address} within {timeout}s:\n"
                           + self.log_tail())

    def _extra_binds_accept(self) -> bool:
        """Every other loopback listener of the config accepts too: the broker binds its
        listeners one after another (loading TLS material on the way), so the main port can
        accept before the rest are bound."""
        try:
            text = self.config_path.read_text()
        except OSError:
            return True
        binds = re.findall(r'^bind\s*=\s*"(127\.0\.0\.1|\[::1\]):(\d+)"', text, re.M)
        return all(port_accepts(h.strip("[]"), int(p)) for h, p in binds
                   if int(p) != self.port)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> Optional[int]:
        """Waits for the process to exit; returns its exit code, or None on timeout."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._close_log()

    def restart(self, timeout: float = STOP_TIMEOUT) -> "Broker":
        self.stop(timeout)
        return self.start()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"<Broker {self.peer} {self.address}>"


@pytest.fixture
def broker_factory(tmp_path_factory, request) -> Callable[..., Broker]:
    """Starts brokers with overrides: broker_factory(mqtt={...}, sys={...}, extra_toml=...).

    Keyword arguments other than `extra_toml`, `start` and `env` (extra environment, e.g.
    RAMPART_MQTT__MAX_PACKET_SIZE) are TOML sections merged over the defaults. All started
    brokers are stopped at the end of the test.
    """
    started: list[Broker] = []

    def make(extra_toml: str = "", start: bool = True, env: Optional[dict] = None,
             **sections) -> Broker:
        workdir = tmp_path_factory.mktemp("broker")
        b = Broker(workdir, sections, extra_toml, env=env)
        started.append(b)
        return b.start() if start else b

    yield make

    failed = getattr(request.node, "rep_call", None)
    for b in started:
        b.stop()
        if failed is not None and failed.failed:
            print(f"\n==== {b!r} log ({b.log_path}) ====\n{b.log_tail(200)}")


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A broker with the default test config."""
    return broker_factory()


@pytest.fixture
def peer() -> str:
    return PEER or "rampart"


@pytest.fixture
def clients(broker):
    """Factory of paho clients on `broker`: clients.new(version=5|4, ...); all closed at the end."""
    from mqtt_client import Clients

    cs = Clients(broker)
    yield cs
    cs.close()
