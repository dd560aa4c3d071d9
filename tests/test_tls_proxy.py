"""PROXY protocol v1/v2: the client address comes from the header only when the socket peer
is a trusted proxy; a header from anyone else is refused. The broker's own policy (anonymous
access from loopback only) shows which address it believed."""

from __future__ import annotations

import socket
import ssl
import struct

import pytest

from conftest import free_port
from pki import Pki
from tls_fixtures import TIMEOUT, listener_toml, tls_table, wait_until

pytestmark = pytest.mark.rampart_only

# MQTT 3.1.1 CONNECT, clean session, keep alive 60, client id "px".
CONNECT = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 2]) + b"px"


def connect(client_id: str) -> bytes:
    cid = client_id.encode()
    return (bytes([0x10, 12 + len(cid), 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, len(cid)])
            + cid)


def v1(src: str, port: int = 40000) -> bytes:
    return f"PROXY TCP4 {src} 127.0.0.1 {port} 1883\r\n".encode()


def v2(src: str, port: int = 40000) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 1883)
    return b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def exchange(sock, data: bytes) -> bytes:
    """Sends `data`; returns the first bytes the broker answers (b"" if it closes)."""
    sock.sendall(data)
    try:
        return sock.recv(4)
    except (ConnectionResetError, ssl.SSLError):
        return b""


def connack_code(resp: bytes):
    return resp[3] if len(resp) == 4 and resp[0] == 0x20 else None


@pytest.fixture
def proxied(broker_factory):
    trusted, untrusted = free_port(), free_port()
    extra = (listener_toml("via-lb", "tcp", trusted, proxy_protocol=True,
                           trusted_proxies=["127.0.0.0/8"])
             + listener_toml("lb-elsewhere", "tcp", untrusted, proxy_protocol=True,
                             trusted_proxies=["192.0.2.1"]))
    b = broker_factory(extra_toml=extra)
    b.trusted_port, b.untrusted_port = trusted, untrusted
    return b


@pytest.mark.parametrize("header", [v1, v2])
def test_trusted_proxy_sets_client_address(proxied, header):
    # A loopback client address is admitted anonymously...
    with socket.create_connection(("127.0.0.1", proxied.trusted_port), timeout=TIMEOUT) as s:
        assert connack_code(exchange(s, header("127.0.0.9") + CONNECT)) == 0
    # ...a remote one is not: the broker took the address from the header.
    with socket.create_connection(("127.0.0.1", proxied.trusted_port), timeout=TIMEOUT) as s:
        assert connack_code(exchange(s, header("198.51.100.7") + CONNECT)) == 5
    assert "198.51.100.7" in proxied.log_text()


def test_trusted_proxy_must_send_a_header(proxied):
    with socket.create_connection(("127.0.0.1", proxied.trusted_port), timeout=TIMEOUT) as s:
        assert exchange(s, CONNECT) == b""


@pytest.mark.parametrize("header", [v1, v2])
def test_header_from_untrusted_peer_refused(proxied, header):
    with socket.create_connection(("127.0.0.1", proxied.untrusted_port), timeout=TIMEOUT) as s:
        assert exchange(s, header("127.0.0.9") + CONNECT) == b""
    assert "not in trusted_proxies" in proxied.log_text()
    # A direct client (no header) of that listener is served normally.
    with socket.create_connection(("127.0.0.1", proxied.untrusted_port), timeout=TIMEOUT) as s:
        assert connack_code(exchange(s, CONNECT)) == 0


def test_proxy_header_before_tls(broker_factory, tmp_path):
    pki = Pki(tmp_path / "pki")
    port = free_port()
    broker_factory(extra_toml=listener_toml("tls-lb", "tls", port, tls_table(pki),
                                            proxy_protocol=True, trusted_proxies=["127.0.0.1"]))
    ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    raw.sendall(v1("127.0.0.9"))
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        assert connack_code(exchange(s, CONNECT)) == 0


def test_per_address_caps_apply_to_the_client_behind_the_proxy(broker_factory):
    # Every connection comes from the proxy (127.0.0.1); the caps count the clients it names.
    port = free_port()
    b = broker_factory(limits={"per_address_max_connections": 2},
                       extra_toml=listener_toml("via-lb", "tcp", port, proxy_protocol=True,
                                                trusted_proxies=["127.0.0.0/8"]))
    held = []
    try:
        # Distinct client ids, so that no connection takes over another's session.
        for i in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            held.append(s)
            assert connack_code(exchange(s, v1("127.0.0.9") + connect(f"c{i}"))) == 0
        # A third connection for the same client is over its cap...
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            assert exchange(s, v2("127.0.0.9") + connect("c2")) == b""
        # ...another client through the same proxy is not, nor is the proxy itself capped.
        for src in ("127.0.0.10", "127.0.0.11"):
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            held.append(s)
            assert connack_code(exchange(s, v1(src) + connect(src))) == 0
        # Closing one of the client's connections gives its slot back.
        held.pop(0).close()

        def reconnects():
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
                return connack_code(exchange(s, v1("127.0.0.9") + connect("c3"))) == 0

        wait_until(reconnects, what="slot given back")
    finally:
        for s in held:
            s.close()
    assert "per-address connection cap" in b.log_text()
