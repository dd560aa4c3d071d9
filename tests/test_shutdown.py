"""Graceful shutdown: SIGTERM/SIGINT stop accepting, send v5 clients DISCONNECT 0x8B Server
shutting down, close 3.1.1 clients, and exit 0 within a bound."""

import signal
import time

import pytest

from conftest import port_accepts
from mqtt_raw import RC_SERVER_SHUTTING_DOWN, raw


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown(broker, sig):
    v5 = [raw(broker, 5, f"sd5-{i}") for i in range(3)]
    v3 = [raw(broker, 4, f"sd3-{i}") for i in range(2)]
    v5[0].subscribe([("sd/t", 1)])
    t0 = time.monotonic()
    broker.signal(sig)
    for c in v5:
        c.expect_closed_with(RC_SERVER_SHUTTING_DOWN, timeout=10, required=broker.is_rampart)
        c.close()
    for c in v3:
        c.expect_closed_with(None, timeout=10)
        c.close()
    rc = broker.wait(10)
    assert rc == 0, f"exit code {rc} after {sig!r}"
    assert time.monotonic() - t0 < 10
    assert not port_accepts(broker.host, broker.port)


def test_shutdown_with_idle_and_half_open_connections(broker):
    """A connection that never sent CONNECT, or sent half a packet, does not delay the exit."""
    from mqtt_raw import RawClient, connect_packet
    idle = RawClient(broker.host, broker.port)
    half = RawClient(broker.host, broker.port)
    half.send(connect_packet("half", 5)[:6])
    t0 = time.monotonic()
    broker.signal(signal.SIGTERM)
    assert broker.wait(10) == 0
    assert time.monotonic() - t0 < 10
    idle.close()
    half.close()


def test_restart_after_shutdown(broker, clients):
    """After a clean exit the same port can be bound again at once (no lingering listener)."""
    assert broker.stop() == 0
    broker.start()
    c = clients.new()
    c.subscribe("rs/t", 1)
    c.publish("rs/t", b"x", qos=1)
    assert c.expect_message().payload == b"x"
