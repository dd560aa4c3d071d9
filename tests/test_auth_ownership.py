"""Client-id ownership of offline persistent sessions (issue 5): a session belongs to the
identity that created it, while it is offline too and across a restart; another identity
is refused (0x85 by default, 0x87 or allowed by configuration)."""

from __future__ import annotations

import pytest

from auth_helpers import secured_broker
from mqtt_raw import PUBLISH, RawClient

pytestmark = pytest.mark.rampart_only

USERS = [("alice", "alice-pw", ["--acl", "allow all dev/#"]),
         ("mallory", "mallory-pw", ["--acl", "allow all dev/#"])]
EXPIRY = {"session_expiry_interval": 3600}


def login(broker, user, client_id, version=5, clean=False, expect_rc=0):
    c = RawClient(broker.host, broker.port, version)
    ack = c.connect(client_id, clean=clean, username=user, password=f"{user}-pw",
                    props=EXPIRY if version == 5 else None, expect_rc=expect_rc)
    return c, ack


def leave_session_with_a_message(broker):
    """alice's persistent session `dev1` subscribes and goes offline; a message is queued."""
    c, ack = login(broker, "alice", "dev1", clean=True)
    assert c.subscribe([("dev/#", 1)]).reasons == [1]
    c.disconnect()
    p, _ = login(broker, "alice", "alice-pub", clean=True)
    assert p.publish("dev/x", b"queued", qos=1).reason == 0
    p.disconnect()


def test_offline_session_is_refused_to_another_identity_across_restart(broker_factory):
    b = secured_broker(broker_factory, "", USERS)
    leave_session_with_a_message(b)
    for clean in (False, True):
        c, _ = login(b, "mallory", "dev1", clean=clean, expect_rc=0x85)
        c.close()
    c, _ = login(b, "mallory", "dev1", version=4, expect_rc=2)  # 3.1.1: identifier rejected
    c.close()
    b.restart()
    c, _ = login(b, "mallory", "dev1", expect_rc=0x85)
    c.close()
    # The owner gets the session back, with the message queued for it.
    c, ack = login(b, "alice", "dev1")
    assert ack.session_present
    p = c.expect(PUBLISH)
    assert p.payload == b"queued"
    c.ack(p)
    c.disconnect()


def test_refusal_code_is_configurable(broker_factory):
    b = secured_broker(broker_factory, "", USERS, auth_extra='ownership_refusal = "not_authorized"')
    leave_session_with_a_message(b)
    c, _ = login(b, "mallory", "dev1", expect_rc=0x87)
    c.close()


def test_ownership_off_lets_another_identity_resume(broker_factory):
    b = secured_broker(broker_factory, "", USERS, auth_extra="client_id_ownership = false")
    leave_session_with_a_message(b)
    c, ack = login(b, "mallory", "dev1")
    assert ack.session_present
    c.disconnect()
