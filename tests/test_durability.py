"""Durable state (issue 3): sessions, queued QoS 1/2 messages, QoS 2 state and retained
messages survive restart and SIGKILL.

The contract (README "Durability"): once a publisher has PUBACK (QoS 1) or PUBREC (QoS 2), the
message is on disk for every persistent session it was routed to; a subscriber that
acknowledged a QoS 2 message never receives it again as new.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.rampart_only

DEADLINE = 60.0


def redb(broker_factory, **mqtt_cfg):
    sections = {"storage": {"backend": "redb"}, "log": {"level": "info"}}
    if mqtt_cfg:
        sections["mqtt"] = mqtt_cfg
    return broker_factory(env={"RUST_LOG": "info,rampart_broker::connection=debug"}, **sections)


class Sub:
    """A persistent (clean session false) paho subscriber that reconnects by itself."""

    def __init__(self, broker, client_id: str, topic: str, qos: int):
        self.got: list[tuple[str, bytes, int]] = []
        self.trace: list = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.topic, self.qos = topic, qos
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.reconnect_delay_set(0.05, 0.3)
        c.max_inflight_messages_set(100)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        self.c = c
        self.broker = broker

    def _on_connect(self, client, userdata, flags, rc, props):
        with self.lock:
            self.got.append(("<connect>", str(flags.session_present).encode(), -1))
        self.connected.set()
        if not flags.session_present:
            client.subscribe(self.topic, self.qos)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.got.append((msg.topic, msg.payload, msg.qos))
            self.trace.append((msg.topic, msg.payload, msg.mid, msg.dup, len(self.got)))

    def start(self):
        self.c.connect(self.broker.host, self.broker.port, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(10), "subscriber did not connect"
        assert self.subscribed.wait(10), "subscriber did not subscribe"
        return self

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()

    def payloads(self, topic: str) -> list[int]:
        with self.lock:
            return [int(p) for t, p, _ in self.got if t == topic]


class Pub:
    """Publishes numbered messages on one topic as fast as its window allows and records the
    numbers whose PUBACK/PUBCOMP arrived. A persistent session: after a crash paho re-sends
    what was not acknowledged (QoS 2 with DUP), which the broker must not route twice."""

    def __init__(self, broker, topic: str, qos: int):
        self.topic, self.qos = topic, qos
        self.acked: set[int] = set()
        self.mids: dict[int, int] = {}
        self.lock = threading.Lock()
        self.next = 0
        self.stop_flag = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dur-pub-" + topic.replace("/", "-"),
                        clean_session=False, protocol=mqtt.MQTTv311)
        c.reconnect_delay_set(0.05, 0.3)
        c.max_inflight_messages_set(20)
        c.max_queued_messages_set(20)
        c.on_publish = self._on_publish
        self.c = c
        self.broker = broker
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, client, userdata, mid, rc, props):
        with self.lock:
            n = self.mids.pop(mid, None)
            if n is not None and not rc.is_failure:
                self.acked.add(n)

    def _run(self):
        while not self.stop_flag.is_set():
            if not self.c.is_connected():
                time.sleep(0.01)  # paced publisher loop, bounded by stop_flag
                continue
            with self.lock:
                n = self.next
            info = self.c.publish(self.topic, str(n).encode(), qos=self.qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                with self.lock:
                    self.mids[info.mid] = n
                    self.next += 1
            else:
                time.sleep(0.005)
            if self.next >= 20000:
                break

    def start(self):
        self.c.connect(self.broker.host, self.broker.port, keepalive=30)
        self.c.loop_start()
        self.thread.start()
        return self

    def stop(self):
        self.stop_flag.set()
        self.thread.join(10)
        self.c.disconnect()
        self.c.loop_stop()


class RawQos2Pub:
    """A QoS 2 publisher written to the letter of the spec (paho re-publishes some messages
    whose PUBREC it already had after a reconnect, as new, which would blur this test): one
    message at a time; after a reconnect it resends PUBLISH (DUP) if PUBREC had not arrived,
    PUBREL if it had. A message counts as acknowledged at PUBREC."""

    def __init__(self, broker, topic: str, client_id: str):
        self.broker, self.topic, self.client_id = broker, topic, client_id
        self.acked: set[int] = set()
        self.stop_flag = threading.Event()
        self.sock = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n % 128
            n //= 128
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    @staticmethod
    def _str(s: bytes) -> bytes:
        return len(s).to_bytes(2, "big") + s

    def _packet(self, first: int, body: bytes) -> bytes:
        return bytes([first]) + self._varint(len(body)) + body

    def _read(self) -> tuple[int, bytes]:
        def exact(n):
            buf = b""
            while len(buf) < n:
                chunk = self.sock.recv(n - len(buf))
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            return buf
        first = exact(1)[0]
        mult, length = 1, 0
        while True:
            b = exact(1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return first, exact(length)

    def _connect(self):
        import socket
        self.sock = socket.create_connection((self.broker.host, self.broker.port), timeout=5)
        body = self._str(b"MQTT") + bytes([4, 0x00, 0, 30]) + self._str(self.client_id.encode())
        self.sock.sendall(self._packet(0x10, body))
        first, _ = self._read()
        assert first >> 4 == 2

    def is_connected(self):
        return self.sock is not None

    def _run(self):
        n, pid, stage = 0, 1, "publish"
        dup = False
        while not self.stop_flag.is_set() and n < 20000:
            try:
                if self.sock is None:
                    self._connect()
                    dup = True
                if stage == "publish":
                    first = 0x30 | (0x08 if dup else 0) | (2 << 1)
                    body = self._str(self.topic.encode()) + pid.to_bytes(2, "big") + str(n).encode()
                    self.sock.sendall(self._packet(first, body))
                    t, b = self._read()
                    assert t >> 4 == 5 and int.from_bytes(b[:2], "big") == pid, (t, b)
                    self.acked.add(n)
                    stage = "release"
                self.sock.sendall(self._packet(0x62, pid.to_bytes(2, "big")))
                t, b = self._read()
                assert t >> 4 == 7 and int.from_bytes(b[:2], "big") == pid, (t, b)
                n, pid, stage, dup = n + 1, pid % 65535 + 1, "publish", False
            except (OSError, ConnectionError):
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
                time.sleep(0.05)  # reconnect pacing while the broker restarts; bounded by stop_flag

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_flag.set()
        self.thread.join(10)
        if self.sock is not None:
            self.sock.sendall(self._packet(0xE0, b""))
            self.sock.close()


def wait_for(cond, timeout=DEADLINE, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)  # polling shared state filled by paho threads; bounded
    raise AssertionError(f"timed out waiting for {what}")


def test_acknowledged_messages_survive_sigkill(broker_factory):
    """Publishers at load (QoS 1 and QoS 2) toward persistent subscribers, one online and one
    offline; the broker is SIGKILLed at random moments three times. Every acknowledged message
    arrives (QoS 1 at least once, QoS 2 exactly once) in order per publisher, and retained
    state and subscriptions are intact."""
    b = redb(broker_factory, max_queued_messages=100000, max_queued_bytes=1 << 30)
    rnd = random.Random(1234)
    online = Sub(b, "dur-online", "dur/#", 2).start()
    offline = Sub(b, "dur-offline", "dur/#", 2).start()
    offline.stop()  # persistent session stays, subscriber away
    retain = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    retain.connect(b.host, b.port)
    retain.loop_start()
    retain.publish("dur-retained/a", b"kept", qos=1, retain=True).wait_for_publish(10)
    retain.disconnect()
    retain.loop_stop()

    p1 = Pub(b, "dur/q1", 1).start()
    p2 = RawQos2Pub(b, "dur/q2", "dur-pub-q2").start()
    for _ in range(3):
        time.sleep(rnd.uniform(0.4, 1.2))  # let load build up before a kill at a random moment
        b.proc.send_signal(signal.SIGKILL)
        b.wait(10)
        b.start()
        wait_for(lambda: online.connected.is_set() and p1.c.is_connected()
                 and p2.is_connected(), 20, "clients to reconnect")
    time.sleep(0.5)
    p1.stop()
    p2.stop()
    acked1, acked2 = sorted(p1.acked), sorted(p2.acked)
    assert len(acked1) > 50 and len(acked2) > 20, (len(acked1), len(acked2))

    def check(sub: Sub, name: str):
        wait_for(lambda: set(acked1) <= set(sub.payloads("dur/q1"))
                 and set(acked2) <= set(sub.payloads("dur/q2")),
                 what=f"{name}: every acknowledged message")
        q2 = sub.payloads("dur/q2")
        dups = {n for n in q2 if q2.count(n) > 1}
        if dups:
            d0 = min(dups)
            detail = [t for t in sub.trace if t[0] == "dur/q2" and int(t[1]) == d0]
            connects = [i for i, g in enumerate(sub.got) if g[0] == "<connect>"]
            raise AssertionError(f"{name}: QoS 2 messages delivered twice: {sorted(dups)[:10]}; "
                                 f"first: {detail}; connects at {connects}")
        for topic in ("dur/q1", "dur/q2"):
            seen, first = set(), []
            for n in sub.payloads(topic):
                if n not in seen:
                    seen.add(n)
                    first.append(n)
            assert first == sorted(first), f"{name}: {topic} out of order"

    check(online, "online subscriber")
    offline2 = Sub(b, "dur-offline", "dur/#", 2)
    offline2.start_subscribed = True
    offline2.c.connect(b.host, b.port)
    offline2.c.loop_start()
    assert offline2.connected.wait(10)
    check(offline2, "offline subscriber")
    # Its subscription survived (session present: it did not subscribe again).
    assert not offline2.subscribed.is_set(), "offline subscriber's session was not present"
    offline2.stop()
    online.stop()

    got = []
    r = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    r.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.retain))
    r.on_connect = lambda c, u, f, rc, p: c.subscribe("dur-retained/#", 1)
    r.connect(b.host, b.port)
    r.loop_start()
    wait_for(lambda: got, 10, "retained message")
    r.disconnect()
    r.loop_stop()
    assert got == [("dur-retained/a", b"kept", True)]


def test_graceful_restart_keeps_sessions_and_queues(broker_factory):
    """SIGTERM then start: the queued messages of an offline persistent session and its
    subscriptions are restored."""
    b = redb(broker_factory)
    s = Sub(b, "gr-sub", "gr/#", 1).start()
    s.stop()
    p = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    p.connect(b.host, b.port)
    p.loop_start()
    for i in range(50):
        p.publish("gr/t", str(i).encode(), qos=1).wait_for_publish(10)
    p.disconnect()
    p.loop_stop()
    assert b.stop() == 0
    b.start()
    s2 = Sub(b, "gr-sub", "gr/#", 1)
    s2.c.connect(b.host, b.port)
    s2.c.loop_start()
    wait_for(lambda: len(s2.payloads("gr/t")) >= 50, 20, "queued messages")
    assert s2.payloads("gr/t")[:50] == list(range(50))
    assert not s2.subscribed.is_set()
    s2.stop()


def test_memory_storage_forgets_on_restart(broker_factory):
    """storage = "memory" loses sessions on restart, as documented."""
    b = broker_factory(storage={"backend": "memory"})
    s = Sub(b, "mem-sub", "mem/#", 1).start()
    s.stop()
    b.restart()
    s2 = Sub(b, "mem-sub", "mem/#", 1).start()
    assert s2.subscribed.is_set()  # session not present: it had to subscribe again
    s2.stop()


def test_damaged_store_is_refused_and_left_alone(broker_factory):
    """A damaged store is reported with a clear error, the broker does not start, and the
    file is not modified or wiped."""
    b = redb(broker_factory)
    s = Sub(b, "dmg-sub", "dmg/#", 1).start()
    s.stop()
    assert b.stop() == 0
    path = b.data_dir / "rampart.redb"
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(random.Random(7).getrandbits(8) for _ in range(4096))
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(RuntimeError) as e:
        b.start(timeout=20)
    assert "store" in str(e.value).lower()
    assert path.read_bytes() == before


def test_store_check_command(broker_factory):
    """`rampart store check` verifies a store and reports what it holds."""
    import os
    import subprocess
    b = redb(broker_factory)
    s = Sub(b, "chk-sub", "chk/#", 1).start()
    s.stop()
    assert b.stop() == 0
    out = subprocess.run([os.environ["RAMPART_BIN"], "store", "check", "--data-dir",
                          str(b.data_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "sessions: 1" in out.stdout and "OK" in out.stdout
