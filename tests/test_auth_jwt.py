"""JWT authentication through the broker (issue 5): HS256 tokens as the password, ACL rules
from a claim, refused tokens, and the disconnect when the token expires."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from mqtt_raw import RawClient

pytestmark = pytest.mark.rampart_only

SECRET = "jwt-test-secret-0123456789abcdef"
JWT = f"""
[[auth.backends]]
name = "jwt"
kind = "jwt"
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "rampart-tests"
audience = "mqtt"
leeway_secs = 0

[acl]
sources = ["identity"]
"""
RC_NOT_AUTHORIZED = 0x87


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(secret=SECRET, **claims) -> str:
    base = {"sub": "dev-1", "iss": "rampart-tests", "aud": "mqtt",
            "exp": int(time.time()) + 600, "acl": ["allow publish dev/${username}/#"]}
    base.update(claims)
    head = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64u(json.dumps(base).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64u(sig)}"


@pytest.fixture
def jwt_broker(broker_factory):
    b = broker_factory(start=False, extra_toml=JWT)
    b.config_path.chmod(0o600)
    return b.start()


def login(broker, password, version=5, username="dev-1", expect_rc=0, client_id="jwt-client"):
    c = RawClient(broker.host, broker.port, version)
    ack = c.connect(client_id, username=username, password=password, expect_rc=None)
    assert ack.reason == expect_rc, ack
    return c


def test_token_allows_and_its_acl_claim_applies(jwt_broker):
    c = login(jwt_broker, token())
    assert c.publish("dev/dev-1/t", b"1", qos=1).reason == 0
    assert c.publish("dev/dev-2/t", b"1", qos=1, pid=2).reason == RC_NOT_AUTHORIZED
    c.disconnect()


@pytest.mark.parametrize("bad", [
    dict(secret="another-secret-0123456789abcdef"),  # wrong signature
    dict(exp=int(time.time()) - 60),                  # expired
    dict(iss="someone-else"),                         # wrong issuer
    dict(aud="not-mqtt"),                             # wrong audience
    dict(nbf=int(time.time()) + 3600),                # not yet valid
    dict(sub="dev-2"),                                # not this username
])
def test_bad_tokens_are_refused(jwt_broker, bad):
    c = login(jwt_broker, token(**bad), expect_rc=0x86)
    c.close()
    c = login(jwt_broker, token(**bad), version=4, expect_rc=4)
    c.close()


def test_client_is_disconnected_when_its_token_expires(jwt_broker):
    exp = int(time.time()) + 5
    c5 = login(jwt_broker, token(exp=exp))
    c4 = login(jwt_broker, token(exp=exp), version=4, client_id="jwt-v4")
    c5.ping()
    c5.expect_closed_with(RC_NOT_AUTHORIZED, timeout=15)
    assert time.time() >= exp - 1, "closed at expiry, not before"
    c4.expect_closed_with(None, timeout=15)
