"""Throwaway certificates for the secured dev-stack broker, made with `openssl` at start-up.

One certificate authority, a server certificate for the broker (SAN ``localhost`` and
``127.0.0.1``, the addresses the launcher listens on) and a client certificate for mutual
TLS. Keys are EC P-256: a few milliseconds each, where RSA keys cost a noticeable share of a
broker start on a small machine. Nothing is cached: every secured broker gets fresh ones in
its own temporary directory, so no key outlives the broker that used it.

The broker (Java) reads its key and chain from a PKCS#12 file and trusts the CA from a PEM
file; clients (librdkafka, Python's ssl) read PEM files.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack._common import StackUnavailable

#: Where devstack servers listen (loopback only): what their certificates name.
LOOPBACK_SANS = ("DNS:localhost", "IP:127.0.0.1")
_DAYS = "2"  # outlives any test session, expires before anyone could reuse it


@dataclass(frozen=True)
class CertificateAuthority:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@dataclass(frozen=True)
class BrokerCertificates:
    """What a TLS broker and its clients need, all files under one directory."""

    ca: CertificateAuthority
    broker: Certificate
    broker_keystore: Path
    """PKCS#12: the broker's key and certificate chain (for ssl.keystore.location)."""
    keystore_password: str = field(repr=False)
    client: Certificate
    """Signed by the same CA, for mutual TLS (ssl.certificate.location / ssl.key.location)."""


def openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise StackUnavailable(
            "No `openssl` on PATH to make the TLS certificates of the secured broker "
            "(e.g. `apt-get install openssl`)"
        )
    return found


def _run(args: Sequence[str], cwd: Path) -> None:
    result = subprocess.run(
        [openssl(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise StackUnavailable(
            f"openssl {args[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )


def _new_key(path: Path, cwd: Path) -> None:
    _run(
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)],
        cwd,
    )
    path.chmod(0o600)


def make_ca(directory: Path, name: str = "devstack-ca") -> CertificateAuthority:
    """A self-signed CA (``<name>.pem`` and ``<name>.key`` in `directory`)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _new_key(key, directory)
    _run(
        [
            "req",
            "-x509",
            "-new",
            "-key",
            str(key),
            "-out",
            str(cert),
            "-days",
            _DAYS,
            "-subj",
            f"/CN={name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        directory,
    )
    return CertificateAuthority(cert=cert, key=key)


def issue(
    ca: CertificateAuthority,
    directory: Path,
    name: str,
    *,
    sans: Sequence[str] = (),
    usage: str = "serverAuth",
) -> Certificate:
    """A certificate for CN=`name` signed by `ca`; `usage` is serverAuth or clientAuth."""
    key, csr, cert = (directory / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
    _new_key(key, directory)
    _run(["req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={name}"], directory)
    extensions = directory / f"{name}.ext"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    extensions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _run(
        [
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca.cert),
            "-CAkey",
            str(ca.key),
            "-set_serial",
            str(secrets.randbits(63)),
            "-days",
            _DAYS,
            "-extfile",
            str(extensions),
            "-out",
            str(cert),
        ],
        directory,
    )
    csr.unlink()
    extensions.unlink()
    return Certificate(cert=cert, key=key)


def make_broker_certificates(directory: Path) -> BrokerCertificates:
    """A CA, the broker's certificate and keystore, and a client certificate."""
    ca = make_ca(directory)
    broker = issue(ca, directory, "broker", sans=LOOPBACK_SANS, usage="serverAuth")
    client = issue(ca, directory, "client", usage="clientAuth")
    password = secrets.token_hex(16)  # a throwaway for a throwaway file
    keystore = directory / "broker.p12"
    _run(
        [
            "pkcs12",
            "-export",
            "-name",
            "broker",
            "-inkey",
            str(broker.key),
            "-in",
            str(broker.cert),
            "-certfile",
            str(ca.cert),
            "-passout",
            f"pass:{password}",
            "-out",
            str(keystore),
        ],
        directory,
    )
    keystore.chmod(0o600)
    return BrokerCertificates(
        ca=ca,
        broker=broker,
        broker_keystore=keystore,
        keystore_password=password,
        client=client,
    )
