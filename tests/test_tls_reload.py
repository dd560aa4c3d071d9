"""Live TLS material (T5-T6, reload): OCSP stapling from a local `openssl ocsp` responder,
certificate and CA-bundle rotation with a client staying connected, CRL reload, a bad new
file keeping the old material, and the expired-CRL policy."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, port_accepts
from pki import Pki
from tls_fixtures import (HttpsDir, TransportClient, listener_toml, mosquitto, negotiated,
                          s_client, served_certs, tls_table, wait_until)

pytestmark = pytest.mark.rampart_only


def replace(dst: Path, src: Path) -> None:
    """Atomic replacement, as a deployment tool would do it."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_ocsp_response_stapled(broker_factory, tmp_path, scheme):
    ocsp_port = free_port()
    pki = Pki(tmp_path / "pki", ocsp_url=f"{scheme}://127.0.0.1:{ocsp_port}")
    args = [sys.executable, str(Path(__file__).with_name("ocsp_responder.py")), str(ocsp_port),
            str(pki.inter.dir / "index.txt"), str(pki.inter.cert), str(pki.inter.cert),
            str(pki.inter.key)]
    extra = {}
    if scheme == "https":
        # The responder's own certificate comes from another PKI, trusted via fetch_ca_file.
        web = Pki(tmp_path / "web", tag="-web")
        args += [str(web.server_chain), str(web.server_key)]
        extra = {"fetch_ca_file": str(web.ca_bundle), "fetch_system_roots": False}
    responder = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_accepts("127.0.0.1", ocsp_port), what="OCSP responder up")
        port, wss_port = free_port(), free_port()
        b = broker_factory(extra_toml=(
            listener_toml("ocsp", "tls", port, tls_table(pki, **extra))
            + listener_toml("ocsp-wss", "wss", wss_port, tls_table(pki, **extra))))

        def stapled(p):
            _, out = s_client(p, "-status", ca=pki.ca_bundle)
            return "Cert Status: good" in out and out

        # Plain TLS and WebSocket over TLS listeners staple alike.
        for p in (port, wss_port):
            out = wait_until(lambda: stapled(p), timeout=15, what="OCSP response stapled")
            assert "OCSP Response Status: successful" in out
            assert "Next Update:" in out
        # A failing responder never blocks handshakes: the last good response stays stapled.
        responder.kill()
        responder.wait()
        for p in (port, wss_port):
            rc, out = s_client(p, "-status", ca=pki.ca_bundle)
            assert negotiated(out) is not None and "Cert Status: good" in out, out
        assert "OCSP response fetched" in b.log_text()
    finally:
        if responder.poll() is None:
            responder.kill()
            responder.wait()


@pytest.fixture
def live(tmp_path):
    """Two independent PKIs and a directory of live files the broker watches."""
    a = Pki(tmp_path / "a")
    b = Pki(tmp_path / "b", tag="2")
    d = tmp_path / "live"
    d.mkdir()
    files = {"cert": d / "server.pem", "key": d / "server.key", "ca": d / "ca.pem",
             "crl_root": d / "root.crl", "crl_inter": d / "inter.crl"}
    for k, src in (("cert", a.server_chain), ("key", a.server_key), ("ca", a.client_ca),
                   ("crl_root", a.crl_root), ("crl_inter", a.crl_inter)):
        shutil.copyfile(src, files[k])
    return a, b, files


def live_listener(files, port, **extra):
    return listener_toml("live", "tls", port, {
        "cert_file": str(files["cert"]), "key_file": str(files["key"]),
        "ca_file": str(files["ca"]), "client_auth": "required",
        "crl_files": [str(files["crl_root"]), str(files["crl_inter"])],
        "reload_poll_secs": 1, **extra})


def mtls_client(port, pki):
    return TransportClient(port, tls={"ca_certs": pki.ca_bundle, "certfile": pki.client_cert,
                                      "keyfile": pki.client_key})


def test_rotate_server_certificate_and_ca_bundle(broker_factory, live):
    a, b, files = live
    port = free_port()
    broker = broker_factory(extra_toml=live_listener(files, port))
    old = mtls_client(port, a)
    new = None
    try:
        old.connect()
        old.subscribe("rot/t", qos=1)
        # Rotate to PKI b: key and chain first, then the CA bundle and CRLs.
        replace(files["key"], b.server_key)
        replace(files["cert"], b.server_chain)
        replace(files["ca"], b.client_ca)
        replace(files["crl_root"], b.crl_root)
        replace(files["crl_inter"], b.crl_inter)

        def sees_new():
            _, out = s_client(port, "-showcerts", "-cert", str(b.client_cert), "-key",
                              str(b.client_key), ca=b.ca_bundle)
            certs = served_certs(out)
            return len(certs) == 2 and "intermediate2" in certs[1] and out

        wait_until(sees_new, timeout=15, what="new server certificate served")
        # A new client of the new PKI connects; its message reaches the old connection.
        new = mtls_client(port, b)
        new.connect()
        new.publish("rot/t", b"after-rotation", qos=1)
        assert old.expect_message().payload == b"after-rotation"
        # The old CA no longer admits new clients.
        p = mosquitto("mosquitto_pub", port, a, "-t", "x", "-m", "x", cert=a.client_cert,
                      key=a.client_key)
        assert p.returncode != 0
        assert "reloaded" in broker.log_text()
    finally:
        old.stop()
        if new is not None:
            new.stop()


def test_sighup_reloads_at_once(broker_factory, live):
    # No file polling to speak of (an hour): only SIGHUP makes the broker re-read its files.
    a, b, files = live
    port = free_port()
    broker = broker_factory(extra_toml=live_listener(files, port, reload_poll_secs=3600))
    old = mtls_client(port, a)
    try:
        old.connect()
        old.subscribe("hup/t", qos=1)
        replace(files["key"], b.server_key)
        replace(files["cert"], b.server_chain)
        replace(files["ca"], b.client_ca)
        replace(files["crl_root"], b.crl_root)
        replace(files["crl_inter"], b.crl_inter)

        def served(pki):
            _, out = s_client(port, "-showcerts", "-cert", str(pki.client_cert), "-key",
                              str(pki.client_key), ca=pki.ca_bundle)
            return served_certs(out)

        # Still the old material: nothing has told the broker.
        certs = served(a)
        assert len(certs) == 2 and "intermediate2" not in certs[1], certs
        broker.signal(signal.SIGHUP)
        wait_until(lambda: any("intermediate2" in c for c in served(b)), timeout=10,
                   what="new certificate served after SIGHUP")
        # A new client of the new PKI reaches the connection made before the reload (paho
        # only reads there: its writes from this thread would race its loop on TLS).
        p = mosquitto("mosquitto_pub", port, b, "-t", "hup/t", "-m", "still-here", "-q", "1",
                      cert=b.client_cert, key=b.client_key)
        assert p.returncode == 0, p.stderr
        assert old.expect_message().payload == b"still-here"
    finally:
        old.stop()


def test_bad_new_file_keeps_old_material(broker_factory, live):
    a, _, files = live
    port = free_port()
    broker = broker_factory(extra_toml=live_listener(files, port))
    files["cert"].write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    wait_until(lambda: "TLS reload failed" in broker.log_text(), timeout=15,
               what="reload failure logged")
    # SIGHUP retries at once, with the same (bad) result; the broker stays up.
    broker.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP" in broker.log_text(), timeout=10, what="SIGHUP reload")
    assert broker.running()
    p = mosquitto("mosquitto_pub", port, a, "-t", "x", "-m", "x", cert=a.client_cert,
                  key=a.client_key)
    assert p.returncode == 0, p.stderr
    # A key that does not match the certificate is refused as well.
    shutil.copyfile(a.server_chain, files["cert"])
    shutil.copyfile(a.client_key, files["key"])
    broker.signal(signal.SIGHUP)
    wait_until(lambda: "is not the key of cert_file" in broker.log_text(), timeout=10,
               what="key mismatch logged")
    p = mosquitto("mosquitto_pub", port, a, "-t", "x", "-m", "x", cert=a.client_cert,
                  key=a.client_key)
    assert p.returncode == 0, p.stderr


def test_crl_reloaded_on_change(broker_factory, live):
    a, _, files = live
    port = free_port()
    broker_factory(extra_toml=live_listener(files, port))

    def pub():
        return mosquitto("mosquitto_pub", port, a, "-t", "x", "-m", "x", cert=a.client_cert,
                         key=a.client_key).returncode

    assert pub() == 0
    a.inter.revoke(a.client_cert)
    fresh = a.inter.crl(a.base / "inter-new.crl")
    replace(files["crl_inter"], fresh)
    wait_until(lambda: pub() != 0, timeout=15, what="revoked client refused")


@pytest.mark.parametrize("policy,accepted", [("deny", False), ("allow", True)])
def test_expired_crl_policy(broker_factory, live, policy, accepted):
    a, _, files = live
    expired = a.base / "inter-expired.crl"
    subprocess.run(["openssl", "ca", "-gencrl", "-config", str(a.inter.conf), "-out",
                    str(expired), "-crl_lastupdate", "20200101000000Z", "-crl_nextupdate",
                    "20200201000000Z"], check=True, capture_output=True)
    shutil.copyfile(expired, files["crl_inter"])
    port = free_port()
    broker_factory(extra_toml=live_listener(files, port, crl_expired=policy))
    p = mosquitto("mosquitto_pub", port, a, "-t", "x", "-m", "x", cert=a.client_cert,
                  key=a.client_key)
    assert (p.returncode == 0) == accepted, p.stderr


def test_crl_fetched_from_distribution_point(broker_factory, tmp_path):
    http_port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    pki = Pki(tmp_path / "pki", crl_url=f"http://127.0.0.1:{http_port}/inter.crl")
    shutil.copyfile(pki.crl_inter, www / "inter.crl")
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                               "--directory", str(www), str(http_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_accepts("127.0.0.1", http_port), what="CRL server up")
        port = free_port()
        broker = broker_factory(extra_toml=listener_toml("fetch", "tls", port, tls_table(
            pki, ca_file=pki.client_ca, client_auth="required", crl_fetch=True,
            reload_poll_secs=1)))

        def pub(cert, key):
            return mosquitto("mosquitto_pub", port, pki, "-t", "x", "-m", "x", cert=cert,
                             key=key).returncode

        # Until the CRL of the client's distribution point is fetched, its revocation
        # status is unknown and the handshake is refused (fail closed).
        wait_until(lambda: pub(pki.client_cert, pki.client_key) == 0, timeout=20,
                   what="good client accepted once the CRL is fetched", step=0.5)
        assert pub(pki.revoked_cert, pki.revoked_key) != 0
        assert "CRL fetched" in broker.log_text()
    finally:
        server.kill()
        server.wait()


def test_crl_fetched_over_https(broker_factory, tmp_path):
    # The distribution point is https://, served with a certificate of the test PKI: the
    # broker trusts it through fetch_ca_file only (system roots off).
    www = tmp_path / "www"
    www.mkdir()
    web = Pki(tmp_path / "web", tag="-web")
    server = HttpsDir(www, web.server_chain, web.server_key)
    with server:
        pki = Pki(tmp_path / "pki", crl_url=f"https://127.0.0.1:{server.port}/inter.crl")
        shutil.copyfile(pki.crl_inter, www / "inter.crl")
        trusted, untrusted = free_port(), free_port()
        common = dict(ca_file=pki.client_ca, client_auth="required", crl_fetch=True,
                      reload_poll_secs=1, fetch_system_roots=False)
        broker = broker_factory(extra_toml=(
            listener_toml("fetch", "tls", trusted, tls_table(
                pki, fetch_ca_file=str(web.ca_bundle), **common))
            + listener_toml("no-roots", "tls", untrusted, tls_table(pki, **common))))

        def pub(port, cert, key):
            return mosquitto("mosquitto_pub", port, pki, "-t", "x", "-m", "x", cert=cert,
                             key=key).returncode

        wait_until(lambda: pub(trusted, pki.client_cert, pki.client_key) == 0, timeout=20,
                   what="good client accepted once the CRL is fetched over https", step=0.5)
        assert pub(trusted, pki.revoked_cert, pki.revoked_key) != 0
        assert "CRL fetched" in broker.log_text()
        # Without a root for the server's certificate nothing is fetched: fail closed. (The
        # first handshake shows the broker the distribution point.)
        assert pub(untrusted, pki.client_cert, pki.client_key) != 0

        def refused():
            return any("CRL fetch failed" in line and "listener=no-roots" in line
                       and "TLS" in line for line in broker.log_text().splitlines())

        wait_until(refused, timeout=20, what="https fetch refused for want of a root")
        assert pub(untrusted, pki.client_cert, pki.client_key) != 0
