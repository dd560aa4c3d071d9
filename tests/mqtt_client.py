"""paho-mqtt 2.x clients for the tests, with bounded waits for every event.

The network loop runs in our own thread (not loop_start) so that a lost connection is NOT
reconnected behind the test's back: takeover, keep alive and shutdown tests depend on that.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Optional

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

TIMEOUT = float(os.environ.get("RAMPART_TEST_TIMEOUT", "5"))
# How long a test waits to conclude that something did NOT arrive (when no barrier is possible).
QUIET = float(os.environ.get("RAMPART_TEST_QUIET", "0.5"))

_ids = itertools.count()


def unique_id(prefix: str = "c") -> str:
    """A client id unique across this run's workers and tests."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


def props(packet_type: int, **values) -> Properties:
    """Properties(packet_type) with paho attribute names, e.g. props(PUBLISH, ContentType="x")."""
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


PUBLISH = PacketTypes.PUBLISH
CONNECT = PacketTypes.CONNECT
SUBSCRIBE = PacketTypes.SUBSCRIBE
DISCONNECT = PacketTypes.DISCONNECT
WILLMESSAGE = PacketTypes.WILLMESSAGE


@dataclass
class Connack:
    reason_code: int
    session_present: bool
    properties: Optional[Properties]


def rc_value(rc) -> int:
    """An int from paho's ReasonCode / int / MQTTErrorCode."""
    if hasattr(rc, "value"):
        return int(rc.value)
    return int(rc)


class Client:
    """One paho client (version 5 or 4 = 3.1.1) connected to `broker`."""

    def __init__(self, broker, client_id: Optional[str] = None, version: int = 5,
                 clean: bool = True, manual_ack: bool = False):
        self.broker = broker
        self.version = version
        self.client_id = unique_id() if client_id is None else client_id
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        kw = {}
        if version != 5:
            kw["clean_session"] = clean
        self.clean = clean
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=protocol, **kw)
        self.c.max_inflight_messages_set(65535 if version == 5 else 100)
        if manual_ack:
            self.c.manual_ack_set(True)
        self.messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
        self.connacks: "queue.Queue[Connack]" = queue.Queue()
        self.subacks: dict = {}
        self.unsubacks: dict = {}
        self.published: dict = {}
        self._acks = threading.Condition()
        self.disconnected = threading.Event()
        self.disconnect_reason: Optional[int] = None
        self.disconnect_props: Optional[Properties] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_publish = self._on_publish

    # ---- callbacks (network thread) -----------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connacks.put(Connack(rc_value(reason_code), bool(flags.session_present),
                                  properties if self.version == 5 else None))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = rc_value(reason_code)
        self.disconnect_props = properties
        self.disconnected.set()

    def _on_message(self, client, userdata, message):
        self.messages.put(message)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._acks:
            self.subacks[mid] = [rc_value(r) for r in reason_codes]
            self._acks.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._acks:
            self.unsubacks[mid] = [rc_value(r) for r in reason_codes]
            self._acks.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._acks:
            self.published[mid] = rc_value(reason_code)
            self._acks.notify_all()

    def _wait_ack(self, table: dict, mid: int, what: str, timeout: float):
        with self._acks:
            ok = self._acks.wait_for(lambda: mid in table, timeout)
            assert ok, f"{self.client_id}: no {what} for mid {mid} within {timeout}s"
            return table.pop(mid)

    def _loop(self):
        while not self._stop.is_set():
            rc = self.c.loop(0.02)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                if not self.disconnected.is_set():
                    self.disconnect_reason = self.disconnect_reason or -1
                    self.disconnected.set()
                return

    # ---- actions ----------------------------------------------------------------------------

    def connect(self, clean: Optional[bool] = None, keepalive: int = 60,
                properties: Optional[Properties] = None, will: Optional[dict] = None,
                session_expiry: Optional[int] = None, expect_rc: Optional[int] = 0,
                username: Optional[str] = None, password: Optional[str] = None,
                timeout: float = TIMEOUT) -> Connack:
        """Connects and waits for the CONNACK (which must carry `expect_rc` unless None).

        will: {"topic", "payload", "qos", "retain", "properties"}.
        """
        if will:
            self.c.will_set(will["topic"], will.get("payload", b""), will.get("qos", 0),
                            will.get("retain", False), will.get("properties"))
        if username is not None:
            self.c.username_pw_set(username, password)
        kw = {}
        if self.version == 5:
            clean = True if clean is None else clean
            kw["clean_start"] = clean
            if session_expiry is not None:
                properties = properties or Properties(CONNECT)
                properties.SessionExpiryInterval = session_expiry
            kw["properties"] = properties
        self.disconnected.clear()
        self._stop.clear()
        self.c.connect(self.broker.host, self.broker.port, keepalive, **kw)
        self._thread = threading.Thread(target=self._loop, name=f"paho-{self.client_id}",
                                        daemon=True)
        self._thread.start()
        try:
            ack = self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s") from None
        if expect_rc is not None:
            assert ack.reason_code == expect_rc, (
                f"{self.client_id}: CONNACK 0x{ack.reason_code:02x}, expected 0x{expect_rc:02x}")
        return ack

    def subscribe(self, topic, qos: int = 0, options: Optional[SubscribeOptions] = None,
                  properties: Optional[Properties] = None, timeout: float = TIMEOUT) -> list:
        """Subscribes (topic may be a list of (filter, qos|SubscribeOptions)); returns SUBACK codes."""
        if isinstance(topic, list):
            rc, mid = self.c.subscribe(topic, properties=properties)
        elif options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        return self._wait_ack(self.subacks, mid, "SUBACK", timeout)

    def unsubscribe(self, topic, properties: Optional[Properties] = None,
                    timeout: float = TIMEOUT) -> list:
        rc, mid = self.c.unsubscribe(topic, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe failed locally: {rc}"
        codes = self._wait_ack(self.unsubacks, mid, "UNSUBACK", timeout)
        return codes

    def publish(self, topic: str, payload=b"", qos: int = 0, retain: bool = False,
                properties: Optional[Properties] = None, wait: bool = True,
                timeout: float = TIMEOUT) -> int:
        """Publishes; with wait, waits for the flow to complete and returns its reason code."""
        info = self.c.publish(topic, payload, qos, retain, properties)
        if not wait:
            return 0
        if qos == 0:
            # QoS 0 completes when written; on_publish fires then.
            info.wait_for_publish(timeout)
            assert info.is_published(), f"{self.client_id}: QoS 0 publish not written"
            return 0
        return self._wait_ack(self.published, info.mid, f"QoS {qos} ack", timeout)

    def expect_message(self, timeout: float = TIMEOUT, topic: Optional[str] = None):
        """The next received message (optionally skipping until `topic`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: no message{' on ' + topic if topic else ''} "
                    f"within {timeout}s") from None
            if topic is None or m.topic == topic:
                return m

    def expect_messages(self, n: int, timeout: float = TIMEOUT) -> list:
        deadline = time.monotonic() + timeout
        return [self.expect_message(max(0.0, deadline - time.monotonic())) for _ in range(n)]

    def expect_no_message(self, timeout: float = QUIET) -> None:
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m.topic} {m.payload!r}")

    def drain(self) -> list:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def disconnect(self, reason: Optional[int] = None, properties: Optional[Properties] = None,
                   timeout: float = TIMEOUT) -> None:
        if self._thread is None:
            return
        if not self.disconnected.is_set():
            kw = {}
            if self.version == 5:
                if reason is not None:
                    from paho.mqtt.reasoncodes import ReasonCode
                    kw["reasoncode"] = ReasonCode(DISCONNECT, identifier=reason)
                kw["properties"] = properties
            self.c.disconnect(**kw)
            self.disconnected.wait(timeout)
        self.stop()

    def wait_disconnected(self, timeout: float = TIMEOUT) -> Optional[int]:
        """Waits until the server ends the connection; returns the DISCONNECT reason (v5)."""
        assert self.disconnected.wait(timeout), f"{self.client_id}: still connected after {timeout}s"
        return self.disconnect_reason

    def stop(self) -> None:
        """Stops the network thread; drops the socket without DISCONNECT if still open."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def drop(self) -> None:
        """Closes the TCP connection without DISCONNECT (an abnormal close: the will is sent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        sock = self.c.socket()
        if sock is not None:
            try:
                import socket as _s
                sock.shutdown(_s.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class Clients:
    """Creates clients for one test and closes them all at its end."""

    def __init__(self, broker):
        self.broker = broker
        self.all: list[Client] = []

    def new(self, client_id: Optional[str] = None, version: int = 5, connect: bool = True,
            broker=None, clean: bool = True, manual_ack: bool = False, **connect_kw) -> Client:
        c = Client(broker or self.broker, client_id, version, clean, manual_ack)
        self.all.append(c)
        if connect:
            c.connect(clean=clean, **connect_kw)
        return c

    def close(self):
        for c in self.all:
            try:
                c.stop()
                sock = c.c.socket()
                if sock is not None:
                    sock.close()
            except Exception:
                pass


def barrier(publisher: Client, subscriber: Client, topic: Optional[str] = None,
            timeout: float = TIMEOUT) -> list:
    """Publishes a marker and waits for it at `subscriber`, returning what arrived before it.

    Proves that anything the broker sent earlier on that path has arrived, without sleeping.
    The subscriber must already be subscribed to the marker topic at QoS 2.
    """
    topic = topic or f"barrier/{subscriber.client_id}"
    marker = f"marker-{next(_ids)}".encode()
    # QoS 2 end to end (subscribe the marker topic at QoS 2): paho hands a QoS 2 message to the
    # application only at PUBREL, so a lower-QoS marker could overtake earlier QoS 2 messages.
    publisher.publish(topic, marker, qos=2)
    before = []
    deadline = time.monotonic() + timeout
    while True:
        m = subscriber.expect_message(max(0.0, deadline - time.monotonic()))
        if m.topic == topic and m.payload == marker:
            return before
        before.append(m)
