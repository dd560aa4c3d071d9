"""Spec sections 3.8-3.11, 4.7, 4.8: SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK, topic filters and
wildcards, $-topics, shared subscriptions, subscription options and identifiers."""

import time

import pytest

from mqtt_client import SUBSCRIBE, barrier, props
from mqtt_client import SubscribeOptions as Opts
from mqtt_raw import (PUBLISH, RC_NO_SUBSCRIPTION_EXISTED, RC_PROTOCOL_ERROR,
                      RC_TOPIC_FILTER_INVALID, SUBACK, UNSUBACK, Closed, raw, subscribe_packet,
                      unsubscribe_packet)

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
FAIL = {4: 0x80, 5: RC_TOPIC_FILTER_INVALID}


def received_topics(sub, pub, marker_topic="zz/barrier"):
    """Topics that reached `sub` before a marker published after them (sub must be subscribed
    to marker_topic)."""
    return sorted({m.topic for m in barrier(pub, sub, marker_topic)})


# ---- wildcards (4.7) --------------------------------------------------------------------------

TOPICS = ["sport", "sport/", "sport/tennis", "sport/tennis/player1",
          "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon",
          "sport/tennis/player2", "/finance", "finance", "a//b", "$SYSX/x", "$test/sport"]

WILDCARD_CASES = {
    # [MQTT-4.7.1-2] '#' matches the parent and any number of levels
    "sport/tennis/player1/#": ["sport/tennis/player1", "sport/tennis/player1/ranking",
                               "sport/tennis/player1/score/wimbledon"],
    "sport/#": ["sport", "sport/", "sport/tennis", "sport/tennis/player1",
                "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon",
                "sport/tennis/player2"],
    # [MQTT-4.7.2-1] '#' alone does not match topics starting with '$'
    "#": ["/finance", "a//b", "finance", "sport", "sport/", "sport/tennis",
          "sport/tennis/player1", "sport/tennis/player1/ranking",
          "sport/tennis/player1/score/wimbledon", "sport/tennis/player2"],
    # [MQTT-4.7.1-3] '+' matches exactly one level, including an empty one
    "sport/tennis/+": ["sport/tennis/player1", "sport/tennis/player2"],
    "sport/+": ["sport/", "sport/tennis"],
    "+": ["finance", "sport"],
    "+/+": ["/finance", "sport/", "sport/tennis"],
    "/+": ["/finance"],
    "+/tennis/#": ["sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking",
                   "sport/tennis/player1/score/wimbledon", "sport/tennis/player2"],
    "a/+/b": ["a//b"],
    "$test/#": ["$test/sport"],
    "+/sport": [],  # [MQTT-4.7.2-1] '+' at the first level does not match '$test'
    "sport/tennis/player1": ["sport/tennis/player1"],
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("flt", list(WILDCARD_CASES))
def test_wildcard_matching(clients, flt, version):
    """[MQTT-4.7.1-1..3] wildcard semantics and [MQTT-4.7.2-1] $-topics excluded from
    wildcards at the first level; [MQTT-4.7.3-4] matching without normalisation."""
    sub = clients.new(version=version)
    assert sub.subscribe([(flt, 0), ("zz/barrier", 2)]) == [0, 2]
    pub = clients.new(version=version)
    for t in TOPICS:
        pub.publish(t, b"x", qos=0)
    expected = sorted(WILDCARD_CASES[flt] + (["zz/barrier"] if flt == "#" else []))
    got = received_topics(sub, pub)
    if flt == "#":
        got = sorted(set(got) | {"zz/barrier"})
    assert got == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_topics_are_case_sensitive_and_exact(clients, version):
    """[MQTT-4.7.3-3]/[MQTT-4.7.3-4] topics match byte for byte: case, spaces and trailing
    slashes are significant."""
    sub = clients.new(version=version)
    sub.subscribe([("ACCOUNTS", 0), ("zz/barrier", 2)])
    pub = clients.new(version=version)
    for t in ["accounts", "Accounts", "ACCOUNTS/", " ACCOUNTS", "ACCOUNTS"]:
        pub.publish(t, b"x")
    assert received_topics(sub, pub) == ["ACCOUNTS"]


# ---- SUBACK -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_suback_one_code_per_filter_in_order(broker, version):
    """[MQTT-3.8.4-1] SUBACK answers SUBSCRIBE with [MQTT-3.8.4-2] the same packet id and
    [MQTT-3.8.4-6] one return code per filter, in order; granted QoS as requested."""
    with raw(broker, version, "suback") as c:
        ack = c.subscribe([("a/0", 0), ("a/1", 1), ("a/2", 2), ("a/+/x", 1)], pid=4321)
        assert ack.pid == 4321 and ack.reasons == [0, 1, 2, 1]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("flt", ["a/#/b", "a#", "a/b#", "+a", "a/+b", "#/a", "a/b/c#",
                                 "$share/g", "$share//t", "$share/g+/t", "$share/g#/t"])
def test_invalid_filter_is_refused(broker, version, flt):
    """[MQTT-4.7.1-1] '#' only last and alone in its level, '+' alone in its level; invalid
    shared-subscription names [MQTT-4.8.2-1]/[MQTT-4.8.2-2]. Rampart answers SUBACK 0x8F (v5)
    / 0x80 (3.1.1) for that filter and grants the valid filters of the same SUBSCRIBE; a peer
    may instead close the connection (v5: after DISCONNECT 0x81/0x82/0x8F)."""
    # 3.1.1 has no shared subscriptions: these two are ordinary valid filters there.
    valid = version == 4 and flt in ("$share/g", "$share//t")
    with raw(broker, version, "badflt") as c, raw(broker, version, "badflt-by") as bystander:
        c.send(subscribe_packet(1, [("ok/1", 1), (flt, 1), ("ok/2", 0)], version))
        try:
            p = c.read()
        except Closed:
            p = None
        if p is not None and p.type == SUBACK:
            assert p.reasons[0] == 1 and p.reasons[2] == 0, p
            if valid:
                assert p.reasons[1] in (1, FAIL[version])
            else:
                if not broker.is_rampart and p.reasons[1] < 0x80:
                    pytest.xfail(f"peer grants the invalid filter {flt!r}")
                assert p.reasons[1] == FAIL[version]
            c.ping()
        else:
            assert not broker.is_rampart, f"Rampart answers SUBACK with a failure code, got {p!r}"
            assert not valid
            if p is not None:
                assert p.name == "DISCONNECT" and p.reason in (0x81, 0x82, 0x8F), p
        bystander.ping()


# ---- UNSUBSCRIBE ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(clients, version):
    """[MQTT-3.10.4-1]/[MQTT-3.10.4-2] after UNSUBSCRIBE the server stops adding messages for
    the filter; [MQTT-3.10.4-4] it answers UNSUBACK."""
    sub = clients.new(version=version)
    sub.subscribe([("uns/a", 1), ("uns/b", 1), ("zz/barrier", 2)])
    pub = clients.new(version=version)
    codes = sub.unsubscribe("uns/a")
    if version == 5:
        assert codes == [0]
    pub.publish("uns/a", b"gone", qos=1)
    pub.publish("uns/b", b"kept", qos=1)
    assert received_topics(sub, pub) == ["uns/b"]


def test_unsuback_reason_codes_v5(broker):
    """[MQTT-3.11.3-1]/[MQTT-3.11.3-2] UNSUBACK has one reason code per filter, in order:
    0x00 Success or 0x11 No subscription existed; [MQTT-3.11.2-1] same packet id."""
    with raw(broker, 5, "unsuback") as c:
        c.subscribe([("u/1", 0), ("u/3/#", 1)])
        c.send(unsubscribe_packet(77, ["u/1", "u/2", "u/3/#", "u/1"]))
        ack = c.expect(UNSUBACK)
        assert ack.pid == 77
        assert ack.reasons == [0x00, RC_NO_SUBSCRIPTION_EXISTED, 0x00, RC_NO_SUBSCRIPTION_EXISTED]


def test_unsuback_v311(broker):
    """3.1.1 [MQTT-3.10.4-4]/[MQTT-3.10.4-5]: UNSUBACK with the same packet id, even when no
    subscription matched."""
    with raw(broker, 4, "unsuback4") as c:
        c.send(unsubscribe_packet(78, ["never/subscribed"], version=4))
        ack = c.expect(UNSUBACK)
        assert ack.pid == 78 and ack.body == b"\x00\x4e"


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_matches_filter_literally(clients, version):
    """[MQTT-3.10.4-1] UNSUBSCRIBE compares filters character by character: "a/+" does not
    remove "a/b"."""
    sub = clients.new(version=version)
    sub.subscribe([("lit/b", 1), ("zz/barrier", 2)])
    pub = clients.new(version=version)
    codes = sub.unsubscribe("lit/+")
    if version == 5:
        assert codes == [RC_NO_SUBSCRIPTION_EXISTED]
    pub.publish("lit/b", b"x", qos=1)
    assert received_topics(sub, pub) == ["lit/b"]


# ---- shared subscriptions (v5, 4.8.2) ---------------------------------------------------------

def test_shared_subscription_one_member_per_message(clients):
    """4.8.2: each message of a shared subscription goes to exactly one member
    of the group; other groups and ordinary subscribers each get every message."""
    a = clients.new()
    b = clients.new()
    other = clients.new()
    plain = clients.new()
    for c in (a, b):
        assert c.subscribe("$share/g1/sh/+", 1) == [1]
    assert other.subscribe("$share/g2/sh/#", 1) == [1]
    assert plain.subscribe("sh/t", 1) == [1]
    pub = clients.new()
    n = 20
    for i in range(n):
        pub.publish("sh/t", str(i).encode(), qos=1)
    assert sorted(int(m.payload) for m in plain.expect_messages(n)) == list(range(n))
    assert sorted(int(m.payload) for m in other.expect_messages(n)) == list(range(n))
    got_a, got_b = [], []
    deadline = time.monotonic() + 5
    while len(got_a) + len(got_b) < n and time.monotonic() < deadline:
        for c, acc in ((a, got_a), (b, got_b)):
            try:
                acc.append(int(c.messages.get(timeout=0.05).payload))
            except Exception:
                pass
    assert sorted(got_a + got_b) == list(range(n)), "each message exactly once in the group"
    a.expect_no_message(0.2)
    b.expect_no_message(0.2)


@pytest.mark.rampart_only
def test_shared_subscription_round_robin(clients):
    """Rampart's default strategy (round_robin) spreads messages over the members."""
    members = [clients.new() for _ in range(2)]
    for c in members:
        c.subscribe("$share/rr/rr/t", 0)
    pub = clients.new()
    for i in range(10):
        pub.publish("rr/t", b"x", qos=1)
    counts = []
    for c in members:
        got = 0
        while True:
            try:
                c.messages.get(timeout=0.5 if got < 5 else 0.1)
                got += 1
            except Exception:
                break
        counts.append(got)
    assert counts == [5, 5]


@pytest.mark.peer_deviates("Mosquitto keeps the message for the departed member")
def test_shared_subscription_redelivered_when_member_leaves(broker):
    """4.8.2: a QoS 1 message not acknowledged by a member whose session ends is sent to another
    member of the group."""
    with raw(broker, 5, "sh-a") as a, raw(broker, 5, "sh-b") as b, raw(broker, 5, "sh-p") as p:
        a.subscribe([("$share/g/red/t", 1)])
        b.subscribe([("$share/g/red/t", 1)])
        p.publish("red/t", b"m0", qos=1, pid=1)
        p.publish("red/t", b"m1", qos=1, pid=2)
        # Each member got one of the two (round robin) or one got both; neither acknowledges.
        got = {}
        for name, c in (("a", a), ("b", b)):
            while True:
                try:
                    m = c.expect(PUBLISH, timeout=0.5)
                except TimeoutError:
                    break
                got.setdefault(name, []).append(m.payload)
        assert sorted(sum(got.values(), [])) == [b"m0", b"m1"]
        leaving, staying = ("a", b) if "a" in got else ("b", a)
        (a if leaving == "a" else b).close()  # session expiry 0: the session ends now
        lost = got[leaving]
        again = []
        while len(again) < len(lost):
            m = staying.expect(PUBLISH, timeout=5)
            staying.ack(m)
            if m.payload in lost:
                again.append(m.payload)
        assert sorted(again) == sorted(lost)


@pytest.mark.peer_deviates("Mosquitto grants it")
def test_shared_subscription_no_local_is_protocol_error(broker):
    """[MQTT-3.8.3-4] No Local set on a shared subscription is a Protocol Error
    (DISCONNECT 0x82)."""
    with raw(broker, 5, "sh-nl") as c:
        c.send(subscribe_packet(1, [("$share/g/nl/t", 0x04 | 1)]))
        from mqtt_raw import DISCONNECT
        try:
            p = c.read(5)
        except Closed:
            return
        # A v5 server may say why before closing: DISCONNECT 0x82 is the right answer.
        assert p.type == DISCONNECT and p.reason == RC_PROTOCOL_ERROR, p


def test_shared_subscription_unsubscribe(clients):
    """UNSUBSCRIBE of "$share/g/f" leaves the group: the other member then gets everything."""
    a = clients.new()
    b = clients.new()
    a.subscribe("$share/u/shu/t", 1)
    b.subscribe("$share/u/shu/t", 1)
    assert a.unsubscribe("$share/u/shu/t") == [0]
    pub = clients.new()
    for i in range(4):
        pub.publish("shu/t", str(i).encode(), qos=1)
    assert [int(m.payload) for m in b.expect_messages(4)] == [0, 1, 2, 3]
    a.expect_no_message(0.2)


# ---- subscription options (v5) ----------------------------------------------------------------

def test_no_local(clients):
    """[MQTT-3.8.3-3] with No Local the server does not send a client its own publications on
    that subscription; others still get them."""
    me = clients.new()
    me.subscribe([("nl/t", Opts(qos=1, noLocal=True)), ("zz/barrier", Opts(qos=2))])
    other = clients.new()
    other.subscribe("nl/t", 1)
    me.publish("nl/t", b"mine", qos=1)
    assert other.expect_message().payload == b"mine"
    assert barrier(me, me, "zz/barrier") == []
    other.publish("nl/t", b"theirs", qos=1)
    assert me.expect_message().payload == b"theirs"


def test_without_no_local_own_messages_are_received(clients):
    """No Local 0 (and 3.1.1): a client receives its own publications."""
    me = clients.new()
    me.subscribe("own/t", 1)
    me.publish("own/t", b"echo", qos=1)
    assert me.expect_message().payload == b"echo"


def test_retain_as_published(clients):
    """[MQTT-3.3.1-12] Retain As Published 0: forwarded with RETAIN 0; [MQTT-3.3.1-13] RAP 1:
    RETAIN as published (for messages forwarded live)."""
    rap0 = clients.new()
    rap1 = clients.new()
    rap0.subscribe("rap/t", options=Opts(qos=1, retainAsPublished=False))
    rap1.subscribe("rap/t", options=Opts(qos=1, retainAsPublished=True))
    pub = clients.new()
    pub.publish("rap/t", b"r", qos=1, retain=True)
    pub.publish("rap/t", b"n", qos=1, retain=False)
    assert [(m.payload, m.retain) for m in rap0.expect_messages(2)] == [(b"r", False),
                                                                       (b"n", False)]
    assert [(m.payload, m.retain) for m in rap1.expect_messages(2)] == [(b"r", True),
                                                                       (b"n", False)]
    pub.publish("rap/t", b"", qos=1, retain=True)  # clean up the retained message


@pytest.mark.parametrize("version", VERSIONS)
def test_retain_flag_cleared_for_live_messages_v311(clients, version):
    """[MQTT-3.3.1-9] (3.1.1) a retained message forwarded to an existing subscription is sent
    with RETAIN 0 (v5 with RAP 0 likewise)."""
    sub = clients.new(version=version)
    sub.subscribe("live/t", 1)
    pub = clients.new(version=version)
    pub.publish("live/t", b"r", qos=1, retain=True)
    m = sub.expect_message()
    assert m.retain is False
    pub.publish("live/t", b"", qos=1, retain=True)


@pytest.mark.parametrize("handling,first,again", [(0, True, True), (1, True, False),
                                                  (2, False, False)])
def test_retain_handling(clients, handling, first, again):
    """Retain Handling: [MQTT-3.3.1-9] 0 sends retained messages at every subscribe,
    [MQTT-3.3.1-10] 1 only if the subscription did not exist, [MQTT-3.3.1-11] 2 never."""
    pub = clients.new()
    topic = f"rh/{handling}"
    pub.publish(topic, b"kept", qos=1, retain=True)
    sub = clients.new()
    sub.subscribe([("zz/barrier", Opts(qos=2))])
    for expect in (first, again):
        sub.subscribe(topic, options=Opts(qos=1, retainHandling=handling))
        got = [(m.topic, m.payload, m.retain) for m in barrier(pub, sub, "zz/barrier")]
        assert got == ([(topic, b"kept", True)] if expect else [])
    pub.publish(topic, b"", qos=1, retain=True)


def test_subscription_identifier(clients):
    """3.8.2.1.2: the Subscription Identifier of the matching subscription is sent with
    each message [MQTT-3.3.4-3]; overlapping subscriptions: all identifiers in the one copy
    [MQTT-3.3.4-4], or each copy with its own; none for a subscription without one."""
    sub = clients.new()
    sub.subscribe("sid/a/+", 1, properties=props(SUBSCRIBE, SubscriptionIdentifier=7))
    sub.subscribe("sid/#", 1, properties=props(SUBSCRIBE, SubscriptionIdentifier=268435455))
    sub.subscribe("plain/t", 1)
    pub = clients.new()
    pub.publish("sid/a/x", b"both", qos=1)
    pub.publish("sid/b", b"one", qos=1)
    pub.publish("plain/t", b"none", qos=1)
    ids = []
    while True:
        m = sub.expect_message()
        if m.payload != b"both":
            break
        ids += list(getattr(m.properties, "SubscriptionIdentifier", []))
    assert sorted(ids) == [7, 268435455]
    assert m.payload == b"one"
    assert list(m.properties.SubscriptionIdentifier) == [268435455]
    m = sub.expect_message()
    assert m.payload == b"none"
    assert not hasattr(m.properties, "SubscriptionIdentifier")


def test_subscription_identifier_zero_is_protocol_error(broker):
    """3.8.2.1.2: a Subscription Identifier of 0 is a Protocol Error."""
    with raw(broker, 5, "sid0") as c:
        c.send(subscribe_packet(1, [("sid0/t", 1)], props=[("subscription_identifier", 0)]))
        c.expect_closed_with(RC_PROTOCOL_ERROR if broker.is_rampart else None)


def test_subscribe_options_reserved_bits(broker):
    """[MQTT-3.8.3-5] reserved bits 6-7 of the subscription options must be 0 (Malformed)."""
    with raw(broker, 5, "optbits") as c:
        c.send(subscribe_packet(1, [("ob/t", 0xC1)]))
        d = c.expect_closed()
        if d is not None:
            assert d.reason in (0x81, RC_PROTOCOL_ERROR)


def test_retain_handling_3_is_protocol_error(broker):
    """3.8.3.1: Retain Handling 3 is a Protocol Error."""
    with raw(broker, 5, "rh3") as c:
        c.send(subscribe_packet(1, [("rh3/t", 0x30 | 1)]))
        d = c.expect_closed()
        if d is not None:
            assert d.reason in (0x81, RC_PROTOCOL_ERROR)


# ---- features switched off (Rampart configuration) --------------------------------------------

@pytest.mark.rampart_only
@pytest.mark.parametrize("feature,flt,code,prop", [
    ("wildcard_subscriptions", "wc/#", 0xA2, "wildcard_subscription_available"),
    ("shared_subscriptions", "$share/g/wc/t", 0x9E, "shared_subscription_available"),
])
def test_unavailable_feature_refused(broker_factory, feature, flt, code, prop):
    """3.2.2.3.12/3.2.2.3.14: CONNACK announces the feature as 0; a SUBSCRIBE using it gets the reason
    code in SUBACK or DISCONNECT (0xA2 wildcards / 0x9E shared)."""
    b = broker_factory(mqtt={feature: False})
    with raw(b, 5) as c:
        assert c.connect("feat").props.get(prop) == 0
        c.send(subscribe_packet(1, [(flt, 1)]))
        try:
            ack = c.expect(SUBACK)
            assert ack.reasons == [code]
        except Closed:
            pass


@pytest.mark.rampart_only
def test_subscription_identifiers_unavailable(broker_factory):
    """3.2.2.3.13: Subscription Identifiers Available 0: a SUBSCRIBE with one gets
    DISCONNECT 0xA1."""
    b = broker_factory(mqtt={"subscription_identifiers": False})
    with raw(b, 5) as c:
        assert c.connect("nosid").props.get("subscription_identifier_available") == 0
        c.send(subscribe_packet(1, [("x/t", 1)], props=[("subscription_identifier", 5)]))
        c.expect_closed_with(0xA1)
