"""MQTT over WebSocket (ws) and WebSocket over TLS (wss): paho clients, the `mqtt`
subprotocol, the configured path and the Origin allow-list."""

from __future__ import annotations

import pytest

from conftest import free_port
from mqtt_client import Client
from pki import Pki
from tls_fixtures import TransportClient, listener_toml, mtls_table, raw_http, tls_table

pytestmark = pytest.mark.rampart_only


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def ws_broker(broker_factory, pki):
    ws_port, wss_port, origin_port = free_port(), free_port(), free_port()
    extra = (listener_toml("ws", "ws", ws_port, ws_path="/mqtt")
             + listener_toml("ws-origin", "ws", origin_port,
                             ws_allowed_origins=["https://ok.example"])
             + listener_toml("wss", "wss", wss_port, tls_table(pki), ws_path="/ws"))
    b = broker_factory(extra_toml=extra)
    b.ws_port, b.wss_port, b.origin_port = ws_port, wss_port, origin_port
    return b


def upgrade(path: str = "/mqtt", protocol: str = "mqtt", origin: str = "") -> bytes:
    req = (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n")
    if protocol:
        req += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    if origin:
        req += f"Origin: {origin}\r\n"
    return (req + "\r\n").encode()


def test_ws_pub_sub_with_tcp_peer(ws_broker):
    ws = TransportClient(ws_broker.ws_port, transport="websockets", host="127.0.0.1")
    tcp = Client(ws_broker)
    try:
        ws.connect()
        tcp.connect()
        # QoS 0 to the WebSocket client: its loop thread then never writes (a PUBACK) while
        # the test thread publishes on the same connection (paho is not thread-safe there).
        ws.subscribe("w/t", qos=0)
        tcp.publish("w/t", b"from-tcp", qos=1)
        assert ws.expect_message().payload == b"from-tcp"
        tcp.subscribe("w/back", qos=1)
        ws.publish("w/back", b"from-ws" * 1000, qos=1)
        assert tcp.expect_message().payload == b"from-ws" * 1000
    finally:
        ws.stop()
        tcp.stop()


def test_wss_paho(ws_broker, pki):
    c = TransportClient(ws_broker.wss_port, transport="websockets", ws_path="/ws",
                        tls={"ca_certs": pki.ca_bundle}, version=4)
    try:
        c.connect()
        c.subscribe("s/t", qos=1)
        c.publish("s/t", b"over-wss", qos=1)
        assert c.expect_message().payload == b"over-wss"
    finally:
        c.stop()


def test_upgrade_echoes_mqtt_subprotocol(ws_broker):
    resp = raw_http(ws_broker.ws_port, upgrade(protocol="foo, mqtt"))
    head = resp.decode(errors="replace").lower()
    assert head.startswith("http/1.1 101"), head
    assert "sec-websocket-protocol: mqtt" in head, head


@pytest.mark.parametrize("kwargs,status", [
    ({"path": "/other"}, "404"),
    ({"protocol": ""}, "400"),
    ({"protocol": "chat"}, "400"),
    ({"origin": "https://evil.example"}, "403"),
])
def test_upgrade_refusals(ws_broker, kwargs, status):
    resp = raw_http(ws_broker.origin_port, upgrade(**kwargs)).decode(errors="replace")
    assert resp.split(" ")[1:2] == [status], resp


def test_allowed_origin_accepted(ws_broker):
    resp = raw_http(ws_broker.origin_port, upgrade(origin="https://ok.example")).decode()
    assert resp.startswith("HTTP/1.1 101"), resp
    # Without an Origin header (not a browser) the upgrade is accepted as well.
    resp = raw_http(ws_broker.origin_port, upgrade()).decode()
    assert resp.startswith("HTTP/1.1 101"), resp


def test_wss_mutual_tls(broker_factory, pki):
    # Client certificates (T4) on a WebSocket listener as on plain TLS: paho with its
    # certificate is served, without one it never gets a CONNACK, nor with a revoked one.
    port = free_port()
    broker_factory(extra_toml=listener_toml("wss-mtls", "wss", port, mtls_table(pki)))
    ok = TransportClient(port, transport="websockets", tls={
        "ca_certs": pki.ca_bundle, "certfile": pki.client_cert, "keyfile": pki.client_key},
        version=4)
    try:
        ok.connect()
        ok.subscribe("wm/t", qos=1)
        ok.publish("wm/t", b"over-wss-mtls", qos=1)
        assert ok.expect_message().payload == b"over-wss-mtls"
    finally:
        ok.stop()
    for identity in ({}, {"certfile": pki.revoked_cert, "keyfile": pki.revoked_key}):
        c = TransportClient(port, transport="websockets",
                            tls={"ca_certs": pki.ca_bundle, **identity}, version=4)
        try:
            with pytest.raises(Exception):
                c.connect(timeout=5)
        finally:
            c.stop()
