"""Pinned to the checked address, TLS still verifies the certificate for the URL's host name."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from billing.delivery import webhook_post
from tests.billing.conftest import SECRET

HOST = "hooks.example.test"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, issuer: str, key: Any, signer: Any, *, ca: bool) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), False)
    else:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_server(tmp_path: Path, settings: Any) -> Iterator[Callable[[str], tuple[int, list[str]]]]:
    """Start an https receiver whose certificate names `cert_host`, signed by a test CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Test CA", "Test CA", ca_key, ca_key, ca=True)
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    settings.GATEWAY_WEBHOOK_CA_BUNDLE = str(tmp_path / "ca.pem")
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.0/8"]
    servers: list[ThreadingHTTPServer] = []

    def start(cert_host: str) -> tuple[int, list[str]]:
        key = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / "server.pem").write_bytes(
            _pem(_certificate(cert_host, "Test CA", key, ca_key, ca=False))
        )
        (tmp_path / "server.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("content-length") or 0))
                seen.append(self.headers["host"])
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return httpd.server_address[1], seen

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _post(port: int) -> Any:
    return webhook_post(
        url=f"https://{HOST}:{port}/hook",
        msg_id="msg_1",
        body=b"{}",
        secrets=[SECRET],
        resolve=lambda host: ["127.0.0.1"] if host == HOST else [],
    )


def test_a_pinned_https_request_verifies_the_certificate_for_the_host_name(
    tls_server: Callable[[str], tuple[int, list[str]]],
) -> None:
    port, seen = tls_server(HOST)

    outcome = _post(port)

    assert outcome.status_code == 200, outcome.error
    assert seen == [f"{HOST}:{port}"]


def test_a_certificate_for_another_name_fails_even_at_the_checked_address(
    tls_server: Callable[[str], tuple[int, list[str]]],
) -> None:
    port, seen = tls_server("other.example.test")

    outcome = _post(port)

    assert outcome.status_code is None and "CERTIFICATE_VERIFY_FAILED" in outcome.error
    assert seen == []
