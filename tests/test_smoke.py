"""Smoke: the broker starts, accepts 3.1.1 and 5.0 clients and routes one message."""

import pytest

from mqtt_raw import raw


@pytest.mark.parametrize("version", [4, 5])
def test_pubsub_round_trip(clients, version):
    sub = clients.new(version=version)
    assert sub.subscribe("smoke/t", 1) == [1]
    pub = clients.new(version=version)
    pub.publish("smoke/t", b"hello", qos=1)
    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos) == ("smoke/t", b"hello", 1)


def test_raw_client_ping(broker):
    with raw(broker, 5, "raw-ping") as c:
        c.ping()
    with raw(broker, 4, "raw-ping4") as c:
        c.ping()


def test_restart_keeps_port(broker, clients):
    broker.restart()
    c = clients.new(version=5)
    c.disconnect()
