"""A raw-socket MQTT client: hand-built packets for malformed and out-of-order tests.

Nothing here validates what it sends: that is the point. Reads are bounded by timeouts.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Optional

# Control packet types.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)
NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
         7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}

# v5 properties: id -> (name, type).
PROPS = {
    0x01: ("payload_format_indicator", "byte"),
    0x02: ("message_expiry_interval", "u32"),
    0x03: ("content_type", "str"),
    0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"),
    0x0B: ("subscription_identifier", "varint"),
    0x11: ("session_expiry_interval", "u32"),
    0x12: ("assigned_client_identifier", "str"),
    0x13: ("server_keep_alive", "u16"),
    0x15: ("authentication_method", "str"),
    0x16: ("authentication_data", "bin"),
    0x17: ("request_problem_information", "byte"),
    0x18: ("will_delay_interval", "u32"),
    0x19: ("request_response_information", "byte"),
    0x1A: ("response_information", "str"),
    0x1C: ("server_reference", "str"),
    0x1F: ("reason_string", "str"),
    0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"),
    0x23: ("topic_alias", "u16"),
    0x24: ("maximum_qos", "byte"),
    0x25: ("retain_available", "byte"),
    0x26: ("user_property", "pair"),
    0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_subscription_available", "byte"),
    0x29: ("subscription_identifier_available", "byte"),
    0x2A: ("shared_subscription_available", "byte"),
}
PROP_IDS = {name: pid for pid, (name, _) in PROPS.items()}

# Reason codes used by the tests.
RC_SUCCESS = 0x00
RC_NORMAL_DISCONNECT = 0x00
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84
RC_CLIENT_ID_NOT_VALID = 0x85
RC_SERVER_SHUTTING_DOWN = 0x8B
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_PACKET_ID_IN_USE = 0x91
RC_PACKET_ID_NOT_FOUND = 0x92
RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_TOO_LARGE = 0x95
RC_QOS_NOT_SUPPORTED = 0x9B


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def u32(n: int) -> bytes:
    return struct.pack("!I", n)


def mstr(s) -> bytes:
    """An MQTT UTF-8 string; bytes are sent as given (for invalid-UTF-8 tests)."""
    b = s if isinstance(s, (bytes, bytearray)) else s.encode("utf-8")
    return u16(len(b)) + bytes(b)


def mbin(b: bytes) -> bytes:
    return u16(len(b)) + bytes(b)


def encode_props(props) -> bytes:
    """props: dict name->value, or list of (name|id, value) pairs (for repeats and order)."""
    if props is None:
        return varint(0)
    items = props.items() if isinstance(props, dict) else props
    body = bytearray()
    for key, value in items:
        pid = PROP_IDS[key] if isinstance(key, str) else key
        kind = PROPS[pid][1]
        if key == "user_property" and isinstance(props, dict):
            # A dict holds all user properties as a list of pairs.
            for k, v in value:
                body += bytes([pid]) + mstr(k) + mstr(v)
            continue
        body += bytes([pid])
        if kind == "byte":
            body += bytes([value])
        elif kind == "u16":
            body += u16(value)
        elif kind == "u32":
            body += u32(value)
        elif kind == "varint":
            body += varint(value)
        elif kind == "str":
            body += mstr(value)
        elif kind == "bin":
            body += mbin(value)
        elif kind == "pair":
            body += mstr(value[0]) + mstr(value[1])
    return varint(len(body)) + bytes(body)


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | (flags & 0x0F)]) + varint(len(body)) + body


# ---- packet builders ------------------------------------------------------------------------

def connect_packet(client_id="", version: int = 5, clean: bool = True, keepalive: int = 60,
                   props=None, will: Optional[dict] = None, username=None, password=None,
                   reserved_flag: bool = False, protocol_name="MQTT") -> bytes:
    flags = 0
    if clean:
        flags |= 0x02
    if reserved_flag:
        flags |= 0x01
    payload = mstr(client_id)
    if will:
        flags |= 0x04 | ((will.get("qos", 0) & 3) << 3) | (0x20 if will.get("retain") else 0)
        if version == 5:
            payload += encode_props(will.get("props"))
        payload += mstr(will["topic"]) + mbin(will.get("payload", b""))
    if username is not None:
        flags |= 0x80
        payload += mstr(username)
    if password is not None:
        flags |= 0x40
        payload += mbin(password if isinstance(password, bytes) else password.encode())
    if version == 3:
        protocol_name = "MQIsdp" if protocol_name == "MQTT" else protocol_name
    vh = mstr(protocol_name) + bytes([version, flags]) + u16(keepalive)
    if version == 5:
        vh += encode_props(props)
    return packet(CONNECT, 0, vh + payload)


def publish_packet(topic, payload: bytes = b"", qos: int = 0, retain: bool = False,
                   dup: bool = False, pid: Optional[int] = None, props=None,
                   version: int = 5) -> bytes:
    flags = (0x08 if dup else 0) | ((qos & 3) << 1) | (0x01 if retain else 0)
    body = mstr(topic)
    if qos > 0:
        body += u16(pid if pid is not None else 1)
    if version == 5:
        body += encode_props(props)
    return packet(PUBLISH, flags, body + payload)


def subscribe_packet(pid: int, filters, version: int = 5, props=None, flags: int = 0x02) -> bytes:
    """filters: list of (filter, options byte) or of filter strings (QoS 0)."""
    body = u16(pid)
    if version == 5:
        body += encode_props(props)
    for f in filters:
        if isinstance(f, tuple):
            body += mstr(f[0]) + bytes([f[1]])
        else:
            body += mstr(f) + bytes([0])
    return packet(SUBSCRIBE, flags, body)


def unsubscribe_packet(pid: int, filters, version: int = 5, props=None) -> bytes:
    body = u16(pid)
    if version == 5:
        body += encode_props(props)
    for f in filters:
        body += mstr(f)
    return packet(UNSUBSCRIBE, 0x02, body)


def ack_packet(ptype: int, pid: int, reason: Optional[int] = None, version: int = 5,
               flags: Optional[int] = None) -> bytes:
    """PUBACK/PUBREC/PUBREL/PUBCOMP; PUBREL gets its required flags 0b0010 unless given."""
    if flags is None:
        flags = 0x02 if ptype == PUBREL else 0
    body = u16(pid)
    if version == 5 and reason is not None:
        body += bytes([reason])
    return packet(ptype, flags, body)


def disconnect_packet(reason: Optional[int] = None, props=None, version: int = 5) -> bytes:
    if version != 5 or (reason is None and props is None):
        return packet(DISCONNECT, 0, b"")
    return packet(DISCONNECT, 0, bytes([reason or 0]) + encode_props(props))


def pingreq_packet() -> bytes:
    return packet(PINGREQ, 0, b"")


# ---- decoding -------------------------------------------------------------------------------

class Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.i = 0

    def left(self) -> int:
        return len(self.d) - self.i

    def byte(self) -> int:
        v = self.d[self.i]
        self.i += 1
        return v

    def u16(self) -> int:
        v = struct.unpack_from("!H", self.d, self.i)[0]
        self.i += 2
        return v

    def u32(self) -> int:
        v = struct.unpack_from("!I", self.d, self.i)[0]
        self.i += 4
        return v

    def varint(self) -> int:
        mult, v = 1, 0
        for _ in range(4):
            b = self.byte()
            v += (b & 0x7F) * mult
            if not b & 0x80:
                return v
            mult *= 128
        raise ValueError("varint longer than 4 bytes")

    def bin(self) -> bytes:
        n = self.u16()
        v = self.d[self.i:self.i + n]
        self.i += n
        return bytes(v)

    def str(self) -> str:
        return self.bin().decode("utf-8")

    def rest(self) -> bytes:
        v = self.d[self.i:]
        self.i = len(self.d)
        return bytes(v)

    def props(self) -> "Props":
        n = self.varint()
        end = self.i + n
        out = Props()
        while self.i < end:
            pid = self.varint()
            name, kind = PROPS.get(pid, (f"0x{pid:02x}", None))
            if kind == "byte":
                v = self.byte()
            elif kind == "u16":
                v = self.u16()
            elif kind == "u32":
                v = self.u32()
            elif kind == "varint":
                v = self.varint()
            elif kind == "str":
                v = self.str()
            elif kind == "bin":
                v = self.bin()
            elif kind == "pair":
                v = (self.str(), self.str())
            else:
                raise ValueError(f"unknown property 0x{pid:02x}")
            out.items.append((name, v))
        return out


@dataclass
class Props:
    items: list = field(default_factory=list)

    def get(self, name, default=None):
        for k, v in self.items:
            if k == name:
                return v
        return default

    def all(self, name) -> list:
        return [v for k, v in self.items if k == name]

    def __contains__(self, name) -> bool:
        return any(k == name for k, _ in self.items)


@dataclass
class Packet:
    type: int
    flags: int
    body: bytes
    version: int = 5
    # Decoded fields, filled by decode() for the packet types a server sends.
    pid: Optional[int] = None
    reason: Optional[int] = None
    reasons: list = field(default_factory=list)
    props: Props = field(default_factory=Props)
    session_present: Optional[bool] = None
    topic: Optional[str] = None
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False

    @property
    def name(self) -> str:
        return NAMES.get(self.type, str(self.type))

    def __repr__(self) -> str:
        parts = [self.name]
        for k in ("pid", "reason", "reasons", "topic", "payload", "qos", "retain", "dup",
                  "session_present"):
            v = getattr(self, k)
            if v not in (None, [], b"", False, 0) or k == "reason" and v == 0:
                parts.append(f"{k}={v!r}")
        if self.props.items:
            parts.append(f"props={self.props.items!r}")
        return "<" + " ".join(parts) + ">"


def decode(ptype: int, flags: int, body: bytes, version: int) -> Packet:
    p = Packet(ptype, flags, body, version)
    r = Reader(body)
    v5 = version == 5
    if ptype == CONNACK:
        p.session_present = bool(r.byte() & 1)
        p.reason = r.byte()
        if v5 and r.left():
            p.props = r.props()
    elif ptype == PUBLISH:
        p.qos = (flags >> 1) & 3
        p.retain = bool(flags & 1)
        p.dup = bool(flags & 8)
        p.topic = r.str()
        if p.qos:
            p.pid = r.u16()
        if v5:
            p.props = r.props()
        p.payload = r.rest()
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.pid = r.u16()
        p.reason = 0
        if v5 and r.left():
            p.reason = r.byte()
            if r.left():
                p.props = r.props()
    elif ptype in (SUBACK, UNSUBACK):
        p.pid = r.u16()
        if v5:
            p.props = r.props()
        p.reasons = list(r.rest())
    elif ptype in (DISCONNECT, AUTH):
        p.reason = 0
        if r.left():
            p.reason = r.byte()
            if r.left():
                p.props = r.props()
    return p


class Closed(Exception):
    """The server closed the connection."""


class RawClient:
    """One TCP connection speaking hand-built MQTT."""

    def __init__(self, host: str, port: int, version: int = 5, timeout: float = 5.0):
        self.version = version
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        # Packet ids of received QoS 2 messages that got PUBREC and await the server's PUBREL.
        self.pending_rel: set = set()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Sends, reporting False if the server has already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet before the deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no packet before the deadline") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise Closed("connection closed by server")
        self.buf += chunk

    def read(self, timeout: Optional[float] = None) -> Packet:
        """The next packet; raises TimeoutError, or Closed at end of stream."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 2:
                mult, length, i = 1, 0, 1
                complete = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        complete = True
                        break
                if complete and len(self.buf) >= i + length:
                    first = self.buf[0]
                    body = bytes(self.buf[i:i + length])
                    del self.buf[:i + length]
                    return decode(first >> 4, first & 0x0F, body, self.version)
            if self.eof:
                raise Closed("connection closed by server")
            self._fill(deadline)

    def expect(self, ptype: int, timeout: Optional[float] = None, skip=()) -> Packet:
        """The next packet, which must be of `ptype` (packets of types in `skip` are passed).

        A PUBREL for a QoS 2 message this client acknowledged with ack() is answered with
        PUBCOMP on the way, since the server may send more PUBLISHes before it.
        """
        while True:
            p = self.read(timeout)
            if p.type in skip:
                continue
            if p.type == PUBREL and ptype != PUBREL and p.pid in self.pending_rel:
                self.pending_rel.discard(p.pid)
                assert p.flags == 0x02, f"PUBREL with flags {p.flags:#x} [MQTT-3.6.1-1]"
                self.send(ack_packet(PUBCOMP, p.pid, version=self.version))
                continue
            assert p.type == ptype, f"expected {NAMES[ptype]}, got {p!r}"
            return p

    def expect_closed(self, timeout: float = 5.0) -> Optional[Packet]:
        """Reads until the server closes; returns the DISCONNECT it sent first, if any.

        Fails if the connection is still open at the deadline. Other packets are ignored.
        """
        deadline = time.monotonic() + timeout
        disconnect = None
        while True:
            try:
                p = self.read(max(0.0, deadline - time.monotonic()))
            except Closed:
                return disconnect
            except TimeoutError:
                raise AssertionError(f"connection still open after {timeout}s") from None
            if p.type == DISCONNECT:
                disconnect = p

    def expect_closed_with(self, reason: Optional[int], timeout: float = 5.0,
                           required: bool = True) -> None:
        """v5: the server sends DISCONNECT with `reason` then closes; v3: it closes.

        required=False accepts a close without DISCONNECT (for peers that only close), but a
        DISCONNECT that is sent must still carry `reason`.
        """
        d = self.expect_closed(timeout)
        if self.version == 5 and reason is not None:
            if d is None and not required:
                return
            assert d is not None, f"closed without DISCONNECT (expected reason 0x{reason:02x})"
            assert d.reason == reason, (
                f"DISCONNECT reason 0x{d.reason:02x}, expected 0x{reason:02x} ({d!r})")
        elif self.version != 5:
            assert d is None, f"3.1.1 server sent {d!r}; it has no DISCONNECT to clients"

    def is_open(self, timeout: float = 0.2) -> bool:
        """True if nothing closes the connection within `timeout` (packets are kept)."""
        try:
            self.sock.settimeout(timeout)
            chunk = self.sock.recv(65536)
            if not chunk:
                self.eof = True
                return False
            self.buf += chunk
            return True
        except socket.timeout:
            return True
        except OSError:
            return False

    # ---- conversations --------------------------------------------------------------------

    def connect(self, client_id="", clean: bool = True, keepalive: int = 60, props=None,
                will=None, username=None, password=None, expect_rc: Optional[int] = 0) -> Packet:
        self.send(connect_packet(client_id, self.version, clean, keepalive, props, will,
                                 username, password))
        ack = self.expect(CONNACK)
        if expect_rc is not None:
            assert ack.reason == expect_rc, f"CONNACK {ack!r}"
        return ack

    def subscribe(self, filters, pid: int = 1, props=None) -> Packet:
        """filters: [(filter, options)] or [filter]; returns the SUBACK."""
        self.send(subscribe_packet(pid, filters, self.version, props))
        ack = self.expect(SUBACK)
        assert ack.pid == pid
        return ack

    def publish(self, topic, payload: bytes = b"", qos: int = 0, retain: bool = False,
                pid: int = 1, props=None, dup: bool = False) -> Optional[Packet]:
        """Publishes and completes the QoS flow; returns the PUBACK/PUBCOMP (None for QoS 0)."""
        self.send(publish_packet(topic, payload, qos, retain, dup, pid, props, self.version))
        if qos == 1:
            return self.expect(PUBACK)
        if qos == 2:
            rec = self.expect(PUBREC)
            assert rec.pid == pid
            self.send(ack_packet(PUBREL, pid, version=self.version))
            return self.expect(PUBCOMP)
        return None

    def ping(self, timeout: Optional[float] = None) -> None:
        self.send(pingreq_packet())
        self.expect(PINGRESP, timeout)

    def disconnect(self, reason: Optional[int] = None, props=None) -> None:
        self.try_send(disconnect_packet(reason, props, self.version))
        self.close()

    def ack(self, p: Packet) -> None:
        """Acknowledges a received PUBLISH (QoS 1: PUBACK; QoS 2: PUBREC, then PUBREL->PUBCOMP)."""
        if p.qos == 1:
            self.send(ack_packet(PUBACK, p.pid, version=self.version))
        elif p.qos == 2:
            # The PUBREL is answered by expect() (or finish()) when it arrives.
            self.send(ack_packet(PUBREC, p.pid, version=self.version))
            self.pending_rel.add(p.pid)

    def finish(self, timeout: Optional[float] = None) -> None:
        """Completes every pending QoS 2 flow (waits for each PUBREL and answers PUBCOMP)."""
        while self.pending_rel:
            rel = self.expect(PUBREL, timeout)
            assert rel.pid in self.pending_rel, f"unexpected {rel!r}"
            assert rel.flags == 0x02, f"PUBREL with flags {rel.flags:#x} [MQTT-3.6.1-1]"
            self.pending_rel.discard(rel.pid)
            self.send(ack_packet(PUBCOMP, rel.pid, version=self.version))


def raw(broker, version: int = 5, client_id: Optional[str] = None, **connect_kw) -> RawClient:
    """A connected RawClient (client_id None: no CONNECT is sent)."""
    c = RawClient(broker.host, broker.port, version)
    if client_id is not None:
        c.connect(client_id, **connect_kw)
    return c
