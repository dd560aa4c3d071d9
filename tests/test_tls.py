"""TLS listeners (T1-T4, H3): versions and suites, whole chain, SNI, mTLS refusals, clients
over TLS, handshake timeout. Real `openssl s_client`, mosquitto_pub/sub and paho clients."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from conftest import free_port
from mqtt_client import Client
from pki import CA, CLIENT_EXT, SERVER_EXT, Pki, cat
from tls_fixtures import (TIMEOUT, TransportClient, listener_toml, mosquitto, mtls_table,
                          negotiated, s_client, served_certs, tls_table)

pytestmark = pytest.mark.rampart_only


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(broker_factory, pki):
    """A broker with a TLS listener (no client auth) and an mTLS listener."""
    tls_port, mtls_port = free_port(), free_port()
    extra = (listener_toml("tls", "tls", tls_port, tls_table(pki))
             + listener_toml("mtls", "tls", mtls_port, mtls_table(pki)))
    b = broker_factory(extra_toml=extra)
    b.tls_port, b.mtls_port = tls_port, mtls_port
    return b


def test_tls12_and_tls13_accepted(tls_broker, pki):
    for flag, proto in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        rc, out = s_client(tls_broker.tls_port, flag, ca=pki.ca_bundle)
        got = negotiated(out)
        assert got is not None and got[0] == proto, out
        assert "Verify return code: 0 (ok)" in out, out


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls10_and_tls11_refused(tls_broker, flag):
    # SECLEVEL=0 lets the local OpenSSL even try; the broker must still refuse (T1).
    rc, out = s_client(tls_broker.tls_port, flag, "-cipher", "DEFAULT@SECLEVEL=0")
    assert negotiated(out) is None, out
    assert rc != 0


@pytest.mark.parametrize("cipher", [
    "ECDHE-ECDSA-AES128-SHA",      # CBC
    "ECDHE-ECDSA-AES256-SHA384",   # CBC
    "AES128-GCM-SHA256",           # no forward secrecy (static RSA key exchange)
])
def test_cbc_and_non_ecdhe_suites_refused(tls_broker, cipher):
    rc, out = s_client(tls_broker.tls_port, "-tls1_2", "-cipher", cipher)
    assert negotiated(out) is None, out


def test_aead_suite_negotiated(tls_broker, pki):
    rc, out = s_client(tls_broker.tls_port, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305",
                       ca=pki.ca_bundle)
    assert negotiated(out) == ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"), out


def test_whole_chain_served(tls_broker, pki):
    # The client trusts only the root: verification succeeds only if the intermediate is sent.
    rc, out = s_client(tls_broker.tls_port, "-showcerts", ca=pki.ca_bundle)
    subjects = served_certs(out)
    assert len(subjects) == 2, out
    assert "CN = localhost" in subjects[0] and "intermediate" in subjects[1], subjects
    assert "Verify return code: 0 (ok)" in out, out


def test_configured_suites_and_order(broker_factory, pki):
    port = free_port()
    broker_factory(extra_toml=listener_toml("tls", "tls", port, tls_table(
        pki, min_version="1.3", ciphers=["TLS_CHACHA20_POLY1305_SHA256"], groups=["secp384r1"])))
    rc, out = s_client(port, ca=pki.ca_bundle)
    assert negotiated(out) == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"), out
    assert "secp384r1" in out or "P-384" in out, out
    rc, out = s_client(port, "-tls1_2", ca=pki.ca_bundle)
    assert negotiated(out) is None, out


def test_mosquitto_pub_sub_over_tls(tls_broker, pki):
    port = tls_broker.tls_port
    sub = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", str(port), "--cafile",
                            str(pki.ca_bundle), "-t", "tls/t", "-C", "1", "-W", "10", "-q", "1",
                            "-d"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Publish until the subscriber has its subscription (its SUBACK shows with -d).
        deadline = time.monotonic() + TIMEOUT
        out = ""
        while time.monotonic() < deadline and sub.poll() is None:
            p = mosquitto("mosquitto_pub", port, pki, "-t", "tls/t", "-m", "over-tls", "-q", "1")
            assert p.returncode == 0, p.stderr
            try:
                out, _ = sub.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
        assert "over-tls" in out, out
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def test_paho_over_tls(tls_broker, pki):
    c = TransportClient(tls_broker.tls_port, tls={"ca_certs": pki.ca_bundle})
    try:
        c.connect()
        c.subscribe("p/t", qos=1)
        c.publish("p/t", b"hello", qos=1)
        assert c.expect_message().payload == b"hello"
    finally:
        c.stop()


# ---- mutual TLS (T4) ------------------------------------------------------------------------

def test_mtls_good_client_accepted(tls_broker, pki):
    p = mosquitto("mosquitto_pub", tls_broker.mtls_port, pki, "-t", "m/t", "-m", "x", "-q", "1",
                  cert=pki.client_cert, key=pki.client_key)
    assert p.returncode == 0, p.stderr
    c = TransportClient(tls_broker.mtls_port, tls={"ca_certs": pki.ca_bundle,
                                                   "certfile": pki.client_cert,
                                                   "keyfile": pki.client_key})
    try:
        c.connect()
    finally:
        c.stop()
    assert "client-good" in tls_broker.log_text()


def test_mosquitto_sub_over_mtls(tls_broker, pki):
    # A retained message is there for the subscriber, so no ordering is needed.
    p = mosquitto("mosquitto_pub", tls_broker.mtls_port, pki, "-t", "m/retained", "-m",
                  "kept", "-r", "-q", "1", cert=pki.client_cert, key=pki.client_key)
    assert p.returncode == 0, p.stderr
    s = mosquitto("mosquitto_sub", tls_broker.mtls_port, pki, "-t", "m/retained", "-C", "1",
                  "-W", "10", cert=pki.client_cert, key=pki.client_key)
    assert s.returncode == 0 and s.stdout.strip() == "kept", (s.stdout, s.stderr)
    # The same subscriber without its certificate is refused.
    s = mosquitto("mosquitto_sub", tls_broker.mtls_port, pki, "-t", "m/retained", "-C", "1",
                  "-W", "5")
    assert s.returncode != 0 and "kept" not in s.stdout


@pytest.mark.parametrize("which", ["missing", "untrusted", "revoked", "expired"])
def test_mtls_refusals(tls_broker, pki, which):
    cert, key = {
        "missing": (None, None),
        "untrusted": (pki.untrusted_cert, pki.untrusted_key),
        "revoked": (pki.revoked_cert, pki.revoked_key),
        "expired": (pki.expired_cert, pki.expired_key),
    }[which]
    for version in ("tlsv1.2", "tlsv1.3"):
        p = mosquitto("mosquitto_pub", tls_broker.mtls_port, pki, "-t", "m/t", "-m", "x",
                      "-q", "1", "--tls-version", version, cert=cert, key=key)
        assert p.returncode != 0, f"{which} client certificate accepted over {version}"
    # The same certificate on the listener without client auth is not even asked for.
    if which == "missing":
        p = mosquitto("mosquitto_pub", tls_broker.tls_port, pki, "-t", "m/t", "-m", "x")
        assert p.returncode == 0, p.stderr


def test_mtls_optional(broker_factory, pki):
    port = free_port()
    broker_factory(extra_toml=listener_toml("opt", "tls", port, mtls_table(
        pki, client_auth="optional")))
    assert mosquitto("mosquitto_pub", port, pki, "-t", "o", "-m", "x").returncode == 0
    assert mosquitto("mosquitto_pub", port, pki, "-t", "o", "-m", "x", cert=pki.client_cert,
                     key=pki.client_key).returncode == 0
    assert mosquitto("mosquitto_pub", port, pki, "-t", "o", "-m", "x", cert=pki.revoked_cert,
                     key=pki.revoked_key).returncode != 0


def test_verify_depth_counts_the_verified_path(broker_factory, tmp_path):
    # root -> i1 -> i2 -> client, with only the root in the CA bundle: the verified path has
    # two intermediates, whatever the client presents.
    root = CA(tmp_path, "depth-root")
    i1 = CA(tmp_path, "depth-i1", parent=root, pathlen=1)
    i2 = CA(tmp_path, "depth-i2", parent=i1)
    cert, key = i2.issue(tmp_path, "deep-client", "deep-client",
                         CLIENT_EXT.format(cn="deep-client"))
    chain = cat(tmp_path / "deep-chain.pem", cert, i2.cert, i1.cert)
    # Padding with copies of the intermediates does not lengthen the path.
    padded = cat(tmp_path / "deep-padded.pem", cert, i2.cert, i1.cert, i2.cert, i1.cert)
    server = Pki(tmp_path / "server")
    ports = {depth: free_port() for depth in (1, 2)}
    broker_factory(extra_toml="".join(
        listener_toml(f"depth{d}", "tls", port, tls_table(
            server, ca_file=root.cert, client_auth="required", verify_depth=d))
        for d, port in ports.items()))

    def pub(port, presented):
        return mosquitto("mosquitto_pub", port, server, "-t", "d", "-m", "x", cert=presented,
                         key=key)

    for presented in (chain, padded):
        ok = pub(ports[2], presented)
        assert ok.returncode == 0, ok.stderr
    # One intermediate deeper than allowed: refused.
    assert pub(ports[1], chain).returncode != 0


# ---- server certificates ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_rsa_and_ed25519_server_keys(broker_factory, tmp_path, kind):
    pki = Pki(tmp_path / kind, server_key=kind)
    port = free_port()
    broker_factory(extra_toml=listener_toml("k", "tls", port, tls_table(pki)))
    # OpenSSL 3 offers Ed25519 signatures in TLS 1.3 and 1.2.
    rc, out = s_client(port, ca=pki.ca_bundle)
    assert negotiated(out) is not None, out
    assert "Verify return code: 0 (ok)" in out, out


def test_sni_picks_certificate(broker_factory, pki, tmp_path):
    other = pki.inter.issue(tmp_path, "other", "other.test",
                            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                            "subjectAltName=DNS:other.test\n")
    other_chain = tmp_path / "other-chain.pem"
    other_chain.write_text(other[0].read_text() + pki.inter.cert.read_text())
    port = free_port()
    broker_factory(extra_toml=listener_toml("sni", "tls", port, tls_table(
        pki, sni_cert_files=[str(other_chain)], sni_key_files=[str(other[1])])))
    _, out = s_client(port, "-showcerts", servername="other.test", ca=pki.ca_bundle)
    assert "CN = other.test" in served_certs(out)[0], out
    _, out = s_client(port, "-showcerts", servername="localhost", ca=pki.ca_bundle)
    assert "CN = localhost" in served_certs(out)[0], out


def test_expiry_alarm_and_counters_in_sys(broker_factory, pki, tmp_path):
    # A server certificate with 10 days left: warned about in the log and in $SYS (T3).
    cert, key = pki.inter.issue(tmp_path, "soon", "localhost", SERVER_EXT, days=10)
    chain = cat(tmp_path / "soon-chain.pem", cert, pki.inter.cert)
    port = free_port()
    b = broker_factory(extra_toml=listener_toml("soon", "tls", port, tls_table(
        pki, cert_file=str(chain), key_file=str(key))))
    _, out = s_client(port, ca=pki.ca_bundle)
    assert negotiated(out) is not None, out
    assert "server certificate expires soon" in b.log_text()
    base = "$SYS/broker/tls/listeners/soon"
    c = Client(b)
    try:
        c.connect()
        c.subscribe("$SYS/broker/#")
        seen = {}
        deadline = time.monotonic() + TIMEOUT
        want = (f"{base}/certificate/days_left", f"{base}/alarms",
                "$SYS/broker/transport/tls_handshakes", "$SYS/broker/tls/alarms/count")
        # Values refresh every second: wait until the handshake above is counted.
        while not (all(t in seen for t in want)
                   and int(seen["$SYS/broker/transport/tls_handshakes"]) >= 1):
            m = c.expect_message(max(0.0, deadline - time.monotonic()))
            seen[m.topic] = m.payload.decode()
        assert int(seen[f"{base}/certificate/days_left"]) in (9, 10), seen
        assert "certificate_expiring" in seen[f"{base}/alarms"], seen
        assert int(seen["$SYS/broker/tls/alarms/count"]) >= 1, seen
        assert int(seen[f"{base}/certificate/not_after"]) > time.time()
    finally:
        c.stop()


def test_handshake_timeout_frees_the_slot(broker_factory, pki):
    port = free_port()
    broker_factory(extra_toml=listener_toml("slow", "tls", port, tls_table(
        pki, handshake_timeout_secs=1)))
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        started = time.monotonic()
        # Send nothing: the broker must close the connection after the handshake timeout.
        assert s.recv(1) == b""
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5, elapsed


def test_bad_certificate_file_fails_start(broker_factory, pki, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    b = broker_factory(extra_toml=listener_toml("bad", "tls", free_port(), tls_table(
        pki, cert_file=str(bad))), start=False)
    with pytest.raises(RuntimeError) as e:
        b.start(timeout=10)
    assert "cert_file" in str(e.value)
