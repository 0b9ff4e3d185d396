"""TLS for the agent: a self-signed certificate on request, and the fingerprint a client pins.

The certificate is made with the ``openssl`` command-line tool (present on JetPack and Raspberry
Pi OS; the agent does not depend on the ``cryptography`` package) and kept under
``<root>/tls/``, so the fingerprint stays the same across restarts.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import subprocess
from pathlib import Path


def fingerprint(cert: Path) -> str:
    """SHA-256 of the first certificate in a PEM file, as ``AB:CD:...`` (what clients pin)."""
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def self_signed(root: Path, name: str = "autotune-agent") -> tuple[Path, Path]:
    """``(cert, key)`` under ``root/tls``, created with ``openssl`` the first time."""
    folder = root / "tls"
    cert, key = folder / "agent-cert.pem", folder / "agent-key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    if shutil.which("openssl") is None:
        raise RuntimeError("--self-signed needs the openssl command; or pass --tls-cert and --tls-key")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    host = socket.gethostname()
    names = f"subjectAltName=DNS:localhost,DNS:{host},DNS:{host}.local,IP:127.0.0.1,IP:::1"
    command = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "3650", "-subj", f"/CN={name}", "-addext", names,
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl could not make a certificate: {done.stderr.strip()[-300:]}")
    key.chmod(0o600)
    return cert, key
