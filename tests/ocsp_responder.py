"""A loopback OCSP responder for the tests: a small HTTP server that answers each POSTed
request with `openssl ocsp` in request/response-file mode over the CA's `index.txt` (the
`openssl ocsp -port` server binds every interface and fails on some hosts).

    python3 ocsp_responder.py PORT INDEX CA_CERT SIGNER_CERT SIGNER_KEY [TLS_CHAIN TLS_KEY]

With TLS_CHAIN and TLS_KEY it answers over HTTPS.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

MAX_REQUEST = 64 * 1024


def main() -> None:
    port, index, ca, signer, key = sys.argv[1:6]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server naming)
            n = int(self.headers.get("Content-Length", "0"))
            if n <= 0 or n > MAX_REQUEST:
                self.send_error(400)
                return
            body = self.rfile.read(n)
            with tempfile.TemporaryDirectory() as d:
                req, resp = Path(d) / "req.der", Path(d) / "resp.der"
                req.write_bytes(body)
                p = subprocess.run(["openssl", "ocsp", "-index", index, "-CA", ca, "-rsigner",
                                    signer, "-rkey", key, "-reqin", str(req), "-respout",
                                    str(resp), "-ndays", "1"], capture_output=True, timeout=30)
                if p.returncode != 0 or not resp.exists():
                    self.send_error(500)
                    return
                data = resp.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/ocsp-response")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", int(port)), Handler)
    if len(sys.argv) >= 8:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile=sys.argv[6], keyfile=sys.argv[7])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
