"""Spec sections 3.3-3.7, 4.3-4.6: PUBLISH and its acknowledgements, QoS flows, ordering,
redelivery, message expiry, topic aliases, maximum packet size and property pass-through."""

import time

import pytest

from mqtt_client import PUBLISH, props
from mqtt_raw import (PUBACK, PUBCOMP, PUBREC, PUBREL, RC_PROTOCOL_ERROR, RC_TOPIC_ALIAS_INVALID,
                      ack_packet, publish_packet, raw)

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
PUBLISH_T = 3


def elapse(seconds: float) -> None:
    """Lets protocol time pass (expiry intervals): the behaviour under test is a timer."""
    time.sleep(seconds)


def collect(c, n, timeout=5.0):
    """n PUBLISH packets from a raw client, acknowledging each."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        p = c.expect(PUBLISH_T, max(0.01, deadline - time.monotonic()))
        c.ack(p)
        out.append(p)
    return out


# ---- QoS flows --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_qos_delivery_matrix(broker, version, pub_qos, sub_qos):
    """[MQTT-3.8.4-8]/[MQTT-3.8.4-6] delivered QoS = min(published, granted);
    [MQTT-3.3.4-1] the receiver answers per QoS (PUBACK / PUBREC-PUBREL-PUBCOMP);
    [MQTT-2.2.1-2] QoS 0 PUBLISH carries no packet id, QoS>0 a non-zero one."""
    with raw(broker, version, "sub") as sub, raw(broker, version, "pub") as pub:
        assert sub.subscribe([("q/t", sub_qos)]).reasons == [sub_qos]
        ack = pub.publish("q/t", b"payload", qos=pub_qos, pid=10)
        if pub_qos:
            assert ack.pid == 10 and ack.reason == 0
        p = sub.expect(PUBLISH_T)
        assert p.topic == "q/t" and p.payload == b"payload"
        assert p.qos == min(pub_qos, sub_qos)
        assert not p.retain and not p.dup
        if p.qos:
            assert p.pid != 0
        sub.ack(p)
        # Nothing else follows (a second copy or a stray packet).
        pub.publish("q/t", b"end", qos=1, pid=11)
        q = sub.expect(PUBLISH_T)
        assert q.payload == b"end"
        sub.ack(q)


@pytest.mark.parametrize("version", VERSIONS)
def test_publish_without_subscribers_is_acknowledged(broker, version):
    """[MQTT-4.3.2-2]/[MQTT-4.3.3-2] the server acknowledges QoS 1 and 2 even with no
    subscriber (v5 reason 0x00 or 0x10 No matching subscribers)."""
    with raw(broker, version, "lonely") as c:
        assert c.publish("nobody/here", b"x", qos=1, pid=5).reason in (0x00, 0x10)
        assert c.publish("nobody/here", b"x", qos=2, pid=6).reason == 0x00


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_resend_before_pubrel_delivers_once(broker, version):
    """[MQTT-4.3.3-10]/[MQTT-4.3.3-9] (v5 numbering) a QoS 2 PUBLISH re-sent with DUP before
    PUBREL is not delivered again: the server answers PUBREC again, then PUBCOMP once."""
    with raw(broker, version, "sub2") as sub, raw(broker, version, "pub2") as pub:
        sub.subscribe([("once/t", 2), ("once/end", 2)])
        pub.send(publish_packet("once/t", b"one", qos=2, pid=7, version=version))
        assert pub.expect(PUBREC).pid == 7
        pub.send(publish_packet("once/t", b"one", qos=2, pid=7, dup=True, version=version))
        assert pub.expect(PUBREC).pid == 7
        pub.send(ack_packet(PUBREL, 7, version=version))
        assert pub.expect(PUBCOMP).pid == 7
        pub.publish("once/end", b"end", qos=2, pid=8)
        got = collect(sub, 2)
        assert [(p.topic, p.payload) for p in got] == [("once/t", b"one"), ("once/end", b"end")]


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_pid_reusable_after_pubcomp(broker, version):
    """[MQTT-2.2.1-3] after PUBCOMP the packet id may be reused for a new message."""
    with raw(broker, version, "sub3") as sub, raw(broker, version, "pub3") as pub:
        sub.subscribe([("reuse/t", 2)])
        pub.publish("reuse/t", b"a", qos=2, pid=9)
        pub.publish("reuse/t", b"b", qos=2, pid=9)
        assert [p.payload for p in collect(sub, 2)] == [b"a", b"b"]


def test_pubrel_for_unknown_packet_id_v5(broker):
    """3.7.2.1: a PUBREL for an unknown packet id gets PUBCOMP with 0x92 Packet
    Identifier not found (and the connection stays up)."""
    with raw(broker, 5, "pubrel-unknown") as c:
        c.send(ack_packet(PUBREL, 4242, version=5))
        comp = c.expect(PUBCOMP)
        assert comp.pid == 4242
        if broker.is_rampart:
            assert comp.reason == 0x92
        c.ping()


def test_pubrel_for_unknown_packet_id_v311(broker):
    """3.1.1 4.3.3: PUBREL for an unknown id is answered with PUBCOMP."""
    with raw(broker, 4, "pubrel-unknown4") as c:
        c.send(ack_packet(PUBREL, 4242, version=4))
        assert c.expect(PUBCOMP).pid == 4242
        c.ping()


@pytest.mark.parametrize("version", VERSIONS)
def test_server_packet_ids_unique_while_in_flight(broker, version):
    """[MQTT-2.2.1-3] the server uses a non-zero packet id not in use for each QoS>0 PUBLISH."""
    with raw(broker, version, "ids-sub") as sub, raw(broker, version, "ids-pub") as pub:
        sub.subscribe([("ids/t", 1)])
        for i in range(10):
            pub.publish("ids/t", bytes([i]), qos=1, pid=i + 1)
        got = [sub.expect(PUBLISH_T) for _ in range(10)]  # not acknowledged yet
        pids = [p.pid for p in got]
        assert 0 not in pids and len(set(pids)) == 10
        for p in got:
            sub.ack(p)


# ---- ordering ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_ordered_delivery(broker, version, qos):
    """[MQTT-4.6.0-6] (v5 [MQTT-4.6.0-5]) messages of one publisher on one topic at one QoS are
    delivered in the order published."""
    n = 40
    with raw(broker, version, "ord-sub") as sub, raw(broker, version, "ord-pub") as pub:
        sub.subscribe([("ord/t", 2)])
        for i in range(n):
            pub.publish("ord/t", str(i).encode(), qos=qos, pid=i + 1)
        got = collect(sub, n, timeout=10)
        assert [int(p.payload) for p in got] == list(range(n))


@pytest.mark.parametrize("version", VERSIONS)
def test_acks_sent_in_order(broker, version):
    """[MQTT-4.6.0-2]/[MQTT-4.6.0-3] the server sends PUBACK and PUBREC in the order the
    PUBLISH packets were received."""
    with raw(broker, version, "ack-order") as c:
        data = b"".join(publish_packet("ackord/t", b"x", qos=1, pid=i, version=version)
                        for i in range(1, 21))
        c.send(data)
        assert [c.expect(PUBACK).pid for _ in range(20)] == list(range(1, 21))
        data = b"".join(publish_packet("ackord/t", b"x", qos=2, pid=i, version=version)
                        for i in range(21, 41))
        c.send(data)
        assert [c.expect(PUBREC).pid for _ in range(20)] == list(range(21, 41))
        for i in range(21, 41):
            c.send(ack_packet(PUBREL, i, version=version))
        assert [c.expect(PUBCOMP).pid for _ in range(20)] == list(range(21, 41))


# ---- redelivery -------------------------------------------------------------------------------

def _persistent(version):
    if version == 5:
        return {"clean": False, "props": {"session_expiry_interval": 300}}
    return {"clean": False}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [1, 2])
def test_unacknowledged_publish_resent_with_dup_on_reconnect(broker, version, qos):
    """[MQTT-4.4.0-1] on reconnect with a kept session the server resends unacknowledged
    PUBLISH packets with their original packet ids, [MQTT-3.3.1-1] with DUP set."""
    sub = raw(broker, version, "dup-sub", **_persistent(version))
    sub.subscribe([("dup/t", qos)])
    with raw(broker, version, "dup-pub") as pub:
        pub.publish("dup/t", b"m1", qos=qos, pid=1)
    first = sub.expect(PUBLISH_T)
    assert first.qos == qos and not first.dup
    sub.close()  # no acknowledgement
    with raw(broker, version) as again:
        assert again.connect("dup-sub", **_persistent(version)).session_present
        p = again.expect(PUBLISH_T)
        assert (p.topic, p.payload, p.pid, p.qos) == ("dup/t", b"m1", first.pid, qos)
        assert p.dup, "[MQTT-3.3.1-1] redelivered PUBLISH must have DUP=1"
        again.ack(p)


@pytest.mark.parametrize("version", VERSIONS)
def test_pubrel_resent_on_reconnect(broker, version):
    """[MQTT-4.4.0-1] a PUBREL not yet completed is resent on reconnect (not the PUBLISH)."""
    sub = raw(broker, version, "rel-sub", **_persistent(version))
    sub.subscribe([("rel/t", 2)])
    with raw(broker, version, "rel-pub") as pub:
        pub.publish("rel/t", b"x", qos=2, pid=3)
    p = sub.expect(PUBLISH_T)
    sub.send(ack_packet(PUBREC, p.pid, version=version))
    assert sub.expect(PUBREL).pid == p.pid
    sub.close()  # no PUBCOMP
    with raw(broker, version) as again:
        assert again.connect("rel-sub", **_persistent(version)).session_present
        rel = again.expect(PUBREL)
        assert rel.pid == p.pid and rel.flags == 0x02
        again.send(ack_packet(PUBCOMP, p.pid, version=version))
        again.ping()


@pytest.mark.parametrize("version", VERSIONS)
def test_queued_messages_delivered_on_reconnect(broker, version):
    """[MQTT-3.1.2-4]/[MQTT-4.5.0-1]: QoS 1/2 messages for an offline persistent session are
    stored and delivered on reconnect, in order; QoS 0 may be dropped."""
    sub = raw(broker, version, "queue-sub", **_persistent(version))
    sub.subscribe([("queue/t", 2)])
    sub.disconnect()
    with raw(broker, version, "queue-pub") as pub:
        for i in range(5):
            pub.publish("queue/t", b"q1-%d" % i, qos=1, pid=i + 1)
            pub.publish("queue/t", b"q2-%d" % i, qos=2, pid=i + 100)
    with raw(broker, version) as again:
        assert again.connect("queue-sub", **_persistent(version)).session_present
        got = [p.payload for p in collect(again, 10)]
        assert got == [x for i in range(5) for x in (b"q1-%d" % i, b"q2-%d" % i)]


# ---- QoS downgrade and overlapping subscriptions ------------------------------------------

@pytest.mark.peer_deviates("Mosquitto 2.0 sends one copy at the QoS of one match")
@pytest.mark.parametrize("version", VERSIONS)
def test_overlapping_subscriptions_use_maximum_qos(broker, version):
    """[MQTT-3.3.5-1] (v5 [MQTT-3.3.4-2]) with overlapping subscriptions the message is delivered
    respecting the maximum QoS of all matching subscriptions. Rampart sends one copy."""
    with raw(broker, version, "ovl-sub") as sub, raw(broker, version, "ovl-pub") as pub:
        sub.subscribe([("ovl/+", 0), ("ovl/#", 2), ("ovl/x", 1)])
        pub.publish("ovl/x", b"m", qos=2, pid=1)
        pub.publish("ovl/end", b"end", qos=0)
        got = []
        while True:
            p = sub.expect(PUBLISH_T)
            sub.ack(p)
            if p.topic == "ovl/end":
                break
            got.append(p)
        assert got and max(p.qos for p in got) == 2
        if broker.is_rampart:
            assert len(got) == 1


def test_subscription_replaced_changes_qos(broker):
    """[MQTT-3.8.4-3] a SUBSCRIBE with an existing filter replaces it (its QoS takes effect)."""
    with raw(broker, 5, "repl-sub") as sub, raw(broker, 5, "repl-pub") as pub:
        sub.subscribe([("repl/t", 2)])
        sub.subscribe([("repl/t", 0)], pid=2)
        pub.publish("repl/t", b"m", qos=2, pid=1)
        p = sub.expect(PUBLISH_T)
        assert p.qos == 0
        pub.publish("repl/t", b"end", qos=0)
        assert sub.expect(PUBLISH_T).payload == b"end"


# ---- cross-version ----------------------------------------------------------------------------

@pytest.mark.parametrize("pub_v,sub_v", [(4, 5), (5, 4)])
def test_cross_version_delivery(clients, pub_v, sub_v):
    """Messages flow between 3.1.1 and 5.0 clients; v5-only properties are not sent to 3.1.1."""
    sub = clients.new(version=sub_v)
    sub.subscribe("xv/#", 2)
    pub = clients.new(version=pub_v)
    kw = {}
    if pub_v == 5:
        kw["properties"] = props(PUBLISH, ContentType="text/plain", UserProperty=[("k", "v")])
    pub.publish("xv/t", b"cross", qos=2, **kw)
    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos) == ("xv/t", b"cross", 2)


# ---- message expiry (v5) ----------------------------------------------------------------------

@pytest.mark.slow
def test_message_expiry_drops_expired_queued_message(broker):
    """[MQTT-3.3.2-5] a message whose Message Expiry Interval has passed is not delivered to an
    offline subscriber that reconnects; [MQTT-3.3.2-6] the interval is decremented by the
    time spent waiting."""
    sub = raw(broker, 5, "exp-sub", **_persistent(5))
    sub.subscribe([("exp/t", 1)])
    sub.disconnect()
    with raw(broker, 5, "exp-pub") as pub:
        pub.publish("exp/t", b"short", qos=1, pid=1, props={"message_expiry_interval": 1})
        pub.publish("exp/t", b"long", qos=1, pid=2, props={"message_expiry_interval": 100})
    elapse(2.2)
    with raw(broker, 5) as again:
        assert again.connect("exp-sub", **_persistent(5)).session_present
        p = again.expect(PUBLISH_T)
        again.ack(p)
        assert p.payload == b"long"
        remaining = p.props.get("message_expiry_interval")
        assert remaining is not None and remaining <= 98, remaining
        assert again.is_open(0.3)
        with pytest.raises(TimeoutError):
            again.read(0.3)


def test_message_expiry_forwarded_to_online_subscriber(clients):
    """[MQTT-3.3.2-6] the forwarded Message Expiry Interval is the received one minus the
    time the message waited (at most the original)."""
    sub = clients.new()
    sub.subscribe("expo/t", 1)
    pub = clients.new()
    pub.publish("expo/t", b"x", qos=1, properties=props(PUBLISH, MessageExpiryInterval=50))
    m = sub.expect_message()
    assert 0 < m.properties.MessageExpiryInterval <= 50
    pub.publish("expo/t", b"y", qos=1)
    m = sub.expect_message()
    assert not hasattr(m.properties, "MessageExpiryInterval")


# ---- topic aliases (v5) -----------------------------------------------------------------------

def test_inbound_topic_alias(broker):
    """[MQTT-3.3.2-12] a PUBLISH with an empty topic and a known Topic Alias uses the mapped
    topic; a new topic for the same alias replaces the mapping."""
    with raw(broker, 5, "alias-sub") as sub, raw(broker, 5) as pub:
        ack = pub.connect("alias-pub")
        maximum = ack.props.get("topic_alias_maximum", 0)
        if maximum < 1:
            pytest.skip("broker announces no topic aliases")
        sub.subscribe([("alias/#", 1)])
        pub.publish("alias/one", b"1", qos=1, pid=1, props={"topic_alias": 1})
        pub.publish("", b"2", qos=1, pid=2, props={"topic_alias": 1})
        pub.publish("alias/two", b"3", qos=1, pid=3, props={"topic_alias": 1})
        pub.publish("", b"4", qos=1, pid=4, props={"topic_alias": 1})
        got = [(p.topic, p.payload) for p in collect(sub, 4)]
        assert got == [("alias/one", b"1"), ("alias/one", b"2"), ("alias/two", b"3"),
                       ("alias/two", b"4")]


@pytest.mark.parametrize("alias", ["zero", "over_max"])
def test_topic_alias_out_of_range(broker, alias):
    """[MQTT-3.3.2-8]/[MQTT-3.3.2-9] Topic Alias 0 or above the announced Topic Alias Maximum:
    DISCONNECT 0x94 Topic Alias invalid, and other clients keep working."""
    with raw(broker, 5) as bystander, raw(broker, 5) as pub:
        bystander.connect("alias-bystander")
        maximum = pub.connect("alias-bad").props.get("topic_alias_maximum", 0)
        value = 0 if alias == "zero" else maximum + 1
        pub.try_send(publish_packet("alias/x", b"x", qos=0, props={"topic_alias": value}))
        if alias == "zero":
            # 0x94 is named for an alias above the maximum; 0 is also fairly a protocol error.
            d = pub.expect_closed()
            assert d is None or d.reason in (RC_TOPIC_ALIAS_INVALID, RC_PROTOCOL_ERROR, 0x81)
        else:
            pub.expect_closed_with(RC_TOPIC_ALIAS_INVALID)
        bystander.ping()


def test_unknown_topic_alias_with_empty_topic(broker):
    """3.3.2.3.4: an empty topic with an alias that has no mapping is a Protocol
    Error: DISCONNECT 0x82."""
    with raw(broker, 5) as pub:
        if pub.connect("alias-unknown").props.get("topic_alias_maximum", 0) < 1:
            pytest.skip("broker announces no topic aliases")
        pub.try_send(publish_packet("", b"x", qos=0, props={"topic_alias": 1}))
        pub.expect_closed_with(RC_PROTOCOL_ERROR, required=broker.is_rampart)


def test_empty_topic_without_alias_is_protocol_error(broker):
    """[MQTT-4.7.3-1] a topic name is at least one character: an empty topic with no Topic Alias
    is a Protocol Error (DISCONNECT 0x82)."""
    with raw(broker, 5, "empty-topic") as pub:
        pub.try_send(publish_packet("", b"x", qos=0))
        d = pub.expect_closed()
        if d is not None:
            assert d.reason in (RC_PROTOCOL_ERROR, 0x90, 0x81)


# ---- maximum packet size of the client (v5) ---------------------------------------------------

def test_client_maximum_packet_size_honoured(broker):
    """[MQTT-3.1.2-24] (v5 3.1.2.11.4) the server never sends a packet larger than the client's
    Maximum Packet Size: such a message is dropped for that client only [MQTT-3.1.2-25]."""
    with raw(broker, 5) as small, raw(broker, 5, "big-sub") as big, \
            raw(broker, 5, "mps-pub") as pub:
        small.connect("small-sub", props={"maximum_packet_size": 128})
        small.subscribe([("mps/#", 1)])
        big.subscribe([("mps/#", 1)])
        pub.publish("mps/t", b"L" * 500, qos=1, pid=1)
        pub.publish("mps/t", b"small", qos=1, pid=2)
        got = collect(small, 1)
        assert got[0].payload == b"small"
        assert [p.payload for p in collect(big, 2)] == [b"L" * 500, b"small"]


# ---- property pass-through (v5) ---------------------------------------------------------------

def test_publish_properties_forwarded(clients):
    """[MQTT-3.3.2-4] Payload Format Indicator, [MQTT-3.3.2-20] Content Type, Response Topic,
    [MQTT-3.3.2-15] Response Topic, [MQTT-3.3.2-16] Correlation Data and [MQTT-3.3.2-17]/[MQTT-3.3.2-18] User Properties are
    forwarded unaltered and in order."""
    sub = clients.new()
    sub.subscribe("prop/t", 1)
    pub = clients.new()
    user = [("b", "2"), ("a", "1"), ("a", "0"), ("ключ", "значение")]
    pub.publish("prop/t", "héllo".encode(), qos=1, properties=props(
        PUBLISH, PayloadFormatIndicator=1, ContentType="text/plain; charset=utf-8",
        ResponseTopic="prop/reply", CorrelationData=b"\x00\x01corr", UserProperty=user))
    m = sub.expect_message()
    p = m.properties
    assert m.payload == "héllo".encode()
    assert p.PayloadFormatIndicator == 1
    assert p.ContentType == "text/plain; charset=utf-8"
    assert p.ResponseTopic == "prop/reply"
    assert p.CorrelationData == b"\x00\x01corr"
    assert p.UserProperty == user


def test_request_response(clients):
    """Request/response (4.10): the responder publishes to the Response Topic with the
    Correlation Data; the requester receives it."""
    responder = clients.new()
    responder.subscribe("svc/req", 1)
    requester = clients.new()
    requester.subscribe("svc/resp/me", 1)
    requester.publish("svc/req", b"ping", qos=1, properties=props(
        PUBLISH, ResponseTopic="svc/resp/me", CorrelationData=b"42"))
    req = responder.expect_message()
    responder.publish(req.properties.ResponseTopic, b"pong", qos=1, properties=props(
        PUBLISH, CorrelationData=req.properties.CorrelationData))
    resp = requester.expect_message()
    assert (resp.topic, resp.payload, resp.properties.CorrelationData) == (
        "svc/resp/me", b"pong", b"42")


def test_large_payload_round_trip(clients):
    """A payload near max_packet_size (1 MiB) passes intact."""
    sub = clients.new()
    sub.subscribe("big/t", 1)
    pub = clients.new()
    data = bytes(range(256)) * 4000  # 1,024,000 bytes
    pub.publish("big/t", data, qos=1, timeout=15)
    m = sub.expect_message(timeout=15)
    assert m.payload == data


# ---- server limits (Rampart configuration) ----------------------------------------------------

@pytest.mark.rampart_only
def test_maximum_qos_enforced(broker_factory):
    """[MQTT-3.2.2-9]/[MQTT-3.2.2-11] CONNACK announces Maximum QoS; a PUBLISH above it gets
    DISCONNECT 0x9B QoS not supported; a SUBSCRIBE above it is granted the maximum."""
    b = broker_factory(mqtt={"max_qos": 1})
    with raw(b, 5) as c, raw(b, 5) as bystander:
        bystander.connect("mq-by")
        assert c.connect("mq").props.get("maximum_qos") == 1
        assert c.subscribe([("mq/t", 2)]).reasons == [1]
        c.try_send(publish_packet("mq/t", b"x", qos=2, pid=1))
        c.expect_closed_with(0x9B)
        bystander.ping()


@pytest.mark.rampart_only
def test_retain_not_available(broker_factory):
    """[MQTT-3.2.2-14] with Retain Available 0, a retained PUBLISH gets DISCONNECT 0x9A."""
    b = broker_factory(mqtt={"retain_available": False})
    with raw(b, 5) as c:
        assert c.connect("noretain").props.get("retain_available") == 0
        c.try_send(publish_packet("nr/t", b"x", qos=0, retain=True))
        c.expect_closed_with(0x9A)
