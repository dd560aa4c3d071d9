"""Retained messages (3.3.1.3): set, replace, delete, delivery on subscribe, expiry.

Statement ids: 3.1.1 numbering first, v5 numbering after a slash where it differs."""

import time

import pytest

from mqtt_client import PUBLISH, barrier, props
from mqtt_client import SubscribeOptions as Opts

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


def elapse(seconds: float) -> None:
    """Lets protocol time pass: the behaviour under test is an expiry timer."""
    time.sleep(seconds)


def fresh_subscriber(clients, version, flt, qos=1):
    """A new client subscribed to `flt` and to its barrier topic; returns it with what the
    subscription delivered (retained messages), proven complete by a barrier."""
    sub = clients.new(version=version)
    sub.subscribe([("zz/barrier", 2)])
    sub.subscribe(flt, qos)
    pub = clients.new(version=version)
    got = barrier(pub, sub, "zz/barrier")
    return sub, got


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_delivered_on_subscribe(clients, version):
    """[MQTT-3.3.1-5] a retained message is stored; [MQTT-3.3.1-6]/[MQTT-3.3.1-9] a new
    subscription gets it, [MQTT-3.3.1-8] with RETAIN 1."""
    pub = clients.new(version=version)
    pub.publish("ret/a", b"A", qos=1, retain=True)
    _, got = fresh_subscriber(clients, version, "ret/a")
    assert [(m.topic, m.payload, m.retain) for m in got] == [("ret/a", b"A", True)]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_replaced(clients, version):
    """[MQTT-3.3.1-7]/[MQTT-3.3.1-5] a new retained message replaces the previous one."""
    pub = clients.new(version=version)
    pub.publish("ret/r", b"old", qos=1, retain=True)
    pub.publish("ret/r", b"new", qos=0, retain=True)
    pub.publish("ret/r", b"ignored", qos=1, retain=False)  # [MQTT-3.3.1-12]/[MQTT-3.3.1-8]
    _, got = fresh_subscriber(clients, version, "ret/r")
    assert [m.payload for m in got] == [b"new"]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_deleted_by_empty_payload(clients, version):
    """[MQTT-3.3.1-10]/[MQTT-3.3.1-6] a retained PUBLISH with an empty payload removes the
    retained message, [MQTT-3.3.1-11]/[MQTT-3.3.1-7] is not itself stored, and is still
    forwarded to current subscribers."""
    live = clients.new(version=version)
    live.subscribe("ret/d", 1)
    pub = clients.new(version=version)
    pub.publish("ret/d", b"x", qos=1, retain=True)
    pub.publish("ret/d", b"", qos=1, retain=True)
    assert [m.payload for m in live.expect_messages(2)] == [b"x", b""]
    _, got = fresh_subscriber(clients, version, "ret/d")
    assert got == []


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_qos_is_minimum_of_stored_and_granted(clients, version):
    """Retained messages are sent at min(QoS stored, QoS granted)."""
    pub = clients.new(version=version)
    pub.publish("retq/2", b"2", qos=2, retain=True)
    pub.publish("retq/1", b"1", qos=1, retain=True)
    _, got = fresh_subscriber(clients, version, "retq/+", qos=1)
    assert sorted((m.topic, m.qos) for m in got) == [("retq/1", 1), ("retq/2", 1)]
    _, got = fresh_subscriber(clients, version, "retq/+", qos=2)
    assert sorted((m.topic, m.qos) for m in got) == [("retq/1", 1), ("retq/2", 2)]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_wildcard_subscription_gets_every_match(clients, version):
    """[MQTT-3.3.1-6] the last retained message of each matching topic is sent."""
    pub = clients.new(version=version)
    for t in ["retw/a", "retw/b/c", "retw", "other/x"]:
        pub.publish(t, t.encode(), qos=1, retain=True)
    _, got = fresh_subscriber(clients, version, "retw/#")
    assert sorted(m.topic for m in got) == ["retw", "retw/a", "retw/b/c"]
    assert all(m.retain for m in got)


def test_retained_dollar_topics_not_matched_by_wildcard(clients):
    """[MQTT-4.7.2-1] retained messages on "$..." topics are not sent for "#"."""
    pub = clients.new()
    pub.publish("$ret/x", b"d", qos=1, retain=True)
    pub.publish("retd/x", b"n", qos=1, retain=True)
    _, got = fresh_subscriber(clients, 5, "#")
    topics = {m.topic for m in got}
    assert "retd/x" in topics and not any(t.startswith("$") for t in topics)
    _, got = fresh_subscriber(clients, 5, "$ret/#")
    assert [m.payload for m in got] == [b"d"]


def test_retained_properties_kept(clients):
    """A retained v5 message keeps its properties (content type, user properties, ...)."""
    pub = clients.new()
    user = [("k1", "v1"), ("k2", "v2")]
    pub.publish("retp/t", b"{}", qos=1, retain=True, properties=props(
        PUBLISH, ContentType="application/json", UserProperty=user, PayloadFormatIndicator=1,
        ResponseTopic="retp/reply", CorrelationData=b"c"))
    _, got = fresh_subscriber(clients, 5, "retp/t")
    (m,) = got
    p = m.properties
    assert (p.ContentType, p.UserProperty, p.PayloadFormatIndicator, p.ResponseTopic,
            p.CorrelationData) == ("application/json", user, 1, "retp/reply", b"c")


@pytest.mark.slow
def test_retained_message_expiry(clients):
    """[MQTT-3.3.2-5] a retained message is no longer sent once its Message Expiry Interval has
    passed; before that it is sent with the remaining interval [MQTT-3.3.2-6]."""
    pub = clients.new()
    pub.publish("rete/short", b"s", qos=1, retain=True,
                properties=props(PUBLISH, MessageExpiryInterval=1))
    pub.publish("rete/long", b"l", qos=1, retain=True,
                properties=props(PUBLISH, MessageExpiryInterval=100))
    _, got = fresh_subscriber(clients, 5, "rete/+")
    assert sorted(m.payload for m in got) == [b"l", b"s"]
    elapse(2.2)
    _, got = fresh_subscriber(clients, 5, "rete/+")
    assert [m.payload for m in got] == [b"l"]
    assert got[0].properties.MessageExpiryInterval <= 98


def test_retained_sent_again_on_resubscribe_and_not_to_existing(clients):
    """A retained message published after a subscription exists is forwarded once (live);
    re-subscribing (Retain Handling 0) sends the stored one again."""
    sub = clients.new()
    sub.subscribe([("zz/barrier", 2)])
    sub.subscribe("retr/t", options=Opts(qos=1, retainHandling=0))
    pub = clients.new()
    pub.publish("retr/t", b"v", qos=1, retain=True)
    assert [(m.payload, m.retain) for m in barrier(pub, sub, "zz/barrier")] == [(b"v", False)]
    sub.subscribe("retr/t", options=Opts(qos=1, retainHandling=0))
    assert [(m.payload, m.retain) for m in barrier(pub, sub, "zz/barrier")] == [(b"v", True)]
