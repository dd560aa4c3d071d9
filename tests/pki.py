"""A throwaway test PKI made with the `openssl` CLI (`openssl ca`, so that revocation, CRLs
and an `openssl ocsp` responder work on the same database).

    root -> intermediate -> server (localhost, 127.0.0.1) and clients
    clients: good, revoked (in the intermediate's CRL), expired, and one from an untrusted root

Every file lands in one directory; paths are attributes of `Pki`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

CA_CONF = """
[ ca ]
default_ca = ca_default
[ ca_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
certificate = $dir/cert.pem
private_key = $dir/key.pem
default_md = sha256
default_days = 90
default_crl_days = 7
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ policy_any ]
commonName = supplied
organizationName = optional
organizationalUnitName = optional
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""


def run(*args: str, cwd: Optional[Path] = None) -> str:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def new_key(path: Path, kind: str = "ec") -> Path:
    if kind == "ec":
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(path))
    elif kind == "rsa":
        run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
            "-out", str(path))
    elif kind == "ed25519":
        run("openssl", "genpkey", "-algorithm", "ED25519", "-out", str(path))
    else:
        raise ValueError(kind)
    path.chmod(0o600)
    return path


class CA:
    """One CA directory driven by `openssl ca`."""

    def __init__(self, base: Path, name: str, parent: Optional["CA"] = None,
                 pathlen: Optional[int] = 0):
        self.name = name
        self.dir = base / name
        (self.dir / "newcerts").mkdir(parents=True, exist_ok=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n" if parent is None else "2000\n")
        (self.dir / "crlnumber").write_text("01\n")
        self.conf = self.dir / "ca.cnf"
        self.conf.write_text(CA_CONF.format(dir=self.dir))
        self.key = new_key(self.dir / "key.pem")
        self.cert = self.dir / "cert.pem"
        self.parent = parent
        if parent is None:
            run("openssl", "req", "-new", "-x509", "-key", str(self.key), "-subj",
                f"/O=Rampart Test/CN={name}", "-days", "365", "-out", str(self.cert),
                "-config", str(self.conf), "-extensions", "ca_ext")
        else:
            csr = self.dir / "req.csr"
            run("openssl", "req", "-new", "-key", str(self.key), "-subj",
                f"/O=Rampart Test/CN={name}", "-out", str(csr), "-config", str(self.conf))
            constraint = "CA:TRUE" if pathlen is None else f"CA:TRUE,pathlen:{pathlen}"
            parent.sign(csr, self.cert, f"basicConstraints=critical,{constraint}\n"
                        "keyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n"
                        "authorityKeyIdentifier=keyid\n")

    def sign(self, csr: Path, out: Path, ext: str, days: int = 90,
             startdate: Optional[str] = None, enddate: Optional[str] = None) -> Path:
        extfile = out.with_suffix(".ext")
        extfile.write_text("[ext]\n" + ext)
        args = ["openssl", "ca", "-batch", "-notext", "-config", str(self.conf), "-in", str(csr),
                "-out", str(out), "-extfile", str(extfile), "-extensions", "ext"]
        if startdate:
            args += ["-startdate", startdate, "-enddate", enddate or ""]
        else:
            args += ["-days", str(days)]
        run(*args)
        return out

    def issue(self, out_dir: Path, name: str, cn: str, ext: str, key_kind: str = "ec",
              **kw) -> tuple[Path, Path]:
        key = new_key(out_dir / f"{name}.key", key_kind)
        csr = out_dir / f"{name}.csr"
        run("openssl", "req", "-new", "-key", str(key), "-subj", f"/O=Rampart Test/CN={cn}",
            "-out", str(csr), "-config", str(self.conf))
        cert = self.sign(csr, out_dir / f"{name}.pem", ext, **kw)
        return cert, key

    def revoke(self, cert: Path) -> None:
        run("openssl", "ca", "-config", str(self.conf), "-revoke", str(cert))

    def crl(self, out: Path, crlsec: Optional[int] = None) -> Path:
        args = ["openssl", "ca", "-gencrl", "-config", str(self.conf), "-out", str(out)]
        if crlsec is not None:
            args += ["-crldays", "0", "-crlhours", "0", "-crlsec", str(crlsec)]
        run(*args)
        return out


SERVER_EXT = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
              "authorityKeyIdentifier=keyid\n")
CLIENT_EXT = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
              "extendedKeyUsage=clientAuth\nsubjectAltName=email:{cn}@example.test\n"
              "authorityKeyIdentifier=keyid\n")


def cat(out: Path, *parts: Path) -> Path:
    out.write_text("".join(p.read_text() for p in parts))
    return out


class Pki:
    def __init__(self, base: Path, ocsp_url: Optional[str] = None, server_key: str = "ec",
                 tag: str = "", crl_url: Optional[str] = None):
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.root = CA(base, f"root{tag}")
        self.inter = CA(base, f"intermediate{tag}", parent=self.root)
        ext = SERVER_EXT
        if ocsp_url:
            ext += f"authorityInfoAccess=OCSP;URI:{ocsp_url}\n"
        leaf, self.server_key = self.inter.issue(base, f"server{tag}", "localhost", ext,
                                                 key_kind=server_key)
        self.server_leaf = leaf
        # Served chain: leaf then intermediate (T3: the whole chain).
        self.server_chain = cat(base / f"server{tag}-chain.pem", leaf, self.inter.cert)
        # Clients trust the root only: the intermediate must come from the server.
        self.ca_bundle = self.root.cert
        # The broker's CA bundle for client certificates: root and intermediate.
        self.client_ca = cat(base / f"client-ca{tag}.pem", self.root.cert, self.inter.cert)

        def client(name: str, **kw) -> tuple[Path, Path]:
            ext = CLIENT_EXT.format(cn=name)
            if crl_url:
                ext += f"crlDistributionPoints=URI:{crl_url}\n"
            return self.inter.issue(base, f"{name}{tag}", name, ext, **kw)

        self.client_cert, self.client_key = client("client-good")
        self.revoked_cert, self.revoked_key = client("client-revoked")
        self.expired_cert, self.expired_key = client(
            "client-expired", startdate="20200101000000Z", enddate="20200201000000Z")
        self.inter.revoke(self.revoked_cert)
        self.crl_inter = self.inter.crl(base / f"intermediate{tag}.crl")
        self.crl_root = self.root.crl(base / f"root{tag}.crl")
        self.crls = [self.crl_root, self.crl_inter]
        # A client certificate from a root the broker does not trust.
        self.other_root = CA(base, f"untrusted-root{tag}")
        self.untrusted_cert, self.untrusted_key = self.other_root.issue(
            base, f"client-untrusted{tag}", "client-untrusted",
            CLIENT_EXT.format(cn="client-untrusted"))
