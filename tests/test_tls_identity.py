"""The client certificate as identity (T4 with M1/M2): on an mTLS listener the certificate
backend makes the certificate's CN the username, and ACL rules written for that username
apply to the connection."""

from __future__ import annotations

import pytest

from conftest import free_port
from pki import Pki
from tls_fixtures import TransportClient, listener_toml, mosquitto, mtls_table

pytestmark = pytest.mark.rampart_only

ACL = """\
allow user:client-good publish devices/${username}/#
allow user:client-good subscribe devices/#
deny all all #
"""

AUTH = """
[auth]
timeout_ms = 3000

[[auth.backends]]
name = "device-certs"
kind = "certificate"
listeners = ["mtls"]
username_from = "cn"

[acl]
sources = ["file"]
file = "{acl}"
no_match = "deny"
"""


def test_certificate_cn_is_the_username_for_acl(broker_factory, tmp_path):
    pki = Pki(tmp_path / "pki")
    acl = tmp_path / "acl.conf"
    acl.write_text(ACL)
    acl.chmod(0o600)
    port = free_port()
    b = broker_factory(start=False, extra_toml=AUTH.replace("{acl}", str(acl))
                       + listener_toml("mtls", "tls", port, mtls_table(pki)))
    b.config_path.chmod(0o600)
    b.start()
    # The subscriber only reads after subscribing; publishes come from mosquitto_pub (paho
    # writing from the test thread while its loop thread reads the same TLS socket is not
    # thread-safe).
    c = TransportClient(port, tls={"ca_certs": pki.ca_bundle, "certfile": pki.client_cert,
                                   "keyfile": pki.client_key})
    try:
        c.connect()
        c.subscribe("devices/#", qos=1)

        def pub(topic):
            p = mosquitto("mosquitto_pub", port, pki, "-t", topic, "-m", "x", "-q", "1", "-d",
                          "-V", "mqttv5", cert=pki.client_cert, key=pki.client_key)
            return p.stdout + p.stderr

        # Its own subtree (devices/<CN>/...) is allowed; another device's is not (0x87).
        assert "received PUBACK (Mid: 1, RC:0)" in pub("devices/client-good/t")
        assert c.expect_message().topic == "devices/client-good/t"
        assert "received PUBACK (Mid: 1, RC:135)" in pub("devices/other/t")
        c.expect_no_message()
    finally:
        c.stop()


def test_client_id_taken_from_the_certificate(broker_factory, tmp_path):
    """`client_id_from = "cn"`: the certificate's CN replaces the id the client sent (a v5
    client learns it from Assigned Client Identifier), two connections with the same
    certificate are one session (the second takes over), and a client without a certificate
    is refused with 0x85 on a listener where it is optional."""
    pki = Pki(tmp_path / "pki")
    port = free_port()
    b = broker_factory(start=False, extra_toml=listener_toml(
        "mtls", "tls", port, mtls_table(pki, client_auth="optional", client_id_from="cn")))
    b.config_path.chmod(0o600)
    b.start()
    creds = {"ca_certs": pki.ca_bundle, "certfile": pki.client_cert, "keyfile": pki.client_key}
    first = TransportClient(port, tls=creds, client_id="chosen-by-client")
    second = TransportClient(port, tls=creds, client_id="another-choice", version=4)
    anon = TransportClient(port, tls={"ca_certs": pki.ca_bundle}, client_id="client-good")
    try:
        ack = first.connect()
        assert ack.properties.AssignedClientIdentifier == "client-good"
        # Same certificate, different requested id, MQTT 3.1.1: still "client-good", so it
        # takes the session over and the first connection gets DISCONNECT 0x8E.
        second.connect()
        assert first.wait_disconnected() == 0x8E
        # No certificate: there is no id to take, whatever the client asks for.
        anon.connect(expect_rc=0x85)
    finally:
        for c in (first, second, anon):
            c.stop()
