"""Helpers for the authentication tests: `rampart ctl`, a secured broker with built-in users,
and a SCRAM client (RFC 5802) for MQTT 5 enhanced authentication over raw packets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess

from mqtt_raw import AUTH, CONNACK, RawClient, connect_packet, encode_props, packet

BUILTIN = """
[auth]
timeout_ms = 3000
{auth_extra}

[auth.password_hash]
memory_kib = 8192
iterations = 1

[[auth.backends]]
name = "users"
kind = "builtin"

[[auth.backends]]
name = "scram"
kind = "scram"
"""


def ctl(broker, *args, stdin: str = "", config=True):
    cmd = [os.environ["RAMPART_BIN"], *args]
    if config:
        cmd += ["--config", str(broker.config_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPART_")}
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, env=env)


def add_user(broker, name, password, *extra):
    r = ctl(broker, "ctl", "users", "add", name, "--password-stdin", *extra, stdin=password + "\n")
    assert r.returncode == 0, r.stderr


def secured_broker(broker_factory, extra_toml="", users=(), auth_extra="", **sections):
    """A broker with a redb store, the builtin and scram backends and the given users:
    [(name, password, [extra ctl args])]; `auth_extra`: more keys of [auth]."""
    sections.setdefault("storage", {"backend": "redb"})
    b = broker_factory(start=False,
                       extra_toml=BUILTIN.replace("{auth_extra}", auth_extra) + extra_toml,
                       **sections)
    b.config_path.chmod(0o600)
    for name, pw, extra in users:
        add_user(b, name, pw, *extra)
    return b.start()


def auth_packet(reason: int, method: str, data: bytes | None = None) -> bytes:
    props = {"authentication_method": method}
    if data is not None:
        props["authentication_data"] = data
    return packet(AUTH, 0, bytes([reason]) + encode_props(props))


class Scram:
    """The client side of one SCRAM exchange (no channel binding)."""

    def __init__(self, method: str, user: str, password: str):
        self.method = method
        self.alg = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[method]
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.bare = f"n={user},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        sf = server_first.decode()
        attrs = dict(a.split("=", 1) for a in sf.split(","))
        assert attrs["r"].startswith(self.nonce), sf
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac(self.alg, self.password, salt, int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", self.alg).digest()
        stored_key = hashlib.new(self.alg, client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        auth_message = f"{self.bare},{sf},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, self.alg).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", self.alg).digest()
        self.server_signature = hmac.new(server_key, auth_message, self.alg).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        return server_final == b"v=" + base64.b64encode(self.server_signature)


def scram_connect(broker, user, password, method="SCRAM-SHA-256", client_id="scram-client",
                  **connect_kw) -> RawClient:
    """A raw v5 client authenticated with SCRAM at CONNECT (asserts success)."""
    c = RawClient(broker.host, broker.port, 5)
    s = Scram(method, user, password)
    c.send(connect_packet(client_id, 5, props={"authentication_method": method,
                                              "authentication_data": s.first()}, **connect_kw))
    challenge = c.expect(AUTH)
    assert challenge.reason == 0x18, challenge
    assert challenge.props.get("authentication_method") == method
    c.send(auth_packet(0x18, method, s.final(challenge.props.get("authentication_data"))))
    ack = c.expect(CONNACK)
    assert ack.reason == 0, ack
    assert ack.props.get("authentication_method") == method
    assert s.verify(ack.props.get("authentication_data")), "server signature"
    return c
