"""Spec section 3.1/3.2: CONNECT and CONNACK, client identifiers, takeover, keep alive."""

import time

import pytest

from mqtt_raw import (CONNACK, CONNECT, DISCONNECT, PINGREQ, RC_CLIENT_ID_NOT_VALID,
                      RC_PROTOCOL_ERROR, RC_SESSION_TAKEN_OVER, Closed, RawClient, connect_packet,
                      mstr, packet, publish_packet, raw, subscribe_packet, u16, varint)

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


def connect_then_close(c: RawClient, data: bytes, timeout: float = 5.0):
    """Sends a CONNECT that must be refused: returns the CONNACK reason sent before the close, if any."""
    c.send(data)
    reason = None
    deadline = time.monotonic() + timeout
    while True:
        try:
            p = c.read(max(0.0, deadline - time.monotonic()))
        except Closed:
            return reason
        except TimeoutError:
            raise AssertionError("connection still open after a refused CONNECT") from None
        if p.type == CONNACK:
            assert p.reason != 0, f"refused CONNECT was accepted: {p!r}"
            reason = p.reason


def assert_other_client_works(broker, version=5):
    with raw(broker, version, "bystander-" + str(version)) as c:
        c.ping()


# ---- first packet -----------------------------------------------------------------------------

@pytest.mark.parametrize("first", ["publish", "subscribe", "pingreq"])
def test_first_packet_must_be_connect(broker, first):
    """[MQTT-3.1.0-1] the first packet from the client must be CONNECT: otherwise the server
    closes the connection (and sends nothing that suggests a session)."""
    data = {
        "publish": publish_packet("a/b", b"x", version=4),
        "subscribe": subscribe_packet(1, ["a/#"], version=4),
        "pingreq": packet(PINGREQ, 0, b""),
    }[first]
    with RawClient(broker.host, broker.port, 4) as c:
        c.send(data)
        d = c.expect_closed()
        assert d is None or d.type == DISCONNECT
    assert_other_client_works(broker)


@pytest.mark.parametrize("version", VERSIONS)
def test_second_connect_is_protocol_violation(broker, version):
    """[MQTT-3.1.0-2] a second CONNECT is a protocol violation: v5 DISCONNECT 0x82 then close
    [MQTT-4.13.1-1]; 3.1.1 closes the connection."""
    with raw(broker, version, f"twice-{version}") as c:
        c.send(connect_packet(f"twice-{version}", version))
        c.expect_closed_with(RC_PROTOCOL_ERROR, required=broker.is_rampart)
    assert_other_client_works(broker, version)


# ---- protocol name and level ------------------------------------------------------------------

@pytest.mark.parametrize("level", [2, 6, 7, 255])
def test_unsupported_protocol_level(broker, level):
    """[MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01 (3.1.1) or 0x84 (5.0), then close."""
    vh = mstr("MQTT") + bytes([level, 0x02]) + u16(60)
    if level >= 5:
        vh += varint(0)
    with RawClient(broker.host, broker.port, 4) as c:
        reason = connect_then_close(c, packet(CONNECT, 0, vh + mstr("lvl")))
        assert reason in (None, 0x01, 0x84)
    assert_other_client_works(broker)


def test_wrong_protocol_name_is_refused(broker):
    """[MQTT-3.1.2-1] a protocol name other than "MQTT" is not accepted: the connection closes."""
    vh = mstr("MQTX") + bytes([4, 0x02]) + u16(60)
    with RawClient(broker.host, broker.port, 4) as c:
        connect_then_close(c, packet(CONNECT, 0, vh + mstr("name")))
    assert_other_client_works(broker)


@pytest.mark.parametrize("version", VERSIONS)
def test_connect_reserved_flag_must_be_zero(broker, version):
    """[MQTT-3.1.2-3] the reserved bit of the Connect Flags must be 0, else the connection closes
    (v5 may first send CONNACK 0x81 Malformed Packet)."""
    with RawClient(broker.host, broker.port, version) as c:
        reason = connect_then_close(c, connect_packet("reserved", version, reserved_flag=True))
        if version == 5:
            assert reason in (None, 0x81)
    assert_other_client_works(broker)


@pytest.mark.parametrize("version", VERSIONS)
def test_connect_fixed_header_flags_must_be_zero(broker, version):
    """[MQTT-2.2.2-2] CONNECT fixed header flags are reserved (0): other values close the connection."""
    data = bytearray(connect_packet("hdrflags", version))
    data[0] |= 0x01
    with RawClient(broker.host, broker.port, version) as c:
        connect_then_close(c, bytes(data))
    assert_other_client_works(broker)


@pytest.mark.parametrize("version", VERSIONS)
def test_will_flag_zero_requires_will_qos_zero(broker, version):
    """[MQTT-3.1.2-11]/[MQTT-3.1.2-13] with Will Flag 0, Will QoS and Will Retain must be 0."""
    data = bytearray(connect_packet("willbits", version))
    flags_at = 2 + 6 + 1  # fixed header (2), "MQTT" (6), level (1)
    data[flags_at] |= 0x08  # Will QoS 1 without a will
    with RawClient(broker.host, broker.port, version) as c:
        connect_then_close(c, bytes(data))
    assert_other_client_works(broker)


def test_password_without_username_v311(broker):
    """[MQTT-3.1.2-22] 3.1.1: password flag set without user name flag is refused."""
    with RawClient(broker.host, broker.port, 4) as c:
        connect_then_close(c, connect_packet("pwonly", 4, password=b"secret"))
    assert_other_client_works(broker, 4)


# ---- CONNACK ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_connack_is_first_packet_from_server(broker, version):
    """[MQTT-3.2.0-1] the first packet the server sends is CONNACK, with success 0x00."""
    with RawClient(broker.host, broker.port, version) as c:
        c.send(connect_packet("first-ack", version))
        p = c.read()
        assert p.type == CONNACK and p.reason == 0
        assert p.flags == 0 and p.session_present is False


def test_v5_connack_announces_limits(broker):
    """CONNACK properties: Topic Alias Maximum, Receive Maximum, Maximum Packet Size,
    Maximum QoS and Retain Available, when they differ from the protocol defaults."""
    with raw(broker, 5) as c:
        ack = c.connect("limits")
        if broker.is_rampart:
            assert ack.props.get("receive_maximum") == 256
            assert ack.props.get("topic_alias_maximum") == 64
            assert ack.props.get("maximum_packet_size") == 1048576
            assert ack.props.get("maximum_qos") in (None, 2)
            assert ack.props.get("retain_available") in (None, 1)


# ---- client identifiers -----------------------------------------------------------------------

def test_v311_empty_client_id_with_clean_session_is_accepted(broker):
    """[MQTT-3.1.3-6]/[MQTT-3.1.3-7] 3.1.1: a zero-length client id with CleanSession=1 is
    accepted and the server assigns a unique id."""
    with raw(broker, 4) as c:
        c.connect("", clean=True)
        c.ping()
    with raw(broker, 4) as a, raw(broker, 4) as b:
        a.connect("", clean=True)
        b.connect("", clean=True)
        # Two anonymous clients do not take each other over.
        a.ping()
        b.ping()


def test_v311_empty_client_id_without_clean_session_is_rejected(broker):
    """[MQTT-3.1.3-8] 3.1.1: zero-length client id with CleanSession=0: CONNACK 0x02
    (identifier rejected), then the connection is closed."""
    with RawClient(broker.host, broker.port, 4) as c:
        reason = connect_then_close(c, connect_packet("", 4, clean=False))
        assert reason == 0x02


def test_v5_empty_client_id_gets_assigned_identifier(broker):
    """[MQTT-3.1.3-6]/[MQTT-3.2.2-16] v5: a zero-length client id is accepted and the CONNACK
    carries an Assigned Client Identifier, unique per connection."""
    with raw(broker, 5) as a, raw(broker, 5) as b:
        ida = a.connect("").props.get("assigned_client_identifier")
        idb = b.connect("").props.get("assigned_client_identifier")
        assert ida and idb and ida != idb
        a.ping()
        b.ping()


def test_v5_client_id_is_not_assigned_when_given(broker):
    """[MQTT-3.2.2-16] the Assigned Client Identifier is sent only for a zero-length client id."""
    with raw(broker, 5) as c:
        assert "assigned_client_identifier" not in c.connect("given-id").props


@pytest.mark.parametrize("version", VERSIONS)
def test_long_client_ids_up_to_limit_are_accepted(broker, version):
    """[MQTT-3.1.3-5] the server accepts 1..23 chars of [0-9a-zA-Z]; Rampart up to 128 bytes."""
    for cid in ["a", "Az09" * 5 + "xyz", "x" * 128, "ünïcødé-client"]:
        with raw(broker, version) as c:
            c.connect(cid)


@pytest.mark.rampart_only
@pytest.mark.parametrize("version", VERSIONS)
def test_client_id_over_limit_is_refused(broker, version):
    """Rampart refuses a client id longer than max_client_id_length (128): CONNACK 0x85 (v5)
    or 0x02 (3.1.1), then closes."""
    with RawClient(broker.host, broker.port, version) as c:
        reason = connect_then_close(c, connect_packet("x" * 129, version))
        assert reason == (RC_CLIENT_ID_NOT_VALID if version == 5 else 0x02)


# ---- session present --------------------------------------------------------------------------

def test_session_present_v311(broker):
    """[MQTT-3.2.2-1] CleanSession=1: session present 0; [MQTT-3.2.2-2] CleanSession=0 with a
    stored session: session present 1."""
    with raw(broker, 4) as c:
        assert c.connect("sp311", clean=False).session_present is False
        c.subscribe([("sp/t", 1)])
        c.disconnect()
    with raw(broker, 4) as c:
        assert c.connect("sp311", clean=False).session_present is True
        c.disconnect()
    with raw(broker, 4) as c:
        assert c.connect("sp311", clean=True).session_present is False
        c.disconnect()


def test_session_present_v5(broker):
    """[MQTT-3.2.2-2] Clean Start=1: session present 0; [MQTT-3.2.2-3] Clean Start=0 with a
    session kept by Session Expiry Interval: session present 1."""
    with raw(broker, 5) as c:
        ack = c.connect("sp5", clean=True, props={"session_expiry_interval": 300})
        assert ack.session_present is False
        c.disconnect()
    with raw(broker, 5) as c:
        assert c.connect("sp5", clean=False,
                         props={"session_expiry_interval": 300}).session_present is True
        c.disconnect()
    with raw(broker, 5) as c:
        assert c.connect("sp5", clean=True).session_present is False
        c.disconnect()
    # Session expiry 0 (the default): nothing is kept after the close.
    with raw(broker, 5) as c:
        assert c.connect("sp5", clean=False).session_present is False


# ---- takeover ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_takeover_closes_existing_connection(broker, version):
    """[MQTT-3.1.4-2] (3.1.1) / [MQTT-3.1.4-3] (5.0): a CONNECT with the client id of a connected
    client closes the existing connection; v5 sends it DISCONNECT 0x8E Session taken over."""
    with raw(broker, version, "dup-id") as old, raw(broker, version, "dup-id") as new:
        old.expect_closed_with(RC_SESSION_TAKEN_OVER, required=broker.is_rampart)
        new.ping()


@pytest.mark.parametrize("version", VERSIONS)
def test_takeover_keeps_persistent_session(broker, version):
    """[MQTT-3.1.4-3] takeover with a persistent session resumes it: subscriptions continue."""
    kw = {} if version == 4 else {"props": {"session_expiry_interval": 60}}
    old = raw(broker, version, "take-sess", clean=False if version == 4 else True, **kw)
    old.subscribe([("take/t", 1)])
    new = raw(broker, version)
    ack = new.connect("take-sess", clean=False, **kw)
    assert ack.session_present is True
    old.expect_closed()
    old.close()
    with raw(broker, version, "take-pub") as pub:
        pub.publish("take/t", b"after", qos=1)
    p = new.expect(3)
    assert (p.topic, p.payload) == ("take/t", b"after")
    new.ack(p)
    new.close()


# ---- keep alive -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_keep_alive_silent_client_is_closed(broker, version):
    """[MQTT-3.1.2-24] no packet within 1.5x the keep alive: the server closes the connection
    (v5 may first send DISCONNECT 0x8D Keep Alive timeout)."""
    with raw(broker, version, f"ka-{version}", keepalive=1) as c:
        t0 = time.monotonic()
        # Mosquitto checks keep alive coarsely (about 5s late); Rampart must be within 1.5x.
        upper = 3.5 if broker.is_rampart else 10
        d = c.expect_closed(timeout=upper + 1)
        elapsed = time.monotonic() - t0
        assert 0.9 <= elapsed <= upper, f"closed after {elapsed:.2f}s for keep alive 1s"
        if d is not None:
            assert d.reason == 0x8D


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_keep_alive_pings_keep_connection(broker, version):
    """[MQTT-3.1.2-23] a client that sends PINGREQ within the keep alive stays connected,
    [MQTT-3.12.4-1] and gets PINGRESP each time."""
    with raw(broker, version, f"kap-{version}", keepalive=1) as c:
        deadline = time.monotonic() + 3.2
        while time.monotonic() < deadline:
            c.ping()
            # Waits half the keep alive while watching for a close.
            assert c.is_open(0.5), "closed although the client pinged in time"


@pytest.mark.rampart_only
def test_server_keep_alive_caps_client_keep_alive(broker_factory):
    """[MQTT-3.2.2-21] Server Keep Alive: the client must use the server's value; Rampart lowers
    a keep alive above mqtt.max_keep_alive and announces it."""
    b = broker_factory(mqtt={"max_keep_alive": 30})
    with raw(b, 5) as c:
        ack = c.connect("ska", keepalive=600)
        assert ack.props.get("server_keep_alive") == 30
    with raw(b, 5) as c:
        ack = c.connect("ska0", keepalive=0)
        ka = ack.props.get("server_keep_alive")
        assert ka is not None and 1 <= ka <= 30


@pytest.mark.rampart_only
def test_connect_timeout_closes_idle_socket(broker_factory):
    """A connection that sends no CONNECT is closed after mqtt.connect_timeout_secs."""
    b = broker_factory(mqtt={"connect_timeout_secs": 1})
    with RawClient(b.host, b.port, 5) as c:
        t0 = time.monotonic()
        assert c.expect_closed(timeout=5) is None
        assert time.monotonic() - t0 >= 0.8
    with RawClient(b.host, b.port, 5) as c:
        # A partial CONNECT does not extend the deadline (slowloris).
        c.send(connect_packet("slow", 5)[:5])
        c.expect_closed(timeout=5)
