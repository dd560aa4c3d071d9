"""MQTT 5.0 conformance: normative statements the other test files do not already cover.

Each test names the behaviour and cites the statement ([MQTT-x.y.z-n], 5.0 numbering) in its
docstring. Raw packets throughout, since a client library would hide most of these. Absence is
proved with a barrier (a later message that must arrive first), never with a sleep.
"""

import time

import pytest

from mqtt_client import unique_id
from mqtt_raw import (AUTH, CONNACK, DISCONNECT, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
                      RC_PROTOCOL_ERROR, RC_TOPIC_ALIAS_INVALID, Closed, RawClient, ack_packet,
                      connect_packet, encode_props, mstr, packet, publish_packet, raw,
                      UNSUBACK, subscribe_packet, u16, unsubscribe_packet, varint)

V = 5


def uid(prefix):
    return unique_id(prefix)


def connack_of(broker, data: bytes):
    """Sends a hand-built CONNECT; returns (CONNACK or None, closed-after)."""
    with RawClient(broker.host, broker.port, V) as c:
        c.send(data)
        try:
            ack = c.read()
        except Closed:  # closed without CONNACK: a valid refusal
            return None
        if ack.type != CONNACK:
            raise AssertionError(f"expected CONNACK, got {ack!r}")
        if ack.reason != 0:
            c.expect_closed()
        return ack


def refused(broker, data: bytes, codes):
    """[MQTT-3.2.2-6]/[MQTT-3.2.2-7] a refused CONNECT gets a CONNACK with one of `codes` (or
    just a close), Session Present 0, and the connection is closed."""
    ack = connack_of(broker, data)
    if ack is not None:
        assert ack.reason in codes, f"CONNACK 0x{ack.reason:02x}, expected one of {codes}"
        assert not ack.session_present


def barrier(pub, sub, topic):
    """Publishes a marker on `topic` (which `sub` subscribes) and returns the next PUBLISH
    `sub` receives: anything that should not have arrived would come before it."""
    pub.publish(topic, b"barrier", qos=1, pid=999)
    return sub.expect(PUBLISH)


# ---- CONNECT and CONNACK ----------------------------------------------------------------------

@pytest.mark.parametrize("props", [
    pytest.param([("session_expiry_interval", 1), ("session_expiry_interval", 2)], id="dup-sei"),
    pytest.param([("receive_maximum", 5), ("receive_maximum", 5)], id="dup-rm"),
    pytest.param([("maximum_packet_size", 0)], id="max-packet-size-0"),
    pytest.param([("request_problem_information", 2)], id="rpi-2"),
    pytest.param([("request_response_information", 2)], id="rri-2"),
    pytest.param([("authentication_data", b"x")], id="auth-data-without-method",
                 marks=pytest.mark.peer_deviates("Mosquitto accepts it")),
    pytest.param([("topic_alias", 1)], id="topic-alias-in-connect"),
])
def test_connect_property_errors_are_refused(broker, props):
    """3.1.2.11: a duplicated CONNECT property, Maximum Packet Size 0, a Request Problem /
    Response Information other than 0 or 1, Authentication Data without Authentication Method
    and a property CONNECT cannot carry are each a Protocol Error or Malformed Packet: CONNACK
    0x81/0x82 with Session Present 0, then close [MQTT-3.2.2-6], [MQTT-3.2.2-7]."""
    refused(broker, connect_packet(uid("cp"), V, props=props), {0x81, 0x82})


def test_will_property_duplicate_is_refused(broker):
    """3.1.3.2: a Will Property included twice (Content Type) is a Protocol Error."""
    will = {"topic": "w/t", "payload": b"x",
            "props": [("content_type", "a"), ("content_type", "b")]}
    refused(broker, connect_packet(uid("wp"), V, will=will), {0x81, 0x82})


def test_will_property_not_allowed_is_refused(broker):
    """3.1.3.2: Will Properties are the PUBLISH ones plus Will Delay Interval; a Topic Alias
    there is a Malformed Packet / Protocol Error."""
    will = {"topic": "w/t", "payload": b"x", "props": [("topic_alias", 1)]}
    refused(broker, connect_packet(uid("wpa"), V, will=will), {0x81, 0x82})


def test_unsupported_authentication_method_is_refused(broker):
    """[MQTT-4.12.0-1] an Authentication Method the server does not support: CONNACK 0x8C
    (Bad authentication method) or 0x87 (Not authorized), and the connection is closed."""
    refused(broker, connect_packet(uid("am"), V, props={"authentication_method": "NOPE-1"}),
            {0x8C, 0x87})


@pytest.mark.rampart_only  # the peer config has no such knob here
def test_will_qos_above_maximum_qos_is_refused(broker_factory):
    """[MQTT-3.2.2-12] a server that does not support QoS 2 refuses a CONNECT with Will QoS 2:
    CONNACK 0x9B (QoS not supported), then close."""
    b = broker_factory(mqtt={"max_qos": 1})
    refused(b, connect_packet(uid("wq"), V, will={"topic": "w/q", "qos": 2}), {0x9B})
    # Will QoS 1 is within the limit.
    with raw(b, V, uid("wq1"), will={"topic": "w/q", "qos": 1}):
        pass


@pytest.mark.rampart_only  # the peer config has no such knob here
def test_will_retain_without_retain_available_is_refused(broker_factory):
    """[MQTT-3.2.2-13]/3.2.2.3.5 a server without retained messages refuses a CONNECT with Will
    Retain 1: CONNACK 0x9A (Retain not supported), then close."""
    b = broker_factory(mqtt={"retain_available": False})
    refused(b, connect_packet(uid("wr"), V, will={"topic": "w/r", "retain": True}), {0x9A})


def test_unsupported_protocol_version_is_refused(broker):
    """[MQTT-3.1.2-2] an unsupported Protocol Version may get a CONNACK (0x84, or 0x01 in the
    3.1.1 form the client may be speaking) and the connection is closed."""
    body = mstr("MQTT") + bytes([6, 0x02]) + u16(60) + varint(0) + mstr(uid("pv"))
    refused(broker, packet(1, 0, body), {0x84, 0x01})


def test_connack_success_session_present_zero_without_session(broker):
    """[MQTT-3.2.2-3] Clean Start 0 and no existing session: Session Present 0."""
    with raw(broker, V) as c:
        ack = c.connect(uid("nosess"), clean=False,
                        props={"session_expiry_interval": 10})
        assert not ack.session_present


def test_connack_assigned_client_identifier_is_usable(broker):
    """[MQTT-3.2.2-16] the Assigned Client Identifier is unique and is the session's id: a
    second connection with it and Clean Start 0 resumes the session."""
    with raw(broker, V) as c:
        ack = c.connect("", clean=True, props={"session_expiry_interval": 30})
        cid = ack.props.get("assigned_client_identifier")
        assert cid
        c.subscribe([("aci/t", 1)])
        c.disconnect()
    with raw(broker, V) as c2:
        ack2 = c2.connect("", clean=True)
        assert ack2.props.get("assigned_client_identifier") != cid
        c2.disconnect()
    with raw(broker, V) as c3:
        assert c3.connect(cid, clean=False).session_present
        c3.disconnect(0, {"session_expiry_interval": 0})


# ---- PUBLISH: properties ----------------------------------------------------------------------

def test_payload_format_utf8_mismatch(broker):
    """3.3.2.3.2: a PUBLISH with Payload Format Indicator 1 and a payload that is not valid
    UTF-8: the server MAY refuse it with reason 0x99 (PUBACK or DISCONNECT); if it accepts it,
    it forwards payload and indicator unaltered [MQTT-3.3.2-4]."""
    with raw(broker, V, uid("pfs")) as sub, raw(broker, V, uid("pfp")) as pub:
        sub.subscribe([("pf/t", 1)])
        pub.send(publish_packet("pf/t", b"\xff\xfe", qos=1, pid=3,
                                props={"payload_format_indicator": 1}))
        p = pub.read()
        if p.type == PUBACK:
            if p.reason == 0x99:
                assert barrier(pub, sub, "pf/t").payload == b"barrier"
                return
            assert p.reason in (0x00, 0x10)
            m = sub.expect(PUBLISH)
            assert m.payload == b"\xff\xfe"
            assert m.props.get("payload_format_indicator") == 1
        else:
            assert p.type == DISCONNECT and p.reason == 0x99, p


def test_payload_format_valid_utf8_forwarded(broker):
    """[MQTT-3.3.2-4] Payload Format Indicator 1 with valid UTF-8 is forwarded unaltered."""
    with raw(broker, V, uid("pfs")) as sub, raw(broker, V, uid("pfp")) as pub:
        sub.subscribe([("pf/ok", 1)])
        ack = pub.publish("pf/ok", "ü €".encode(), qos=1, props={"payload_format_indicator": 1})
        assert ack.reason == 0
        m = sub.expect(PUBLISH)
        assert m.payload == "ü €".encode()
        assert m.props.get("payload_format_indicator") == 1


@pytest.mark.peer_deviates("Mosquitto accepts a wildcard Response Topic")
def test_response_topic_with_wildcard_is_refused(broker):
    """[MQTT-3.3.2-14] the Response Topic must not contain wildcards: Protocol Error
    (DISCONNECT 0x82, or 0x90 Topic Name invalid, or 0x81)."""
    with raw(broker, V, uid("rtw")) as c:
        c.try_send(publish_packet("rt/t", b"x", qos=1, pid=1, props={"response_topic": "a/#"}))
        d = c.expect_closed()
        if d is not None:
            assert d.reason in (0x81, 0x82, 0x90), d


def test_user_properties_keep_order_and_duplicates_raw(broker):
    """[MQTT-3.3.2-17]/[MQTT-3.3.2-18] User Properties are forwarded unaltered, in order,
    including repeated names, together with other properties in any position."""
    user = [("user_property", ("k", "1")), ("content_type", "c"),
            ("user_property", ("k", "2")), ("user_property", ("a", "")),
            ("correlation_data", b"\x00"), ("user_property", ("k", "1"))]
    with raw(broker, V, uid("ups")) as sub, raw(broker, V, uid("upp")) as pub:
        sub.subscribe([("up/t", 0)])
        pub.publish("up/t", b"x", qos=0, props=user)
        m = sub.expect(PUBLISH)
        assert m.props.all("user_property") == [("k", "1"), ("k", "2"), ("a", ""), ("k", "1")]
        assert m.props.get("content_type") == "c"
        assert m.props.get("correlation_data") == b"\x00"


def test_topic_alias_not_sent_to_subscriber_by_client_mapping(broker):
    """[MQTT-3.3.2-10]/3.3.2.3.4 the Topic Alias a publisher uses is per connection: the
    subscriber receives the full topic name (the server sends no alias it did not establish
    with this client)."""
    with raw(broker, V, uid("tas")) as sub, raw(broker, V, uid("tap")) as pub:
        sub.subscribe([("ta/full", 0)])
        pub.publish("ta/full", b"1", props={"topic_alias": 1})
        pub.publish("", b"2", props={"topic_alias": 1})
        for want in (b"1", b"2"):
            m = sub.expect(PUBLISH)
            assert m.topic == "ta/full" and m.payload == want
            assert "topic_alias" not in m.props


def test_topic_alias_mapping_can_be_replaced(broker):
    """3.3.2.3.4: a PUBLISH with a topic name and an alias already mapped replaces the
    mapping."""
    with raw(broker, V, uid("tars")) as sub, raw(broker, V, uid("tarp")) as pub:
        sub.subscribe([("tr/#", 0)])
        pub.publish("tr/a", b"1", props={"topic_alias": 1})
        pub.publish("tr/b", b"2", props={"topic_alias": 1})
        pub.publish("", b"3", props={"topic_alias": 1})
        got = [(m.topic, m.payload) for m in (sub.expect(PUBLISH) for _ in range(3))]
        assert got == [("tr/a", b"1"), ("tr/b", b"2"), ("tr/b", b"3")]


def test_topic_alias_mapping_ends_with_the_connection(broker):
    """[MQTT-3.3.2-7] Topic Alias mappings are not carried from one network connection to
    another, even with the same session: an alias-only PUBLISH after reconnecting is a
    Protocol Error."""
    cid = uid("tac")
    with raw(broker, V) as c:
        c.connect(cid, clean=False, props={"session_expiry_interval": 30})
        c.publish("tc/t", b"1", qos=1, props={"topic_alias": 1})
        c.disconnect()
    with raw(broker, V) as c:
        assert c.connect(cid, clean=False).session_present
        c.try_send(publish_packet("", b"2", qos=1, pid=2, props={"topic_alias": 1}))
        c.expect_closed_with(RC_PROTOCOL_ERROR)


def test_topic_alias_zero_is_invalid(broker):
    """3.3.2.3.4: a Topic Alias of 0 is a Protocol Error: DISCONNECT 0x94 (or 0x82)."""
    with raw(broker, V, uid("ta0")) as c:
        c.try_send(publish_packet("t/0", b"x", props={"topic_alias": 0}))
        d = c.expect_closed()
        assert d is not None and d.reason in (RC_TOPIC_ALIAS_INVALID, 0x82, 0x81), d


def test_message_expiry_remaining_interval_of_queued_message(broker):
    """[MQTT-3.3.2-6] a message queued for an offline session is delivered with its Message
    Expiry Interval reduced by the time it waited."""
    cid = uid("mei")
    with raw(broker, V) as c:
        c.connect(cid, clean=False, props={"session_expiry_interval": 60})
        c.subscribe([("mei/t", 1)])
        c.disconnect()
    with raw(broker, V, uid("meip")) as pub:
        pub.publish("mei/t", b"x", qos=1, props={"message_expiry_interval": 30})
    time.sleep(1.2)  # protocol time must pass for the interval to shrink
    with raw(broker, V) as c:
        c.connect(cid, clean=False)
        m = c.expect(PUBLISH)
        assert 1 <= m.props.get("message_expiry_interval") <= 29, m
        c.ack(m)


def test_message_without_expiry_has_none_forwarded(broker):
    """3.3.2.3.3: without a Message Expiry Interval the message does not expire and none is
    sent."""
    with raw(broker, V, uid("nes")) as sub, raw(broker, V, uid("nep")) as pub:
        sub.subscribe([("ne/t", 1)])
        pub.publish("ne/t", b"x", qos=1)
        assert "message_expiry_interval" not in sub.expect(PUBLISH).props


# ---- acknowledgements with reason codes -------------------------------------------------------

def test_puback_with_error_reason_completes_the_flow(broker):
    """[MQTT-4.3.2-5]/3.4.2.1 a PUBACK with a failure reason (0x80) still acknowledges the
    message: it is not sent again and the flow goes on."""
    cid = uid("pae")
    with raw(broker, V) as sub, raw(broker, V, uid("paep")) as pub:
        sub.connect(cid, clean=False, props={"session_expiry_interval": 30})
        sub.subscribe([("pae/t", 1)])
        pub.publish("pae/t", b"1", qos=1)
        m = sub.expect(PUBLISH)
        sub.send(ack_packet(PUBACK, m.pid, reason=0x80))
        pub.publish("pae/t", b"2", qos=1)
        m2 = sub.expect(PUBLISH)
        assert m2.payload == b"2" and not m2.dup
        sub.ack(m2)
        sub.disconnect()
    with raw(broker, V) as sub:
        assert sub.connect(cid, clean=False).session_present
        # Nothing is re-sent: the first message was acknowledged.
        with raw(broker, V, uid("paep2")) as pub:
            assert barrier(pub, sub, "pae/t").payload == b"barrier"
        sub.disconnect(0, {"session_expiry_interval": 0})


def test_pubrec_with_error_reason_ends_the_qos2_flow(broker):
    """[MQTT-4.3.3-4]/3.5.2.1 a PUBREC with a reason code of 0x80 or greater ends the QoS 2
    flow: the server sends no PUBREL, and the packet identifier is free again."""
    with raw(broker, V, uid("pre")) as sub, raw(broker, V, uid("prep")) as pub:
        sub.subscribe([("pre/t", 2)])
        pub.publish("pre/t", b"1", qos=2, pid=1)
        m = sub.expect(PUBLISH)
        sub.send(ack_packet(PUBREC, m.pid, reason=0x80))
        pub.publish("pre/t", b"2", qos=2, pid=2)
        m2 = sub.read()
        assert m2.type == PUBLISH and m2.payload == b"2", f"expected the next PUBLISH, got {m2!r}"
        sub.ack(m2)
        sub.finish()


def test_pubrel_answered_with_pubcomp_reason_success(broker):
    """[MQTT-4.3.3-11]/3.7.2.1 the server answers a known PUBREL with PUBCOMP reason 0x00."""
    with raw(broker, V, uid("prc")) as pub:
        comp = pub.publish("prc/t", b"x", qos=2, pid=9)
        assert comp.pid == 9 and comp.reason == 0


# ---- SUBSCRIBE and delivery options -----------------------------------------------------------

def test_subscription_identifier_updated_by_resubscribe(broker):
    """3.8.2.1.2/[MQTT-3.8.4-3] a SUBSCRIBE that replaces a subscription replaces its
    Subscription Identifier too; re-subscribing without one removes it."""
    with raw(broker, V, uid("sidu")) as sub, raw(broker, V, uid("sidp")) as pub:
        sub.subscribe([("sidu/t", 0)], props={"subscription_identifier": 5})
        sub.subscribe([("sidu/t", 0)], pid=2, props={"subscription_identifier": 6})
        pub.publish("sidu/t", b"1")
        assert sub.expect(PUBLISH).props.all("subscription_identifier") == [6]
        sub.subscribe([("sidu/t", 0)], pid=3)
        pub.publish("sidu/t", b"2")
        assert sub.expect(PUBLISH).props.all("subscription_identifier") == []


def test_retained_message_on_subscribe_carries_subscription_identifier(broker):
    """[MQTT-3.3.4-3] a retained message sent because of a SUBSCRIBE carries that
    subscription's identifier."""
    with raw(broker, V, uid("rsp")) as pub:
        pub.publish("rsid/t", b"r", qos=1, retain=True)
    with raw(broker, V, uid("rss")) as sub:
        sub.subscribe([("rsid/#", 1)], props={"subscription_identifier": 77})
        m = sub.expect(PUBLISH)
        assert m.retain and m.props.all("subscription_identifier") == [77]
        sub.ack(m)
    with raw(broker, V, uid("rsc")) as pub:
        pub.publish("rsid/t", b"", qos=1, retain=True)


@pytest.mark.peer_deviates("Mosquitto accepts two Subscription Identifiers")
def test_two_subscription_identifiers_in_subscribe_are_refused(broker):
    """3.8.2.1.2: including the Subscription Identifier more than once in SUBSCRIBE is a
    Protocol Error."""
    with raw(broker, V, uid("sid2")) as c:
        c.send(subscribe_packet(1, [("s2/t", 0)], props=[("subscription_identifier", 1),
                                                          ("subscription_identifier", 2)]))
        d = c.expect_closed()
        assert d is not None and d.reason in (0x81, 0x82), d


def test_subscription_identifier_maximum_value(broker):
    """3.8.2.1.2: the Subscription Identifier ranges 1..268,435,455; the maximum is forwarded
    as is."""
    with raw(broker, V, uid("sidm")) as sub, raw(broker, V, uid("sidmp")) as pub:
        sub.subscribe([("sidm/t", 0)], props={"subscription_identifier": 268435455})
        pub.publish("sidm/t", b"x")
        assert sub.expect(PUBLISH).props.all("subscription_identifier") == [268435455]


def test_retained_sent_on_subscribe_have_retain_flag_without_rap(broker):
    """[MQTT-3.3.1-9] retained messages sent because of a new subscription have RETAIN 1,
    whatever the Retain As Published option."""
    with raw(broker, V, uid("rfp")) as pub:
        pub.publish("rf/t", b"r", qos=1, retain=True)
    with raw(broker, V, uid("rfs")) as sub:
        sub.subscribe([("rf/t", 1)])  # RAP 0
        m = sub.expect(PUBLISH)
        assert m.retain and m.payload == b"r"
        sub.ack(m)
    with raw(broker, V, uid("rfc")) as pub:
        pub.publish("rf/t", b"", qos=1, retain=True)


def test_retain_handling_1_sends_retained_only_for_new_subscription(broker):
    """[MQTT-3.3.1-10] Retain Handling 1: retained messages at subscribe only if the
    subscription did not exist."""
    with raw(broker, V, uid("rh1p")) as pub, raw(broker, V, uid("rh1s")) as sub:
        pub.publish("rh1/t", b"r", qos=1, retain=True)
        sub.subscribe([("rh1/t", 1 | (1 << 4))])
        m = sub.expect(PUBLISH)
        assert m.retain and m.payload == b"r"
        sub.ack(m)
        sub.subscribe([("rh1/t", 1 | (1 << 4))], pid=2)
        assert barrier(pub, sub, "rh1/t").payload == b"barrier"
        pub.publish("rh1/t", b"", qos=1, retain=True)


# ---- shared subscriptions ----------------------------------------------------------------------

@pytest.mark.parametrize("flt", [
    pytest.param("$share/g/", marks=pytest.mark.peer_deviates("Mosquitto accepts it")),
    "$share/a+b/x"])
def test_shared_subscription_invalid_filter(broker, flt):
    """[MQTT-4.8.2-1]/[MQTT-4.8.2-2] a ShareName is at least one character without '/', '+'
    or '#', followed by '/' and a non-empty topic filter: otherwise SUBACK 0x8F (Topic Filter
    invalid) or a Protocol Error / Malformed DISCONNECT (more cases in test_subscribe.py)."""
    with raw(broker, V, uid("shinv")) as c:
        c.send(subscribe_packet(1, [(flt, 0)]))
        p = c.read()
        if p.type == DISCONNECT:
            assert p.reason in (0x81, 0x82, 0x8F), p
        else:
            assert p.reasons == [0x8F], p


@pytest.mark.peer_deviates("Mosquitto sends retained messages to shared subscriptions")
def test_shared_subscription_gets_no_retained_messages(broker):
    """3.3.1.3/4.8.2: retained messages are sent when a new non-shared subscription is made;
    a shared subscription does not receive them at subscribe time."""
    with raw(broker, V, uid("shrp")) as pub:
        pub.publish("shr/t", b"r", qos=1, retain=True)
        with raw(broker, V, uid("shrs")) as sub:
            sub.subscribe([("$share/g1/shr/t", 1)])
            m = barrier(pub, sub, "shr/t")
            assert m.payload == b"barrier" and not m.retain, m
            sub.ack(m)
        pub.publish("shr/t", b"", qos=1, retain=True)


def test_shared_and_nonshared_subscriptions_each_get_a_copy(broker):
    """4.8.2: a session with a shared and a non-shared matching subscription receives one copy
    for each."""
    with raw(broker, V, uid("shns")) as sub, raw(broker, V, uid("shnp")) as pub:
        sub.subscribe([("$share/g2/shn/t", 0), ("shn/t", 0)])
        pub.publish("shn/t", b"x")
        assert sub.expect(PUBLISH).payload == b"x"
        assert sub.expect(PUBLISH).payload == b"x"
        pub.publish("shn/t", b"end")
        # A third copy would come before this.
        assert sub.expect(PUBLISH).payload == b"end"


def test_shared_subscription_qos_is_per_member(broker):
    """[MQTT-4.8.2-3]/3.8.4: a shared subscription delivers at min(published QoS, the member's
    granted QoS)."""
    with raw(broker, V, uid("shq")) as sub, raw(broker, V, uid("shqp")) as pub:
        assert sub.subscribe([("$share/g3/shq/t", 1)]).reasons == [1]
        pub.publish("shq/t", b"x", qos=2, pid=4)
        m = sub.expect(PUBLISH)
        assert m.qos == 1
        sub.ack(m)


# ---- DISCONNECT and will ------------------------------------------------------------------------

@pytest.mark.peer_deviates("Mosquitto discards the will on any DISCONNECT but 0x04")
@pytest.mark.parametrize("reason", [0x80, 0x83, 0x93])
def test_disconnect_with_error_reason_publishes_will(broker, reason):
    """[MQTT-3.1.2-8]/[MQTT-3.1.2-10] the will is discarded only on DISCONNECT with reason
    0x00: a DISCONNECT with an error reason code from the client publishes it."""
    with raw(broker, V, uid("dws")) as sub:
        topic = f"dw/{reason}"
        sub.subscribe([(topic, 1)])
        with raw(broker, V, uid("dwc"), will={"topic": topic, "payload": b"gone", "qos": 1}) as c:
            c.disconnect(reason)
        m = sub.expect(PUBLISH)
        assert m.payload == b"gone"
        sub.ack(m)


def test_disconnect_normal_with_properties_discards_will(broker):
    """[MQTT-3.1.2-10]/[MQTT-3.14.4-3] DISCONNECT 0x00 with properties (Reason String, User
    Property) still discards the will."""
    with raw(broker, V, uid("dnps")) as sub, raw(broker, V, uid("dnpp")) as pub:
        sub.subscribe([("dnp/t", 1)])
        with raw(broker, V, uid("dnpc"), will={"topic": "dnp/t", "payload": b"will"}) as c:
            c.disconnect(0, {"reason_string": "bye", "user_property": [("a", "b")]})
        assert barrier(pub, sub, "dnp/t").payload == b"barrier"


def test_server_sends_nothing_after_disconnect(broker):
    """[MQTT-3.14.4-1]/[MQTT-3.14.4-2] after the client's DISCONNECT the server closes the
    connection and sends no further packets."""
    with raw(broker, V, uid("dcl")) as c:
        c.subscribe([("dcl/t", 0)])
        c.send(packet(DISCONNECT, 0, b""))
        assert c.expect_closed() is None


# ---- AUTH --------------------------------------------------------------------------------------

def test_auth_after_plain_connect_is_protocol_error(broker):
    """[MQTT-4.12.0-?]/4.12: an AUTH packet from a client whose CONNECT had no Authentication
    Method is a Protocol Error: DISCONNECT 0x82 (re-authentication needs one)."""
    with raw(broker, V, uid("auth")) as c:
        c.try_send(packet(AUTH, 0, b"\x19" + encode_props({"authentication_method": "X"})))
        c.expect_closed_with(RC_PROTOCOL_ERROR, required=broker.is_rampart)


# ---- framing -----------------------------------------------------------------------------------

def test_packets_split_and_coalesced_arbitrarily(broker):
    """2.1/4.2: MQTT is a byte stream: packets split byte by byte, and several packets in one
    segment, are handled the same."""
    with RawClient(broker.host, broker.port, V) as c:
        data = connect_packet(uid("frame"), V) + subscribe_packet(1, [("fr/t", 1)])
        data += publish_packet("fr/t", b"a", qos=1, pid=2)
        c.send(data)
        assert c.expect(CONNACK).reason == 0
        got = {}
        for _ in range(3):
            p = c.read()
            got[p.type] = p
        assert set(got) == {3, 4, 9}, got
        c.ack(got[PUBLISH])
        one = publish_packet("fr/t", b"b" * 40, qos=1, pid=3)
        for i in range(len(one)):
            c.send(one[i:i + 1])
        seen = {c.read().type, c.read().type}
        assert seen == {PUBLISH, PUBACK}


# ---- flow control, sessions, maximum packet size ------------------------------------------------

def test_resumed_session_keeps_subscription_options_and_identifier(broker):
    """[MQTT-4.1.0-1]/3.1.2.4: the session state kept across connections includes each
    subscription's identifier and options (No Local here)."""
    cid = uid("keep")
    with raw(broker, V) as c:
        c.connect(cid, clean=False, props={"session_expiry_interval": 30})
        c.subscribe([("keep/t", 1 | 0x04)], props={"subscription_identifier": 42})
        c.disconnect()
    with raw(broker, V) as c, raw(broker, V, uid("keepp")) as pub:
        assert c.connect(cid, clean=False).session_present
        c.publish("keep/t", b"own", qos=1, pid=5)  # No Local: not sent back
        pub.publish("keep/t", b"other", qos=1)
        m = c.expect(PUBLISH)
        assert m.payload == b"other" and m.props.all("subscription_identifier") == [42]
        c.ack(m)
        c.disconnect(0, {"session_expiry_interval": 0})


def test_retained_message_larger_than_client_maximum_is_not_sent(broker):
    """[MQTT-3.1.2-24]/[MQTT-3.1.2-25] a retained message too large for the subscriber's
    Maximum Packet Size is not sent at subscribe time (dropped for that client)."""
    topic = f"big/{uid('r')}"
    with raw(broker, V, uid("bigp")) as pub:
        pub.publish(topic + "/a", b"x" * 2000, qos=1, retain=True)
        pub.publish(topic + "/b", b"small", qos=1, retain=True)
        with raw(broker, V) as sub:
            sub.connect(uid("bigs"), props={"maximum_packet_size": 512})
            sub.subscribe([(topic + "/#", 1)])
            m = sub.expect(PUBLISH)
            assert m.payload == b"small", m
            sub.ack(m)
        pub.publish(topic + "/a", b"", qos=1, retain=True)
        pub.publish(topic + "/b", b"", qos=1, retain=True)


def test_qos2_publish_resent_after_reconnect_is_delivered_once(broker):
    """[MQTT-4.3.3-10]/[MQTT-4.4.0-1] a QoS 2 PUBLISH whose PUBREC the client never saw is
    re-sent (DUP) on a new connection of the same session: the server answers PUBREC and the
    message is delivered once in all (whether the server forwards it on PUBLISH or on PUBREL,
    both allowed by 4.3.3)."""
    cid = uid("q2r")
    with raw(broker, V, uid("q2rs")) as sub:
        sub.subscribe([("q2r/t", 2)])
        with raw(broker, V) as pub:
            pub.connect(cid, clean=False, props={"session_expiry_interval": 30})
            pub.send(publish_packet("q2r/t", b"once", qos=2, pid=17))
            assert pub.expect(PUBREC).pid == 17
        with raw(broker, V) as pub:
            assert pub.connect(cid, clean=False).session_present
            pub.send(publish_packet("q2r/t", b"once", qos=2, pid=17, dup=True))
            assert pub.expect(PUBREC).pid == 17
            pub.send(ack_packet(PUBREL, 17))
            assert pub.expect(PUBCOMP).pid == 17
            pub.send(publish_packet("q2r/t", b"barrier", qos=2, pid=18))
            assert pub.expect(PUBREC).pid == 18
            pub.send(ack_packet(PUBREL, 18))
            assert pub.expect(PUBCOMP).pid == 18
            got = []
            while not got or got[-1] != b"barrier":
                m = sub.expect(PUBLISH)
                sub.ack(m)
                got.append(m.payload)
            assert got == [b"once", b"barrier"], got
            sub.finish()
            pub.disconnect(0, {"session_expiry_interval": 0})


def test_disconnect_pipelined_behind_connect(broker):
    """[MQTT-3.14.4-3] a DISCONNECT 0x00 sent right behind CONNECT (before CONNACK arrived) is
    handled: CONNACK, then the connection closes and the will is discarded."""
    with raw(broker, V, uid("pds")) as sub, raw(broker, V, uid("pdp")) as pub:
        sub.subscribe([("pd/t", 1)])
        with RawClient(broker.host, broker.port, V) as c:
            c.send(connect_packet(uid("pdc"), V, will={"topic": "pd/t", "payload": b"w"})
                   + packet(DISCONNECT, 0, b""))
            assert c.expect(CONNACK).reason == 0
            assert c.expect_closed() is None
        assert barrier(pub, sub, "pd/t").payload == b"barrier"


# ---- properties on every packet type ------------------------------------------------------------

def test_acks_from_client_may_carry_reason_string_and_user_properties(broker):
    """3.4.2.2/3.5.2.2/3.7.2.2: PUBACK, PUBREC and PUBCOMP from the client may carry a Reason
    String and User Properties; the server accepts them and completes each flow."""
    props = encode_props([("reason_string", "fine"), ("user_property", ("k", "v"))])
    with raw(broker, V, uid("aps")) as sub, raw(broker, V, uid("app")) as pub:
        sub.subscribe([("ap/1", 1), ("ap/2", 2)])
        pub.publish("ap/1", b"1", qos=1)
        m = sub.expect(PUBLISH)
        sub.send(packet(PUBACK, 0, u16(m.pid) + b"\x00" + props))
        pub.publish("ap/2", b"2", qos=2, pid=2)
        m = sub.expect(PUBLISH)
        sub.send(packet(PUBREC, 0, u16(m.pid) + b"\x00" + props))
        rel = sub.expect(PUBREL)
        assert rel.pid == m.pid
        sub.send(packet(PUBCOMP, 0, u16(m.pid) + b"\x00" + props))
        sub.ping()


def test_pubrel_from_client_with_properties(broker):
    """3.6.2: a client PUBREL with reason 0x00 and properties completes the inbound flow."""
    with raw(broker, V, uid("prp")) as c:
        c.send(publish_packet("prp/t", b"x", qos=2, pid=8))
        assert c.expect(PUBREC).pid == 8
        c.send(packet(PUBREL, 0x02, u16(8) + b"\x00"
                      + encode_props({"reason_string": "go", "user_property": [("a", "b")]})))
        assert c.expect(PUBCOMP).pid == 8


def test_subscribe_and_unsubscribe_with_user_properties(broker):
    """3.8.2.1.3/3.10.2.1.2: SUBSCRIBE and UNSUBSCRIBE may carry User Properties."""
    up = {"user_property": [("x", "1"), ("x", "2")]}
    with raw(broker, V, uid("sup")) as c:
        assert c.subscribe([("sup/t", 1)], props=up).reasons == [1]
        c.send(unsubscribe_packet(2, ["sup/t"], props=up))
        assert c.expect(UNSUBACK).reasons == [0]


def test_password_without_username_is_allowed(broker):
    """3.1.2.9 (5.0): unlike 3.1.1, a Password without a User Name is not a protocol
    error; the CONNECT is judged by the authentication in place (loopback anonymous here)."""
    with RawClient(broker.host, broker.port, V) as c:
        c.send(connect_packet(uid("pw"), V, password=b"secret"))
        ack = c.expect(CONNACK)
        assert ack.reason in (0x00, 0x86, 0x87), ack



def test_request_problem_information_zero_suppresses_reason_strings(broker):
    """[MQTT-3.1.2-29] with Request Problem Information 0 the server sends no Reason String or
    User Property except on PUBLISH, CONNACK and DISCONNECT; [MQTT-3.1.2-28] with Request
    Response Information 0 it sends no Response Information."""
    with raw(broker, V) as c:
        ack = c.connect(uid("rpi"), props={"request_problem_information": 0,
                                           "request_response_information": 0})
        assert "response_information" not in ack.props
        packets = [c.subscribe([("rpi/t", 2)])]
        c.send(publish_packet("rpi/x", b"x", qos=1, pid=2,
                              props={"payload_format_indicator": 1}))
        packets.append(c.expect(PUBACK))
        c.send(publish_packet("rpi/y", b"\xff", qos=1, pid=3,
                              props={"payload_format_indicator": 1}))
        packets.append(c.expect(PUBACK))
        c.send(ack_packet(PUBREL, 555))
        packets.append(c.expect(PUBCOMP))
        c.send(unsubscribe_packet(4, ["never/there"]))
        packets.append(c.expect(UNSUBACK))
        for p in packets:
            assert "reason_string" not in p.props and "user_property" not in p.props, p


@pytest.mark.slow
def test_disconnect_with_will_honours_will_delay(broker):
    """3.14.2.1/3.1.3.2.2: DISCONNECT 0x04 keeps the will; it is published once the Will
    Delay Interval has passed (the session outlives it), not before."""
    with raw(broker, V, uid("wds")) as sub, raw(broker, V, uid("wdp")) as pub:
        sub.subscribe([("wd4/t", 1)])
        with raw(broker, V, uid("wdc"), props={"session_expiry_interval": 30},
                 will={"topic": "wd4/t", "payload": b"late",
                       "props": {"will_delay_interval": 2}}) as c:
            c.disconnect(0x04)
        started = time.monotonic()
        assert barrier(pub, sub, "wd4/t").payload == b"barrier"
        m = sub.expect(PUBLISH, timeout=6)
        assert m.payload == b"late"
        assert time.monotonic() - started >= 1.0
        sub.ack(m)


def _shared_members_got(members, n):
    """Reads until the members together received n PUBLISHes; returns {index: [packets]}."""
    got = {}
    deadline = time.monotonic() + 5
    while sum(len(v) for v in got.values()) < n:
        assert time.monotonic() < deadline, f"only {got} of {n}"
        for i, c in enumerate(members):
            try:
                got.setdefault(i, []).append(c.expect(PUBLISH, timeout=0.1))
            except TimeoutError:
                pass
    return {i: v for i, v in got.items() if v}


@pytest.mark.parametrize("qos", [1, 2])
def test_shared_inflight_message_when_member_session_ends(broker, qos):
    """[MQTT-4.8.2-5] a QoS 2 message being sent to a shared-subscription member whose session
    ends before it completes is NOT sent to another member; a QoS 1 one SHOULD be (4.8.2)."""
    topic = f"shi/{qos}"
    ids = [uid("shia"), uid("shib")]
    members = [raw(broker, V, cid) for cid in ids]
    try:
        for m in members:
            m.subscribe([(f"$share/gi/{topic}", qos), (f"{topic}/bar", 1)])
        with raw(broker, V, uid("ship")) as pub:
            pub.publish(topic, b"m0", qos=qos, pid=1)
            got = _shared_members_got(members, 1)
            (leaving,) = got
            staying = members[1 - leaving]
            members[leaving].close()  # no acknowledgement; session expiry 0
            # Once the same client id is connected again, the old session has ended.
            with raw(broker, V, ids[leaving]):
                pass
            pub.publish(f"{topic}/bar", b"barrier", qos=1, pid=2)
            m = staying.expect(PUBLISH)
            if qos == 2:
                assert m.payload == b"barrier", f"QoS 2 message handed over: {m!r}"
            elif broker.is_rampart:  # a SHOULD: Rampart does it
                assert m.payload == b"m0", f"QoS 1 message not handed over: {m!r}"
                staying.ack(m)
                assert staying.expect(PUBLISH).payload == b"barrier"
    finally:
        for m in members:
            m.close()


def test_no_local_applies_per_subscription_when_overlapping(broker):
    """[MQTT-3.8.3-3]/3.8.3.1: No Local belongs to one subscription: the client's own message
    still reaches it through an overlapping subscription without No Local (and only once
    through that one, [MQTT-3.3.4-2])."""
    with raw(broker, V, uid("nlo")) as c:
        c.subscribe([("nlo/#", 1 | 0x04), ("nlo/t", 1)])
        c.send(publish_packet("nlo/t", b"own", qos=1, pid=3))
        c.send(publish_packet("nlo/u", b"no-local-only", qos=1, pid=4))
        c.send(publish_packet("nlo/t", b"end", qos=1, pid=5))
        got = []
        while not got or got[-1] != b"end":
            m = c.expect(PUBLISH, skip=(PUBACK,))
            c.ack(m)
            got.append(m.payload)
        assert got == [b"own", b"end"], got


def test_short_forms_of_acks_and_disconnect(broker):
    """3.4.2.2/3.14.2.2: a PUBACK with only a Reason Code (remaining length 3) and a
    DISCONNECT with only a Reason Code (remaining length 1, no properties) are valid."""
    with raw(broker, V, uid("sfs")) as sub, raw(broker, V, uid("sfp")) as pub:
        sub.subscribe([("sf/t", 1)])
        pub.publish("sf/t", b"x", qos=1)
        m = sub.expect(PUBLISH)
        sub.send(packet(PUBACK, 0, u16(m.pid) + b"\x00"))
        sub.ping()
        with raw(broker, V, uid("sfw"), will={"topic": "sf/t", "payload": b"will"}) as c:
            c.send(packet(DISCONNECT, 0, b"\x00"))
            assert c.expect_closed() is None
        assert barrier(pub, sub, "sf/t").payload == b"barrier"


def _publish_of_size(total, topic, version=V):
    """A QoS 1 PUBLISH (pid 1) whose whole packet, fixed header included, is `total` bytes."""
    overhead = len(publish_packet(topic, b"", qos=1, pid=1, version=version))
    n = total - overhead
    while len(publish_packet(topic, b"x" * n, qos=1, pid=1, version=version)) > total:
        n -= 1  # the remaining length grew a byte
    pk = publish_packet(topic, b"x" * n, qos=1, pid=1, version=version)
    assert len(pk) == total
    return pk


@pytest.mark.rampart_only  # the peer's limit is configured differently
def test_server_maximum_packet_size_counts_the_whole_packet(broker_factory):
    """3.2.2.3.6/[MQTT-3.1.2-24]: the Maximum Packet Size is the total packet size, fixed
    header included: with 1024 announced, a 1024-byte PUBLISH passes and a 1025-byte one
    ends the connection with 0x95."""
    b = broker_factory(mqtt={"max_packet_size": 1024})
    with raw(b, V, uid("mx")) as c:
        c.send(_publish_of_size(1024, "mx/t"))
        assert c.expect(PUBACK).reason in (0x00, 0x10)
        c.try_send(_publish_of_size(1025, "mx/t"))
        c.expect_closed_with(0x95)


@pytest.mark.peer_deviates("Mosquitto 2.0 sends the 201-byte packet too")
def test_client_maximum_packet_size_boundary(broker):
    """[MQTT-3.1.2-24]/[MQTT-3.1.2-25] the client's Maximum Packet Size bounds the whole
    packet: a message encoding to exactly that size is sent, one byte more is not."""
    with raw(broker, V) as sub, raw(broker, V, uid("cbp")) as pub:
        sub.connect(uid("cbs"), props={"maximum_packet_size": 200})
        sub.subscribe([("cb/t", 1)])
        pk200 = _publish_of_size(200, "cb/t")
        pk201 = _publish_of_size(201, "cb/t")
        # The server's copy differs from the publisher's only in its packet id: same size.
        pub.send(pk200)
        pub.expect(PUBACK)
        pub.send(pk201)
        pub.expect(PUBACK)
        pub.publish("cb/t", b"end", qos=1, pid=2)
        m = sub.expect(PUBLISH)
        assert m.payload == b"x" * pk200.count(b"x"), m
        sub.ack(m)
        assert sub.expect(PUBLISH).payload == b"end"


def _raw_prop_str(pid, value: bytes):
    return bytes([pid]) + u16(len(value)) + value


@pytest.mark.parametrize("prop", [
    pytest.param(_raw_prop_str(0x03, b"text/\xff"), id="content-type-ill-formed"),
    pytest.param(_raw_prop_str(0x03, b"a\x00b"), id="content-type-nul"),
    pytest.param(_raw_prop_str(0x08, b"resp/\xc0\x80"), id="response-topic-overlong-nul"),
    pytest.param(_raw_prop_str(0x26, b"k\xff") + u16(1) + b"v", id="user-property-name"),
    pytest.param(_raw_prop_str(0x26, b"k") + u16(2) + b"\xed\xa0", id="user-property-value"),
])
def test_ill_formed_utf8_in_publish_properties_is_malformed(broker, prop):
    """[MQTT-1.5.4-1]/[MQTT-1.5.4-2] every UTF-8 string, properties included, must be
    well-formed and free of U+0000: otherwise the packet is Malformed (DISCONNECT 0x81)."""
    body = mstr("u8/t") + u16(1) + varint(len(prop)) + prop + b"payload"
    with raw(broker, V, uid("u8")) as c:
        c.try_send(packet(PUBLISH, 0x02, body))
        c.expect_closed_with(0x81, required=broker.is_rampart)


def test_ill_formed_utf8_in_disconnect_reason_string_is_malformed(broker):
    """[MQTT-1.5.4-1] the Reason String of a client DISCONNECT is checked too: 0x81, and since
    the DISCONNECT was not a valid normal one, the will is published."""
    with raw(broker, V, uid("u8ds")) as sub:
        sub.subscribe([("u8d/t", 1)])
        with raw(broker, V, uid("u8dc"), will={"topic": "u8d/t", "payload": b"w"}) as c:
            prop = _raw_prop_str(0x1F, b"bye\xff")
            c.try_send(packet(DISCONNECT, 0, b"\x00" + varint(len(prop)) + prop))
            c.expect_closed()
        m = sub.expect(PUBLISH)
        assert m.payload == b"w"
        sub.ack(m)


@pytest.mark.parametrize("rap", [0, 1])
def test_shared_subscription_retain_as_published(broker, rap):
    """[MQTT-3.3.1-12]/[MQTT-3.3.1-13] Retain As Published applies to a shared subscription
    like to any other: a live retained PUBLISH keeps RETAIN 1 only with RAP 1."""
    topic = f"shrap/{uid('t')}"
    with raw(broker, V, uid("shraps")) as sub, raw(broker, V, uid("shrapp")) as pub:
        sub.subscribe([(f"$share/gr/{topic}", 1 | (rap << 3))],
                      props={"subscription_identifier": 9})
        pub.publish(topic, b"r", qos=1, retain=True)
        m = sub.expect(PUBLISH)
        assert (m.payload, m.retain) == (b"r", bool(rap))
        assert m.props.all("subscription_identifier") == [9]
        sub.ack(m)
        pub.publish(topic, b"", qos=1, retain=True)


@pytest.mark.parametrize("qos", [1, 2])
def test_shared_message_refused_by_member_is_not_sent_to_another(broker, qos):
    """[MQTT-4.8.2-6] a shared-subscription member answering PUBACK / PUBREC with a reason
    code of 0x80 or more makes the server discard the message: it goes to no other member,
    also when that member's session then ends."""
    topic = f"shr6/{qos}"
    ids = [uid("sh6a"), uid("sh6b")]
    members = [raw(broker, V, cid) for cid in ids]
    try:
        for m in members:
            m.subscribe([(f"$share/g6/{topic}", qos), (f"{topic}/bar", 1)])
        with raw(broker, V, uid("sh6p")) as pub:
            pub.publish(topic, b"m0", qos=qos, pid=1)
            ((leaving, (first,)),) = _shared_members_got(members, 1).items()
            got = members[leaving]
            ack = PUBACK if qos == 1 else PUBREC
            got.send(ack_packet(ack, first.pid, reason=0x80))
            got.ping()  # the refusal was handled
            got.close()
            with raw(broker, V, ids[leaving]):
                pass
            pub.publish(f"{topic}/bar", b"barrier", qos=1, pid=2)
            m = members[1 - leaving].expect(PUBLISH)
            assert m.payload == b"barrier", f"refused message sent to another member: {m!r}"
    finally:
        for m in members:
            m.close()


@pytest.mark.parametrize("backend", ["memory", "redb"])
def test_mixed_qos_from_one_publisher_keep_their_order(broker_factory, backend):
    """[MQTT-4.6.0-5]/[MQTT-4.6.0-6] the server forwards the messages of a topic in the order
    it received them, also when some wait for the store (QoS 1 to a persistent session) and
    others do not (QoS 0)."""
    b = broker_factory(storage={"backend": backend})
    cid = uid("ord")
    with raw(b, V) as sub, raw(b, V, uid("ordp")) as pub:
        sub.connect(cid, clean=True, props={"session_expiry_interval": 60})
        sub.subscribe([("mixo/t", 1)])
        seq = [(i, [1, 0, 1, 0, 0, 1][i % 6]) for i in range(30)]
        data = b"".join(publish_packet("mixo/t", b"%d" % i, qos=q, pid=i + 1)
                        for i, q in seq)
        pub.send(data)
        got = []
        while len(got) < len(seq):
            m = sub.expect(PUBLISH)
            sub.ack(m)
            got.append(int(m.payload))
        assert got == list(range(30)), got
        sub.disconnect(0, {"session_expiry_interval": 0})


@pytest.mark.rampart_only  # restarts the broker with its store
@pytest.mark.parametrize("delay", [0, 1])
def test_will_published_when_the_server_shuts_down(broker_factory, delay):
    """[MQTT-3.1.2-8] the server closing the connection (here: a graceful shutdown, DISCONNECT
    0x8B) does not discard the will: a persistent subscriber gets it (after the restart, once
    the Will Delay Interval has passed, for a session that outlives the shutdown)."""
    b = broker_factory(storage={"backend": "redb"})
    with raw(b, V) as sub:
        sub.connect("wsd-sub", clean=False, props={"session_expiry_interval": 300})
        sub.subscribe([("wsd/t", 1)])
        sub.disconnect()
    c = raw(b, V)
    c.connect("wsd-c", clean=False,
              props={"session_expiry_interval": 300 if delay else 0},
              will={"topic": "wsd/t", "payload": b"bye", "qos": 1,
                    "props": {"will_delay_interval": delay}})
    try:
        b.stop()
        c.expect_closed_with(0x8B)
    finally:
        c.close()
    b.start()
    with raw(b, V) as sub:
        assert sub.connect("wsd-sub", clean=False).session_present
        m = sub.expect(PUBLISH, timeout=5 + delay)
        assert m.payload == b"bye"
        sub.ack(m)
        sub.disconnect(0, {"session_expiry_interval": 0})


@pytest.mark.parametrize("qos", [1, 2])
def test_resend_on_reconnect_respects_a_lower_receive_maximum(broker, qos):
    """[MQTT-4.4.0-1] with [MQTT-3.3.4-9]: unacknowledged PUBLISHes are re-sent on reconnect
    in their order, but never more at once than the client's new Receive Maximum; each
    acknowledgement lets the next one (then the queued ones) go."""
    cid = uid("rrm")
    with raw(broker, V) as sub, raw(broker, V, uid("rrmp")) as pub:
        sub.connect(cid, clean=False, props={"session_expiry_interval": 60,
                                             "receive_maximum": 10})
        sub.subscribe([("rrm/t", qos)])
        for i in range(6):
            pub.publish("rrm/t", b"%d" % i, qos=qos, pid=i + 1)
        first = [sub.expect(PUBLISH) for _ in range(6)]
        assert [int(m.payload) for m in first] == list(range(6))
        sub.close()  # none acknowledged
        with raw(broker, V) as again:
            assert again.connect(cid, clean=False,
                                 props={"receive_maximum": 2}).session_present
            pub.publish("rrm/t", b"6", qos=qos, pid=7)  # queued behind the re-sends
            window = [again.expect(PUBLISH) for _ in range(2)]
            got = [int(m.payload) for m in window]
            assert all(m.dup for m in window)
            # Nothing else may come now (a quiet period: there is nothing to wait for).
            assert again.is_open(0.3) and not again.buf, "more than Receive Maximum re-sent"
            while len(got) < 7:
                oldest = window.pop(0)
                again.ack(oldest)
                if qos == 2:
                    again.finish()
                m = again.expect(PUBLISH)
                window.append(m)
                got.append(int(m.payload))
            assert got == list(range(7)), got
            for m in window:
                again.ack(m)
            again.finish()
            again.disconnect(0, {"session_expiry_interval": 0})


@pytest.mark.rampart_only  # waits for a $SYS publication of the broker (interval 1 s here)
def test_shared_wildcard_subscription_does_not_match_dollar_topics(broker):
    """[MQTT-4.7.2-1] a filter starting with a wildcard matches no topic starting with '$',
    also inside a shared subscription ("$share/g/#")."""
    with raw(broker, V, uid("shd")) as c:
        c.subscribe([("$share/gd/#", 0)], props={"subscription_identifier": 2})
        c.subscribe([("$SYS/#", 0)], pid=2, props={"subscription_identifier": 1})
        first = c.expect(PUBLISH, timeout=5)
        assert first.topic.startswith("$SYS/")
        seen = [first]
        c.publish("shd/barrier", b"b", qos=0)
        while True:
            m = c.expect(PUBLISH)
            if m.topic == "shd/barrier":
                break
            seen.append(m)
        bad = [m for m in seen if 2 in m.props.all("subscription_identifier")]
        assert not bad, f"$-topics matched by $share/gd/#: {bad[:3]}"
