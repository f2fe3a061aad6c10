"""A throwaway certificate authority and server certificate for TLS tests, made with the
``openssl`` command-line tool (no Python dependency).

``make_test_pki`` writes a CA and a server certificate for ``localhost`` and ``127.0.0.1``
(signed by that CA, valid for two days) into a folder, plus a PKCS#12 keystore of the
server key for Java servers (Kafka). Test material only: the keys are not protected, and
the daemon must never import this module.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cdc.testing import ServiceError

__all__ = ["LocalPki", "make_test_pki"]

# Two days: long enough for any test run, short enough that a leaked file is useless soon.
VALIDITY_DAYS = "2"
# P-256 keys: generated in milliseconds, accepted by libpq, librdkafka and Java.
_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True, slots=True)
class LocalPki:
    """Paths of one test PKI's files (PEM unless said)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    # PKCS#12 keystore (server key, its certificate and the CA), for Kafka.
    keystore: Path
    keystore_password: str


def make_test_pki(directory: Path, *, name: str = "cdc test CA") -> LocalPki:
    """Create a CA called ``name`` and a server certificate it signs, in ``directory``.

    Raises:
        ServiceError: ``openssl`` is missing or failed.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServiceError("openssl not found on PATH: apt-get install openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.pem", directory / "ca.key"
    csr = directory / "server.csr"
    server_cert, server_key = directory / "server.pem", directory / "server.key"
    extensions = directory / "server.ext"
    keystore = directory / "server.p12"
    password = "cdc-test-keystore"  # noqa: S105 - a throwaway test keystore's
    extensions.write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n",
        encoding="utf-8",
    )
    steps: list[list[str]] = [
        [
            openssl, "req", "-x509", *_KEY, "-keyout", str(ca_key), "-out", str(ca_cert),
            "-days", VALIDITY_DAYS, "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        [
            openssl, "req", "-new", *_KEY, "-keyout", str(server_key), "-out", str(csr),
            "-subj", "/CN=localhost",
        ],
        [
            openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(server_cert), "-days", VALIDITY_DAYS,
            "-extfile", str(extensions),
        ],
        [
            openssl, "pkcs12", "-export", "-in", str(server_cert), "-inkey", str(server_key),
            "-certfile", str(ca_cert), "-name", "server", "-out", str(keystore),
            "-passout", f"pass:{password}",
        ],
    ]  # fmt: skip
    for command in steps:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, check=False, cwd=directory
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise ServiceError(f"openssl {command[1]} failed ({result.returncode}):\n{output}")
    # PostgreSQL refuses a key file others can read.
    server_key.chmod(0o600)
    ca_key.chmod(0o600)
    return LocalPki(ca_cert, ca_key, server_cert, server_key, keystore, password)
