"""Helpers for the TLS, mTLS, WSS and PROXY protocol tests: a test PKI (tests/pki.py), extra
listeners appended to the broker's config, `openssl s_client` probes and paho clients over
TLS and WebSocket transports."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import paho.mqtt.client as mqtt

from conftest import free_port, toml_value
from mqtt_client import Client

TIMEOUT = 10.0


def listener_toml(name: str, kind: str, port: int, tls: Optional[dict] = None, **keys) -> str:
    lines = ["[[listeners]]", f"name = {toml_value(name)}", f"kind = {toml_value(kind)}",
             f"bind = \"127.0.0.1:{port}\""]
    lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    if tls is not None:
        lines.append(f"[listeners.tls]")
        lines += [f"{k} = {toml_value(str(v) if isinstance(v, Path) else v)}"
                  for k, v in tls.items()]
    return "\n".join(lines) + "\n"


def tls_table(pki, **extra) -> dict:
    t = {"cert_file": pki.server_chain, "key_file": pki.server_key}
    t.update(extra)
    return {k: ([str(x) for x in v] if isinstance(v, list) else v) for k, v in t.items()}


def mtls_table(pki, **extra) -> dict:
    t = {"ca_file": pki.client_ca, "client_auth": "required",
         "crl_files": [str(p) for p in pki.crls]}
    t.update(extra)
    return tls_table(pki, **t)


def s_client(port: int, *args: str, ca: Optional[Path] = None, servername: str = "localhost",
             stdin: bytes = b"") -> tuple[int, str]:
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername]
    if ca is not None:
        cmd += ["-CAfile", str(ca), "-verify_return_error"]
    cmd += list(args)
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=TIMEOUT)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def negotiated(out: str) -> Optional[tuple[str, str]]:
    """(protocol, cipher) of a completed handshake in s_client output, else None."""
    m = re.search(r"^New, (TLSv1(?:\.\d)?|SSLv3), Cipher is (\S+)", out, re.M)
    if not m or m.group(2) == "(NONE)":
        return None
    return m.group(1), m.group(2)


def served_certs(out: str) -> list[str]:
    """Subjects of the chain the server sent (s_client -showcerts)."""
    chain = out.split("Certificate chain", 1)[-1].split("\n---\n", 1)[0]
    return re.findall(r"^\s*\d+ s:(.*)$", chain, re.M)


def mosquitto(tool: str, port: int, pki, *args: str, cert=None, key=None,
              timeout: float = TIMEOUT, ws: bool = False) -> subprocess.CompletedProcess:
    cmd = [tool, "-h", "localhost", "-p", str(port), "--cafile", str(pki.ca_bundle)]
    if cert:
        cmd += ["--cert", str(cert), "--key", str(key)]
    cmd += list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout, text=True)


class TransportClient(Client):
    """tests/mqtt_client.Client over TLS and/or WebSocket."""

    def __init__(self, port: int, transport: str = "tcp", tls: Optional[dict] = None,
                 ws_path: str = "/mqtt", host: str = "localhost", **kw):
        super().__init__(SimpleNamespace(host=host, port=port), **kw)
        old = self.c
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5 if self.version == 5 else mqtt.MQTTv311,
                             transport=transport)
        for cb in ("on_connect", "on_disconnect", "on_message", "on_subscribe",
                   "on_unsubscribe", "on_publish"):
            setattr(self.c, cb, getattr(old, cb))
        if transport == "websockets":
            self.c.ws_set_options(path=ws_path)
        if tls is not None:
            self.c.tls_set(**{k: str(v) for k, v in tls.items()})


def wait_until(pred, timeout: float = TIMEOUT, what: str = "condition", step: float = 0.1):
    """Polls `pred` until true; bounded by `timeout` (for effects with no event to await,
    such as the broker's file-change poll)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


class HttpsDir:
    """A loopback HTTPS server of `directory`, serving `chain` and `key` (a context manager):
    the CRL distribution point over https:// in the tests."""

    def __init__(self, directory: Path, chain: Path, key: Path):
        import functools
        import http.server
        import ssl
        import threading

        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile=str(chain), keyfile=str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HttpsDir":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=TIMEOUT)


def _make_quiet_handler():
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def handle(self):
            # A client that gives up mid-handshake must not print a traceback.
            try:
                super().handle()
            except (OSError, ValueError):
                pass

    return Quiet


_QuietHandler = _make_quiet_handler()
