"""MQTT 5 enhanced authentication (SCRAM-SHA-256/512 over AUTH packets) and
re-authentication ([MQTT-4.12.1]) through the broker, with raw packets (issue 5)."""

from __future__ import annotations

import pytest

from auth_helpers import Scram, auth_packet, scram_connect, secured_broker
from mqtt_raw import (AUTH, CONNACK, PUBACK, RC_PROTOCOL_ERROR, RawClient, SUBACK,
                      connect_packet, pingreq_packet, publish_packet, subscribe_packet)

pytestmark = pytest.mark.rampart_only

ACL = """
[acl]
sources = ["identity"]
"""
USERS = [("alice", "alice-secret", ["--acl", "allow all sensors/#"]),
         ("bob", "bob-secret", ["--acl", "allow all sensors/#"])]
RC_NOT_AUTHORIZED = 0x87


@pytest.fixture
def scram_broker(broker_factory):
    return secured_broker(broker_factory, ACL, USERS)


@pytest.mark.parametrize("method", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_reauthentication_succeeds_while_the_connection_keeps_serving(scram_broker, method):
    c = scram_connect(scram_broker, "alice", "alice-secret", method)
    assert c.subscribe(["sensors/#"]).reasons == [0]
    for round_ in range(2):
        s = Scram(method, "alice", "alice-secret")
        c.send(auth_packet(0x19, method, s.first()))
        challenge = c.expect(AUTH)
        assert challenge.reason == 0x18, challenge
        # Other packets flow during the exchange, under the previous authentication.
        c.send(publish_packet("sensors/t", b"mid-exchange", qos=1, pid=10 + round_))
        got = {}
        while len(got) < 2:
            p = c.read()
            got[p.name] = p
        assert got["PUBACK"].reason == 0
        assert got["PUBLISH"].payload == b"mid-exchange"
        c.ack(got["PUBLISH"])
        c.send(auth_packet(0x18, method, s.final(challenge.props.get("authentication_data"))))
        done = c.expect(AUTH)
        assert done.reason == 0x00, done
        assert done.props.get("authentication_method") == method
        assert s.verify(done.props.get("authentication_data"))
    c.ping()
    c.close()


@pytest.mark.parametrize(
    "user,password",
    [("alice", "not-the-password"), ("bob", "bob-secret")],
    ids=["wrong-password", "another-user"],
)
def test_failed_reauthentication_disconnects(scram_broker, user, password):
    """A re-authentication with a wrong password, or as another user (valid credentials of
    someone else), ends the connection."""
    c = scram_connect(scram_broker, "alice", "alice-secret")
    s = Scram("SCRAM-SHA-256", user, password)
    c.send(auth_packet(0x19, "SCRAM-SHA-256", s.first()))
    challenge = c.expect(AUTH)
    c.send(auth_packet(0x18, "SCRAM-SHA-256", s.final(challenge.props.get("authentication_data"))))
    c.expect_closed_with(RC_NOT_AUTHORIZED)


def test_reauthentication_with_another_method_is_a_protocol_error(scram_broker):
    c = scram_connect(scram_broker, "alice", "alice-secret", "SCRAM-SHA-256")
    s = Scram("SCRAM-SHA-512", "alice", "alice-secret")
    c.send(auth_packet(0x19, "SCRAM-SHA-512", s.first()))
    c.expect_closed_with(RC_PROTOCOL_ERROR)


def test_auth_out_of_sequence_is_a_protocol_error(scram_broker):
    # Continue (0x18) without a re-authentication in progress.
    c = scram_connect(scram_broker, "alice", "alice-secret")
    c.send(auth_packet(0x18, "SCRAM-SHA-256", b"c=biws,r=x,p=AAAA"))
    c.expect_closed_with(RC_PROTOCOL_ERROR)


def test_auth_without_a_method_at_connect_is_a_protocol_error(scram_broker):
    c = RawClient(scram_broker.host, scram_broker.port, 5)
    c.connect("plain", username="alice", password="alice-secret")
    c.send(auth_packet(0x19, "SCRAM-SHA-256", Scram("SCRAM-SHA-256", "alice", "x").first()))
    c.expect_closed_with(RC_PROTOCOL_ERROR)


def test_scram_at_connect_wrong_password_and_unknown_user(scram_broker):
    for user, pw in (("alice", "wrong"), ("nobody", "whatever")):
        c = RawClient(scram_broker.host, scram_broker.port, 5)
        s = Scram("SCRAM-SHA-256", user, pw)
        c.send(connect_packet("x", 5, props={"authentication_method": "SCRAM-SHA-256",
                                             "authentication_data": s.first()}))
        # An unknown user gets a challenge like a known one; only the proof fails.
        challenge = c.expect(AUTH)
        c.send(auth_packet(0x18, "SCRAM-SHA-256",
                           s.final(challenge.props.get("authentication_data"))))
        assert c.expect(CONNACK).reason == 0x86
        c.close()
    c = RawClient(scram_broker.host, scram_broker.port, 5)
    c.send(connect_packet("x", 5, props={"authentication_method": "KERBEROS",
                                         "authentication_data": b"x"}))
    assert c.expect(CONNACK).reason == 0x8C  # Bad authentication method
    c.close()
