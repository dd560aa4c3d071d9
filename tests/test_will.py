"""Will messages (3.1.2.5, 3.1.3.2): when they are published and when not."""

import time

import pytest

from mqtt_client import WILLMESSAGE, barrier, props
from mqtt_raw import RC_PROTOCOL_ERROR, publish_packet, raw

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


def watcher(clients, topic):
    w = clients.new()
    w.subscribe([(topic, 1), ("zz/barrier", 2)])
    return w


def no_will(clients, w):
    """Proves nothing arrived at `w` so far (everything sent earlier is flushed by a marker)."""
    pub = clients.new()
    assert [m.topic for m in barrier(pub, w, "zz/barrier")] == []


@pytest.mark.parametrize("version", VERSIONS)
def test_will_published_on_abnormal_close(clients, version):
    """[MQTT-3.1.2-8] the will is published when the connection closes without DISCONNECT;
    [MQTT-3.1.2-14..16] with the will QoS; the will retain flag is honoured [MQTT-3.1.2-17]."""
    w = watcher(clients, "will/#")
    c = clients.new(version=version, will={"topic": "will/a", "payload": b"gone", "qos": 1,
                                           "retain": True})
    c.drop()
    m = w.expect_message()
    assert (m.topic, m.payload, m.qos) == ("will/a", b"gone", 1)
    # Retained: a new subscriber gets it with RETAIN 1.
    late = clients.new()
    late.subscribe("will/a", 1)
    m = late.expect_message()
    assert (m.payload, m.retain) == (b"gone", True)
    clients.new().publish("will/a", b"", qos=1, retain=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_will_suppressed_by_normal_disconnect(clients, version):
    """[MQTT-3.1.2-10] the will is removed when the server receives DISCONNECT (v5 reason 0x00)
    and is not published."""
    w = watcher(clients, "willn/#")
    c = clients.new(version=version, will={"topic": "willn/a", "payload": b"x"})
    c.disconnect()
    no_will(clients, w)


def test_will_sent_on_disconnect_with_will_message(clients):
    """v5 3.14.2.1: DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the
    will."""
    w = watcher(clients, "will4/#")
    c = clients.new(will={"topic": "will4/a", "payload": b"asked"})
    c.disconnect(reason=0x04)
    assert w.expect_message().payload == b"asked"


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_keep_alive_timeout(broker, clients, version):
    """[MQTT-3.1.2-8] a keep alive timeout is an abnormal close: the will is published."""
    w = watcher(clients, "willk/#")
    with raw(broker, version, "willk", keepalive=1,
             will={"topic": "willk/a", "payload": b"timeout"}) as c:
        c.expect_closed(timeout=10)
        assert w.expect_message().payload == b"timeout"


@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_protocol_error(broker, clients, version):
    """[MQTT-3.1.2-8] the server closing the connection for a protocol error publishes the will."""
    w = watcher(clients, "willp/#")
    with raw(broker, version, "willp", will={"topic": "willp/a", "payload": b"err"}) as c:
        c.try_send(publish_packet("bad/#", b"x", version=version))  # wildcard in a topic name
        c.expect_closed()
    assert w.expect_message().payload == b"err"


@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_takeover(clients, version):
    """[MQTT-3.1.4-3] the connection closed by a takeover publishes its will (v5: will delay 0)."""
    w = watcher(clients, "willt/#")
    cid = f"willt-{version}"
    old = clients.new(client_id=cid, version=version,
                      will={"topic": "willt/a", "payload": b"taken"})
    clients.new(client_id=cid, version=version)
    assert w.expect_message().payload == b"taken"
    old.wait_disconnected()


def test_will_properties_forwarded(clients):
    """Will properties (content type, user properties, response topic, correlation data,
    payload format) are sent with the will (3.1.3.2), user properties in order [MQTT-3.1.3-10]."""
    w = watcher(clients, "willpr/#")
    user = [("why", "crash"), ("n", "1")]
    c = clients.new(will={"topic": "willpr/a", "payload": b"{}", "properties": props(
        WILLMESSAGE, ContentType="application/json", UserProperty=user,
        ResponseTopic="willpr/r", CorrelationData=b"id", PayloadFormatIndicator=1)})
    c.drop()
    p = w.expect_message().properties
    assert (p.ContentType, p.UserProperty, p.ResponseTopic, p.CorrelationData,
            p.PayloadFormatIndicator) == ("application/json", user, "willpr/r", b"id", 1)


@pytest.mark.slow
def test_will_delay_interval(clients):
    """[MQTT-3.1.3-9] the will is published after the Will Delay Interval, not at the close."""
    w = watcher(clients, "willd/#")
    c = clients.new(session_expiry=60, will={"topic": "willd/a", "payload": b"late",
                                             "properties": props(WILLMESSAGE, WillDelayInterval=2)})
    t0 = time.monotonic()
    c.drop()
    m = w.expect_message(timeout=6)
    elapsed = time.monotonic() - t0
    assert m.payload == b"late"
    assert 1.5 <= elapsed <= 5, f"will after {elapsed:.2f}s for a 2s delay"


@pytest.mark.slow
def test_will_delay_cancelled_by_reconnect(clients):
    """[MQTT-3.1.3-9] a new connection to the session before the Will Delay Interval passes
    means the will is not published."""
    w = watcher(clients, "willc/#")
    cid = "willc-client"
    c = clients.new(client_id=cid, session_expiry=60, will={
        "topic": "willc/a", "payload": b"never",
        "properties": props(WILLMESSAGE, WillDelayInterval=3)})
    c.drop()
    again = clients.new(client_id=cid, clean=False, session_expiry=60)
    # Past the original delay: still nothing.
    w.expect_no_message(4)
    again.disconnect()
    no_will(clients, w)


@pytest.mark.slow
def test_will_published_when_session_expires_first(clients):
    """3.1.3.2.2: the will is published at the end of the Will Delay Interval or of the session,
    whichever comes first (session expiry 1s < will delay 30s)."""
    w = watcher(clients, "wille/#")
    c = clients.new(session_expiry=1, will={
        "topic": "wille/a", "payload": b"session-ended",
        "properties": props(WILLMESSAGE, WillDelayInterval=30)})
    t0 = time.monotonic()
    c.drop()
    assert w.expect_message(timeout=6).payload == b"session-ended"
    assert time.monotonic() - t0 <= 5


def test_will_with_clean_session_zero_delay_on_normal_close_v5(clients):
    """DISCONNECT 0x00 with a will delay: no will either."""
    w = watcher(clients, "willz/#")
    c = clients.new(session_expiry=30, will={"topic": "willz/a", "payload": b"x",
                                             "properties": props(WILLMESSAGE, WillDelayInterval=1)})
    c.disconnect()
    w.expect_no_message(1.5)


@pytest.mark.parametrize("version", VERSIONS)
def test_will_topic_with_wildcard_refused(broker, version):
    """[MQTT-3.1.3-11]/[MQTT-3.3.2-2] a will topic is a topic name: wildcards are not allowed, the
    CONNECT is refused (CONNACK error or close)."""
    from test_connect import connect_then_close
    from mqtt_raw import RawClient, connect_packet
    with RawClient(broker.host, broker.port, version) as c:
        reason = connect_then_close(c, connect_packet(
            "willwild", version, will={"topic": "a/#", "payload": b"x"}))
        if version == 5 and reason is not None:
            assert reason in (0x90, RC_PROTOCOL_ERROR, 0x81, 0x80)
