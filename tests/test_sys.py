"""$SYS topics (Mosquitto's conventional names), published every sys.interval_secs (1 here).

Asserted names: $SYS/broker/version, uptime, clients/connected, clients/total,
messages/received, messages/sent, bytes/received, bytes/sent, subscriptions/count and
"retained messages/count". Counters are decimal integers; uptime starts with one.
"""

import re
import time

import pytest

NAMES = ["version", "uptime", "clients/connected", "clients/total", "messages/received",
         "messages/sent", "bytes/received", "bytes/sent", "subscriptions/count",
         "retained messages/count"]
COUNTERS = NAMES[2:]


def number(payload: bytes) -> int:
    m = re.match(rb"\s*(\d+)", payload)
    assert m, f"not a number: {payload!r}"
    return int(m.group(1))


class SysWatcher:
    def __init__(self, clients):
        self.c = clients.new()
        self.latest: dict = {}
        self.c.subscribe("$SYS/broker/#", 0)

    def pump(self, timeout):
        m = self.c.expect_message(timeout)
        name = m.topic[len("$SYS/broker/"):]
        self.latest[name] = m.payload
        return name, m.payload

    def wait_all(self, names, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not all(n in self.latest for n in names):
            left = deadline - time.monotonic()
            missing = [n for n in names if n not in self.latest]
            assert left > 0, f"$SYS topics not published within {timeout}s: {missing}"
            self.pump(left)
        return {n: self.latest[n] for n in names}

    def wait_for(self, name, pred, timeout=6.0):
        """Waits until `name` has a value satisfying pred (its current value counts)."""
        deadline = time.monotonic() + timeout
        if name in self.latest and pred(number(self.latest[name])):
            return number(self.latest[name])
        while True:
            left = deadline - time.monotonic()
            assert left > 0, (f"$SYS/broker/{name} never satisfied the condition; last "
                              f"{self.latest.get(name)!r}")
            n, payload = self.pump(left)
            if n == name and pred(number(payload)):
                return number(payload)


@pytest.fixture
def sysw(clients):
    return SysWatcher(clients)


def test_all_names_published(sysw, broker):
    """Every asserted $SYS/broker/... topic is published, counters as integers."""
    values = sysw.wait_all(NAMES)
    assert values["version"].strip()
    for n in COUNTERS + ["uptime"]:
        number(values[n])
    if broker.is_rampart:
        assert b"rampart" in values["version"].lower()
        for n in COUNTERS:
            assert re.fullmatch(rb"\d+", values[n]), (n, values[n])


def test_published_every_interval(sysw):
    """The statistics are republished every interval (1s): uptime advances."""
    first = sysw.wait_for("uptime", lambda v: True)
    sysw.wait_for("uptime", lambda v: v >= first + 2, timeout=6)


def test_client_counts(sysw, clients):
    """clients/connected counts current connections; clients/total >= connected."""
    base = sysw.wait_for("clients/connected", lambda v: v >= 1)
    extra = [clients.new() for _ in range(3)]
    sysw.wait_for("clients/connected", lambda v: v >= base + 3)
    total = sysw.wait_for("clients/total", lambda v: v >= base + 3)
    assert total >= base + 3
    for c in extra:
        c.disconnect()
    sysw.wait_for("clients/connected", lambda v: v <= base)


def test_message_and_byte_counters(sysw, clients):
    """messages/received|sent and bytes/received|sent grow with traffic."""
    start = {n: sysw.wait_for(n, lambda v: True)
             for n in ["messages/received", "messages/sent", "bytes/received", "bytes/sent"]}
    sub = clients.new()
    sub.subscribe("cnt/t", 1)
    pub = clients.new()
    for _ in range(5):
        pub.publish("cnt/t", b"x" * 1000, qos=1)
    sub.expect_messages(5)
    sysw.wait_for("messages/received", lambda v: v >= start["messages/received"] + 5)
    sysw.wait_for("messages/sent", lambda v: v >= start["messages/sent"] + 5)
    sysw.wait_for("bytes/received", lambda v: v >= start["bytes/received"] + 5000)
    sysw.wait_for("bytes/sent", lambda v: v >= start["bytes/sent"] + 5000)


def test_subscription_count(sysw, clients):
    base = sysw.wait_for("subscriptions/count", lambda v: v >= 1)
    c = clients.new()
    c.subscribe([("sc/1", 0), ("sc/2", 1), ("sc/+/x", 2)])
    sysw.wait_for("subscriptions/count", lambda v: v >= base + 3)
    c.unsubscribe(["sc/1", "sc/2", "sc/+/x"])
    sysw.wait_for("subscriptions/count", lambda v: v <= base)


def test_retained_count(sysw, clients):
    name = "retained messages/count"
    base = sysw.wait_for(name, lambda v: True)
    pub = clients.new()
    pub.publish("rc/1", b"a", qos=1, retain=True)
    pub.publish("rc/2", b"b", qos=1, retain=True)
    sysw.wait_for(name, lambda v: v >= base + 2)
    pub.publish("rc/1", b"", qos=1, retain=True)
    pub.publish("rc/2", b"", qos=1, retain=True)
    if clients.broker.is_rampart:
        # (Mosquitto's count also includes its own retained $SYS topics, which keep appearing.)
        sysw.wait_for(name, lambda v: v <= base)


@pytest.mark.slow
def test_sys_not_matched_by_hash(clients):
    """[MQTT-4.7.2-1] a "#" subscriber receives no $SYS messages (waits 2.5 intervals)."""
    c = clients.new()
    c.subscribe("#", 0)
    c.expect_no_message(2.5)


@pytest.mark.rampart_only
def test_clients_cannot_publish_to_sys(clients, sysw):
    """Rampart does not let clients publish into $SYS: the message is not forwarded."""
    sysw.wait_all(["version"])
    pub = clients.new()
    pub.publish("$SYS/broker/version", b"forged", qos=1, wait=False)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        try:
            name, payload = sysw.pump(deadline - time.monotonic())
        except AssertionError:
            break
        assert payload != b"forged"


@pytest.mark.rampart_only
def test_limits_and_auth_counters(sysw):
    """Abuse-protection and authentication counters are published with the rest."""
    for name in ("limits/connections/refused", "limits/connects/banned", "limits/overloaded",
                 "auth/allowed", "auth/backend/errors", "auth/acl/denied"):
        assert sysw.wait_for(name, lambda v: v >= 0) >= 0
    assert sysw.wait_for("limits/overloaded", lambda v: True) == 0
