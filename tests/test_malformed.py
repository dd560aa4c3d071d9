"""Malformed and out-of-order packets (1.5, 2.1-2.2, 4.8, 4.13): the offending connection gets
the right v5 reason code in DISCONNECT, or is closed (3.1.1), and another client connected at
the same time keeps working."""

import pytest

from mqtt_client import Client, unique_id
from mqtt_raw import (CONNACK, DISCONNECT, PINGREQ, PUBACK, PUBREL, SUBACK, SUBSCRIBE,
                      UNSUBSCRIBE, ack_packet, encode_props, mstr, packet, publish_packet, raw,
                      subscribe_packet, u16, unsubscribe_packet, varint)

MALFORMED, PROTOCOL, TOPIC_NAME_INVALID, TOO_LARGE = 0x81, 0x82, 0x90, 0x95


class Bystander:
    """A paho v5 client that subscribes to its own topic; check() proves the broker still
    serves it (a round trip through the router)."""

    def __init__(self, broker):
        self.c = Client(broker, unique_id("bystander"), 5)
        self.c.connect()
        self.topic = f"by/{self.c.client_id}"
        self.c.subscribe(self.topic, 1)

    def check(self):
        assert not self.c.disconnected.is_set(), "the bystander was disconnected"
        self.c.publish(self.topic, b"still-here", qos=1)
        assert self.c.expect_message().payload == b"still-here"

    def close(self):
        self.c.disconnect()


@pytest.fixture
def bystander(broker):
    b = Bystander(broker)
    yield b
    b.close()


def violate(broker, version, data, rampart_codes, bystander=None):
    """Connects, sends `data`, and checks the server's reaction: v5 DISCONNECT with one of
    `rampart_codes` (a peer may send any error code or just close); 3.1.1 closes without a
    packet."""
    with raw(broker, version, unique_id("bad")) as c:
        c.try_send(data)
        d = c.expect_closed(timeout=5)
        if version == 5:
            if broker.is_rampart:
                assert d is not None, "closed without DISCONNECT"
                assert d.reason in rampart_codes, (
                    f"DISCONNECT 0x{d.reason:02x}, expected one of "
                    + ", ".join(f"0x{x:02x}" for x in rampart_codes))
            elif d is not None:
                assert d.reason >= 0x80, d
        else:
            assert d is None, f"3.1.1: no DISCONNECT from the server, got {d!r}"
    if bystander is not None:
        bystander.check()


def with_flags(data: bytes, flags: int) -> bytes:
    return bytes([(data[0] & 0xF0) | flags]) + data[1:]


VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]

# Violations Mosquitto 2.0 tolerates (it keeps the connection): expected failures for that peer.
PEER_TOLERATES = {"pingreq-flags", "puback-flags", "dup-on-qos-0", "client-sends-suback",
                  "payload-format-invalid-value", "subscription-identifier-in-publish"}

# (id, statement, builder(version) -> bytes, acceptable Rampart v5 reason codes)
CASES = [
    ("subscribe-flags", "[MQTT-3.8.1-1]",
     lambda v: with_flags(subscribe_packet(1, ["a/b"], v), 0x0), {MALFORMED}),
    ("unsubscribe-flags", "[MQTT-3.10.1-1]",
     lambda v: with_flags(unsubscribe_packet(1, ["a/b"], v), 0x0), {MALFORMED}),
    ("pubrel-flags", "[MQTT-3.6.1-1]",
     lambda v: ack_packet(PUBREL, 1, version=v, flags=0x0), {MALFORMED}),
    ("puback-flags", "[MQTT-2.2.2-2]",
     lambda v: ack_packet(PUBACK, 1, version=v, flags=0x2), {MALFORMED}),
    ("pingreq-flags", "[MQTT-2.2.2-2]", lambda v: packet(PINGREQ, 0x1, b""), {MALFORMED}),
    ("disconnect-flags", "[MQTT-2.2.2-2]", lambda v: packet(DISCONNECT, 0x1, b""), {MALFORMED}),
    ("packet-type-0", "2.1.2: packet type 0 is reserved", lambda v: packet(0, 0, b""), {MALFORMED}),
    ("remaining-length-5-bytes", "[MQTT-1.5.5-1] at most 4 bytes",
     lambda v: b"\x30\xff\xff\xff\xff\x01" + b"\x00" * 16, {MALFORMED}),
    ("qos-3", "[MQTT-3.3.1-4]",
     lambda v: with_flags(publish_packet("a/b", b"x", qos=1, pid=1, version=v), 0x6),
     {MALFORMED}),
    ("dup-on-qos-0", "[MQTT-3.3.1-2]",
     lambda v: publish_packet("a/b", b"x", qos=0, dup=True, version=v), {MALFORMED, PROTOCOL}),
    ("publish-packet-id-0", "[MQTT-2.2.1-3] (3.1.1 [MQTT-2.3.1-1])",
     lambda v: publish_packet("a/b", b"x", qos=1, pid=0, version=v), {MALFORMED, PROTOCOL}),
    ("subscribe-packet-id-0", "[MQTT-2.2.1-3] (3.1.1 [MQTT-2.3.1-1])",
     lambda v: subscribe_packet(0, ["a/b"], v), {MALFORMED, PROTOCOL}),
    ("unsubscribe-packet-id-0", "[MQTT-2.2.1-3] (3.1.1 [MQTT-2.3.1-1])",
     lambda v: unsubscribe_packet(0, ["a/b"], v), {MALFORMED, PROTOCOL}),
    ("topic-invalid-utf8", "[MQTT-1.5.4-1] ill-formed UTF-8",
     lambda v: publish_packet(b"a/\xff\xfe", b"x", version=v), {MALFORMED}),
    ("topic-utf16-surrogate", "[MQTT-1.5.4-1] encoded surrogate U+D800",
     lambda v: publish_packet(b"a/\xed\xa0\x80", b"x", version=v), {MALFORMED}),
    ("topic-nul", "[MQTT-1.5.4-2] U+0000",
     lambda v: publish_packet(b"a/\x00b", b"x", version=v), {MALFORMED}),
    ("topic-wildcard-hash", "[MQTT-3.3.2-2]",
     lambda v: publish_packet("a/#", b"x", version=v), {TOPIC_NAME_INVALID}),
    ("topic-wildcard-plus", "[MQTT-3.3.2-2]",
     lambda v: publish_packet("a/+/c", b"x", qos=1, pid=3, version=v), {TOPIC_NAME_INVALID}),
    ("filter-invalid-utf8", "[MQTT-1.5.4-1]",
     lambda v: subscribe_packet(1, [(b"a/\xc3\x28", 0)], v), {MALFORMED}),
    ("subscribe-no-filters", "[MQTT-3.8.3-3] (v5 [MQTT-3.8.3-2])",
     lambda v: packet(SUBSCRIBE, 0x2, u16(1) + (varint(0) if v == 5 else b"")),
     {MALFORMED, PROTOCOL}),
    ("unsubscribe-no-filters", "[MQTT-3.10.3-2]",
     lambda v: packet(UNSUBSCRIBE, 0x2, u16(1) + (varint(0) if v == 5 else b"")),
     {MALFORMED, PROTOCOL}),
    ("subscribe-qos-3", "[MQTT-3.8.3-4] (v5 3.8.3.1)",
     lambda v: subscribe_packet(1, [("a/b", 3)], v), {MALFORMED, PROTOCOL}),
    ("truncated-topic", "[MQTT-1.5.4] string longer than the packet",
     lambda v: packet(3, 0, u16(100) + b"a/b"), {MALFORMED}),
    ("second-connect", "[MQTT-3.1.0-2]",
     lambda v: __import__("mqtt_raw").connect_packet("again", v), {PROTOCOL}),
    ("client-sends-connack", "4.13: CONNACK is sent only by a server (Protocol Error)",
     lambda v: packet(CONNACK, 0, b"\x00\x00" + (varint(0) if v == 5 else b"")),
     {MALFORMED, PROTOCOL}),
    ("client-sends-suback", "4.13: SUBACK is sent only by a server (Protocol Error)",
     lambda v: packet(SUBACK, 0, u16(1) + (varint(0) if v == 5 else b"") + b"\x00"),
     {MALFORMED, PROTOCOL}),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_violation(broker, bystander, version, case):
    """Each case names the statement it breaks; the connection must end with the reason code
    (v5) or a close (3.1.1), and the bystander keeps working."""
    name, _statement, build, codes = case
    if not broker.is_rampart and name in PEER_TOLERATES:
        pytest.xfail(f"{broker.peer} tolerates {name}")
    violate(broker, version, build(version), codes, bystander)


V5_CASES = [
    ("property-not-allowed", "2.2.2.2: Session Expiry Interval in PUBLISH",
     publish_packet("a/b", b"x", props=[("session_expiry_interval", 5)]), {MALFORMED, PROTOCOL}),
    ("property-unknown-id", "2.2.2.2: unknown property identifier",
     packet(3, 0, mstr("a/b") + varint(2) + b"\x7f\x00" + b"x"), {MALFORMED}),
    ("property-duplicated", "3.3.2.3.9: Content Type twice",
     publish_packet("a/b", b"x", props=[("content_type", "a"), ("content_type", "b")]),
     {MALFORMED, PROTOCOL}),
    ("property-length-overrun", "2.2.2.1: property length beyond the packet",
     packet(3, 0, mstr("a/b") + varint(50) + b"\x01\x01"), {MALFORMED}),
    ("payload-format-invalid-value", "3.3.2.3.2: Payload Format Indicator 2",
     publish_packet("a/b", b"x", props=[("payload_format_indicator", 2)]),
     {MALFORMED, PROTOCOL}),
    ("subscription-identifier-in-publish", "[MQTT-3.3.4-6] client PUBLISH with a Subscription Identifier",
     publish_packet("a/b", b"x", props=[("subscription_identifier", 1)]),
     {MALFORMED, PROTOCOL}),
    ("auth-without-method", "4.12: AUTH when CONNECT had no Authentication Method",
     packet(15, 0, b"\x18" + encode_props(None)), {PROTOCOL}),
    ("disconnect-bad-reason", "3.14.2.1: unknown DISCONNECT reason code",
     packet(DISCONNECT, 0, b"\x03" + varint(0)), {MALFORMED, PROTOCOL}),
]


@pytest.mark.parametrize("case", V5_CASES, ids=[c[0] for c in V5_CASES])
def test_v5_violation(broker, bystander, case):
    """v5-only encodings: properties and AUTH."""
    name, _statement, data, codes = case
    if not broker.is_rampart and name in PEER_TOLERATES:
        pytest.xfail(f"{broker.peer} tolerates {name}")
    violate(broker, 5, data, codes, bystander)


def test_v311_auth_packet_is_reserved(broker, bystander):
    """3.1.1 2.2.1: packet type 15 is reserved: the connection is closed."""
    violate(broker, 4, packet(15, 0, b""), set(), bystander)


@pytest.mark.parametrize("version", VERSIONS)
def test_packet_larger_than_max_packet_size(broker_factory, version):
    """3.2.2.3.6 / 4.13: a packet above the server's Maximum Packet Size
    (mqtt.max_packet_size = 1024 here): v5 DISCONNECT 0x95 Packet too large, 3.1.1 close."""
    b = broker_factory(mqtt={"max_packet_size": 1024})
    by = Bystander(b)
    try:
        with raw(b, version) as c:
            ack = c.connect(unique_id("big"))
            if version == 5 and b.is_rampart:
                assert ack.props.get("maximum_packet_size") == 1024
            # A packet just under the limit passes.
            c.publish("big/ok", b"x" * 900, qos=1, pid=1)
        violate(b, version, publish_packet("big/t", b"x" * 2048, qos=1, pid=2, version=version),
                {TOO_LARGE}, by)
    finally:
        by.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_oversized_remaining_length_refused_from_header(broker_factory, version):
    """The remaining length is checked against the limit from the fixed header, before the body:
    a header announcing 200 MB ends the connection although no body byte is sent."""
    b = broker_factory(mqtt={"max_packet_size": 1024})
    by = Bystander(b)
    try:
        violate(b, version, b"\x30" + varint(200_000_000), {TOO_LARGE}, by)
    finally:
        by.close()


def test_violation_before_connack_never_accepts(broker, bystander):
    """[MQTT-3.1.4-1] a malformed CONNECT is refused: no successful CONNACK, connection closed."""
    from test_connect import connect_then_close
    from mqtt_raw import RawClient
    with RawClient(broker.host, broker.port, 5) as c:
        # Protocol name with a 5-byte length prefix overrun.
        connect_then_close(c, packet(1, 0, u16(60) + b"MQTT"))
    bystander.check()


def test_will_qos_3_in_connect(broker, bystander):
    """[MQTT-3.1.2-14] Will QoS 3 is malformed: the CONNECT is refused."""
    from test_connect import connect_then_close
    from mqtt_raw import RawClient, connect_packet
    with RawClient(broker.host, broker.port, 4) as c:
        connect_then_close(c, connect_packet("wq3", 4, will={"topic": "w", "qos": 3}))
    bystander.check()


def test_many_bad_clients_do_not_disturb(broker, bystander):
    """A burst of 30 violating connections (bounded) leaves the bystander served."""
    for i in range(30):
        with raw(broker, 5, unique_id("burst")) as c:
            c.try_send(b"\x30\xff\xff\xff\xff\x01")
            c.expect_closed(timeout=5)
    bystander.check()
