"""Session state (3.1.2.4, 3.1.2.11.2, 4.1, 4.9): clean start, session expiry, queued messages
and receive maximum flow control."""

import time

import pytest

from mqtt_raw import (PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, RC_PROTOCOL_ERROR,
                      RC_RECEIVE_MAXIMUM_EXCEEDED, ack_packet, disconnect_packet, publish_packet,
                      raw)

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
FOREVER = 0xFFFFFFFF


def elapse(seconds: float) -> None:
    """Lets protocol time pass: the behaviour under test is an expiry timer."""
    time.sleep(seconds)


def persistent(version, expiry=300):
    if version == 5:
        return {"clean": False, "props": {"session_expiry_interval": expiry}}
    return {"clean": False}


def publish_from_other(broker, version, topic, payloads, qos=1):
    with raw(broker, version, f"other-{topic.replace('/', '-')}") as pub:
        for i, p in enumerate(payloads):
            pub.publish(topic, p, qos=qos, pid=i + 1)


def assert_nothing_pending(c, timeout=0.4):
    with pytest.raises(TimeoutError):
        p = c.read(timeout)
        raise AssertionError(f"unexpected {p!r}")


# ---- clean start / clean session --------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_clean_start_discards_session(broker, version):
    """[MQTT-3.1.2-4] (3.1.1 [MQTT-3.1.2-6]) Clean Start / CleanSession 1 discards any existing
    session: subscriptions are gone and session present is 0."""
    with raw(broker, version) as c:
        c.connect("clean-sess", **persistent(version))
        c.subscribe([("cs/t", 1)])
        c.disconnect()
    with raw(broker, version) as c:
        assert c.connect("clean-sess", clean=True).session_present is False
        publish_from_other(broker, version, "cs/t", [b"x"])
        assert_nothing_pending(c)


@pytest.mark.parametrize("version", VERSIONS)
def test_session_resumed_keeps_subscriptions(broker, version):
    """[MQTT-3.1.2-4]/[MQTT-3.1.2-5] a resumed session keeps its subscriptions
    ([MQTT-4.1.0-1] state kept while the session exists)."""
    with raw(broker, version) as c:
        c.connect("keep-subs", **persistent(version))
        c.subscribe([("ks/t", 1)])
        c.disconnect()
    with raw(broker, version) as c:
        assert c.connect("keep-subs", **persistent(version)).session_present
        publish_from_other(broker, version, "ks/t", [b"x"])
        p = c.expect(PUBLISH)
        assert p.payload == b"x"
        c.ack(p)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [1, 2])
def test_offline_messages_queued_and_delivered(broker, version, qos):
    """[MQTT-3.1.2-5] (3.1.1) / 4.1: QoS 1 and 2 messages arriving while the client is offline
    are stored in the session and delivered, in order, on reconnect."""
    with raw(broker, version) as c:
        c.connect("queued", **persistent(version))
        c.subscribe([("qd/t", 2)])
        c.disconnect()
    publish_from_other(broker, version, "qd/t", [b"%d" % i for i in range(10)], qos=qos)
    with raw(broker, version) as c:
        assert c.connect("queued", **persistent(version)).session_present
        got = []
        for _ in range(10):
            p = c.expect(PUBLISH)
            assert p.qos == qos and not p.dup
            c.ack(p)
            got.append(int(p.payload))
        assert got == list(range(10))
        c.finish()


# ---- session expiry (v5) ----------------------------------------------------------------------

def test_session_expiry_zero_ends_session_at_close(broker):
    """3.1.2.11.2: Session Expiry Interval absent or 0: the session ends when the connection
    closes."""
    with raw(broker, 5) as c:
        c.connect("exp0", clean=False)
        c.subscribe([("e0/t", 1)])
        c.disconnect()
    with raw(broker, 5) as c:
        assert c.connect("exp0", clean=False).session_present is False


@pytest.mark.slow
def test_session_expires_after_interval(broker):
    """3.1.2.11.2: the session is discarded once the Session Expiry Interval has passed."""
    with raw(broker, 5) as c:
        c.connect("exp1", clean=False, props={"session_expiry_interval": 1})
        c.subscribe([("e1/t", 1)])
        c.disconnect()
    elapse(2.5)
    with raw(broker, 5) as c:
        assert c.connect("exp1", clean=False,
                         props={"session_expiry_interval": 1}).session_present is False


def test_session_expiry_never(broker):
    """3.1.2.11.2: 0xFFFFFFFF means the session does not expire (a server may lower it and
    then says so in CONNACK's Session Expiry Interval, 3.2.2.3.2)."""
    with raw(broker, 5) as c:
        ack = c.connect("exp-inf", clean=False, props={"session_expiry_interval": FOREVER})
        granted = ack.props.get("session_expiry_interval", FOREVER)
        assert granted > 0
        c.subscribe([("ei/t", 1)])
        c.disconnect()
    publish_from_other(broker, 5, "ei/t", [b"kept"])
    with raw(broker, 5) as c:
        assert c.connect("exp-inf", clean=False,
                         props={"session_expiry_interval": FOREVER}).session_present
        p = c.expect(PUBLISH)
        assert p.payload == b"kept"
        c.ack(p)


@pytest.mark.rampart_only
def test_session_expiry_capped_by_server(broker_factory):
    """Rampart lowers a Session Expiry Interval above mqtt.max_session_expiry and tells the
    client in CONNACK (3.2.2.3.2: the client must use the server's value)."""
    b = broker_factory(mqtt={"max_session_expiry": 100})
    with raw(b, 5) as c:
        ack = c.connect("capped", clean=False, props={"session_expiry_interval": FOREVER})
        assert ack.props.get("session_expiry_interval") == 100


def test_session_expiry_changed_at_disconnect(broker):
    """3.14.2.2.2: DISCONNECT may change the Session Expiry Interval: set to 0, the session
    ends at the close."""
    with raw(broker, 5) as c:
        c.connect("exp-chg", clean=False, props={"session_expiry_interval": 300})
        c.subscribe([("ec/t", 1)])
        c.send(disconnect_packet(0, {"session_expiry_interval": 0}))
        c.expect_closed()
    with raw(broker, 5) as c:
        assert c.connect("exp-chg", clean=False).session_present is False


def test_session_expiry_raised_at_disconnect(broker):
    """DISCONNECT may raise a non-zero Session Expiry Interval: the session is then kept."""
    with raw(broker, 5) as c:
        c.connect("exp-up", clean=False, props={"session_expiry_interval": 1})
        c.subscribe([("eu/t", 1)])
        c.send(disconnect_packet(0, {"session_expiry_interval": 300}))
        c.expect_closed()
    with raw(broker, 5) as c:
        assert c.connect("exp-up", clean=False,
                         props={"session_expiry_interval": 300}).session_present


def test_session_expiry_zero_then_nonzero_at_disconnect_is_protocol_error(broker, clients):
    """[MQTT-3.14.2-2] Session Expiry Interval 0 at CONNECT and non-zero at DISCONNECT is a
    Protocol Error: the server answers DISCONNECT 0x82 (and the session is not kept)."""
    with raw(broker, 5) as c:
        c.connect("exp-bad", clean=False)
        c.subscribe([("eb/t", 1)])
        c.send(disconnect_packet(0, {"session_expiry_interval": 60}))
        c.expect_closed_with(RC_PROTOCOL_ERROR, required=broker.is_rampart)
    with raw(broker, 5) as c:
        assert c.connect("exp-bad", clean=False).session_present is False


# ---- receive maximum (v5, 4.9) ----------------------------------------------------------------

@pytest.mark.peer_deviates("Mosquitto 2.0 refills its whole window after one acknowledgement")
@pytest.mark.parametrize("qos", [1, 2])
def test_server_respects_client_receive_maximum(broker, qos):
    """[MQTT-3.3.4-9] the server never has more unacknowledged QoS>0 PUBLISHes to a client than
    the client's Receive Maximum; [MQTT-3.3.4-8]/4.9 acknowledging one releases the next
    (QoS 2 counts until PUBCOMP)."""
    rmax = 3
    n = 10
    with raw(broker, 5) as sub:
        sub.connect("rmax-sub", props={"receive_maximum": rmax})
        sub.subscribe([("rm/t", 2)])
        publish_from_other(broker, 5, "rm/t", [b"%d" % i for i in range(n)], qos=qos)
        window = [sub.expect(PUBLISH) for _ in range(rmax)]
        assert_nothing_pending(sub, 0.5)
        got = [int(p.payload) for p in window]
        while len(got) < n:
            oldest = window.pop(0)
            if qos == 1:
                sub.send(ack_packet(PUBACK, oldest.pid))
            else:
                sub.send(ack_packet(PUBREC, oldest.pid))
                rel = sub.expect(PUBREL)
                assert rel.pid == oldest.pid
                # Still in flight until PUBCOMP: nothing new may come yet.
                assert_nothing_pending(sub, 0.2)
                sub.send(ack_packet(PUBCOMP, oldest.pid))
            p = sub.expect(PUBLISH)
            window.append(p)
            got.append(int(p.payload))
            assert_nothing_pending(sub, 0.05)
        assert got == list(range(n))


@pytest.mark.rampart_only
def test_client_exceeding_server_receive_maximum(broker_factory):
    """[MQTT-3.3.4-7] a client must not send more unacknowledged QoS>0 PUBLISHes than the
    server's Receive Maximum; when it does the server sends DISCONNECT 0x93."""
    b = broker_factory(mqtt={"receive_maximum": 2})
    with raw(b, 5) as c, raw(b, 5) as bystander:
        bystander.connect("rmx-by")
        assert c.connect("rmx").props.get("receive_maximum") == 2
        for pid in (1, 2):
            c.send(publish_packet("rmx/t", b"x", qos=2, pid=pid))
            assert c.expect(PUBREC).pid == pid
        c.try_send(publish_packet("rmx/t", b"x", qos=2, pid=3))
        c.expect_closed_with(RC_RECEIVE_MAXIMUM_EXCEEDED)
        bystander.ping()


def test_receive_maximum_zero_is_protocol_error(broker):
    """3.1.2.11.3: Receive Maximum 0 in CONNECT is a Protocol Error (CONNACK 0x82 or close)."""
    from test_connect import connect_then_close
    from mqtt_raw import RawClient, connect_packet
    with RawClient(broker.host, broker.port, 5) as c:
        reason = connect_then_close(c, connect_packet("rm0", 5,
                                                      props={"receive_maximum": 0}))
        assert reason in (None, RC_PROTOCOL_ERROR, 0x81)


def test_server_sends_pubcomp_after_pubrel_across_reconnect(broker):
    """4.3.3: inbound QoS 2: a PUBREL after reconnect (session kept) still gets PUBCOMP
    and the message is delivered exactly once."""
    with raw(broker, 5, "q2-watch") as w:
        w.subscribe([("q2r/t", 2)])
        with raw(broker, 5) as c:
            c.connect("q2r", **persistent(5))
            c.send(publish_packet("q2r/t", b"once", qos=2, pid=9))
            assert c.expect(PUBREC).pid == 9
        with raw(broker, 5) as c:
            assert c.connect("q2r", **persistent(5)).session_present
            c.send(ack_packet(PUBREL, 9))
            comp = c.expect(PUBCOMP)
            assert comp.pid == 9 and comp.reason == 0
        p = w.expect(PUBLISH)
        assert p.payload == b"once"
        w.ack(p)
        w.finish()
        assert_nothing_pending(w)


@pytest.mark.parametrize("version", VERSIONS)
def test_immediate_reconnect_after_abrupt_close_resumes_session(broker, version):
    """[MQTT-3.1.2-4]/[MQTT-3.2.2-2]: a reconnect that races the server's handling of the old
    connection's abrupt close (with QoS 2 state in flight) still finds the session, and gets
    the PUBREL resent [MQTT-4.4.0-1]. Repeated (bounded: 300 rounds) to catch the race; another
    client connects and closes each round (the race was seen in ~1% of such reconnects)."""
    with raw(broker, version, "race-pub") as pub:
        for i in range(300):
            cid = f"race-{version}-{i}"
            sub = raw(broker, version, cid, **persistent(version))
            sub.subscribe([("race/t", 2)])
            with raw(broker, version, f"race-other-{version}"):
                pass
            pub.publish("race/t", b"x", qos=2, pid=i + 1)
            p = sub.expect(PUBLISH)
            sub.send(ack_packet(PUBREC, p.pid, version=version))
            assert sub.expect(PUBREL).pid == p.pid
            sub.close()
            with raw(broker, version) as again:
                ack = again.connect(cid, **persistent(version))
                assert ack.session_present, f"round {i}: session lost on immediate reconnect"
                assert again.expect(PUBREL).pid == p.pid
                again.send(ack_packet(PUBCOMP, p.pid, version=version))
                again.disconnect(0 if version == 5 else None,
                                 {"session_expiry_interval": 0} if version == 5 else None)
