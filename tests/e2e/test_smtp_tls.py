"""STARTTLS on the SMTP listener (RFC 3207): a real smtplib client, self-signed
certificates made here, a reload that new connections see (by the peer certificate's
fingerprint), require_tls, and SIGHUP in a real `unsubd serve`."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from config import ConfigError
from handlers.model import Inbound
from worker.ingress.smtp import SmtpIngress, SmtpServer
from tests.conftest import REPO, make_settings
from tests.support.messages import plain

RCPT = "reply@mail.example.org"


def make_cert(cert: Path, key: Path, name: str) -> str:
    """Write a self-signed certificate for `name` and its key as PEM; returns the
    certificate's SHA-256 fingerprint (hex, of the DER form)."""
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .sign(private, hashes.SHA256()))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE          # self-signed: the test compares fingerprints instead
    return context


def tls_session(port: int, send: bool = True) -> tuple[str, list[str], dict | None]:
    """EHLO, STARTTLS, EHLO, and (with `send`) one message; returns the peer certificate's
    fingerprint, the extensions offered before TLS, and what sendmail refused."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        c.ehlo("client.example")
        offered = sorted(c.esmtp_features)
        c.starttls(context=client_context())
        fingerprint = hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest()
        refused = c.sendmail("a@example.se", [RCPT], plain(subject="over tls")) if send else None
    return fingerprint, offered, refused


class Stored:
    def __init__(self) -> None:
        self.items: list[Inbound] = []

    async def __call__(self, item: Inbound) -> bool:
        self.items.append(item)
        return True


@pytest.fixture
def cert_paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "cert.pem", tmp_path / "key.pem"


async def start(cert: Path, key: Path, **env: str) -> SmtpServer:
    settings = make_settings(UNSUBD_SMTP__TLS_CERT=str(cert), UNSUBD_SMTP__TLS_KEY=str(key), **env)
    server = SmtpServer(settings, SmtpIngress(settings, Stored(), lambda: dt.datetime.now(dt.timezone.utc)))
    await server.start()
    return server


@pytest.fixture
async def tls_server(cert_paths: tuple[Path, Path]) -> AsyncIterator[tuple[SmtpServer, int, str]]:
    first = make_cert(*cert_paths, "mx-old.example.org")
    server = await start(*cert_paths)
    try:
        yield server, server._server.sockets[0].getsockname()[1], first   # type: ignore[union-attr]
    finally:
        await server.stop(grace=1)


async def test_starttls_is_offered_and_a_message_arrives_over_it(tls_server):
    server, port, first = tls_server
    fingerprint, offered, refused = await asyncio.to_thread(tls_session, port)
    assert "starttls" in offered and fingerprint == first and refused == {}
    (item,) = server.ingress._enqueue.items                 # type: ignore[attr-defined]
    assert b"over tls" in item.raw
    for _ in range(500):                                     # bounded poll: the session ends
        if server.sessions == 0:
            break
        await asyncio.sleep(0.02)
    assert server.sessions == 0 and server.gate.held == {}   # counted once across STARTTLS, released once


async def test_a_reload_gives_new_connections_the_new_certificate(tls_server, cert_paths):
    server, port, first = tls_server
    # a session that did STARTTLS before the reload keeps working with its certificate
    early = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", port, timeout=20)
    await asyncio.to_thread(early.ehlo, "early.example")
    await asyncio.to_thread(early.starttls, context=client_context())
    early_fingerprint = hashlib.sha256(early.sock.getpeercert(binary_form=True)).hexdigest()

    second = make_cert(*cert_paths, "mx-new.example.org")
    assert second != first
    assert server.reload_tls() is True
    fingerprint, _, refused = await asyncio.to_thread(tls_session, port)
    assert fingerprint == second and refused == {}
    assert early_fingerprint == first
    assert await asyncio.to_thread(early.sendmail, "a@example.se", [RCPT], plain()) == {}
    await asyncio.to_thread(early.quit)
    assert server.counters()["smtp_tls_reloads_total"] == 1


async def test_a_reload_of_a_broken_pair_keeps_the_old_certificate(tls_server, cert_paths):
    server, port, first = tls_server
    cert, key = cert_paths
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    assert server.reload_tls() is False
    make_cert(cert, cert_paths[1].with_name("other-key.pem"), "mx-mismatch.example.org")   # key does not match
    assert server.reload_tls() is False
    fingerprint, _, refused = await asyncio.to_thread(tls_session, port)
    assert fingerprint == first and refused == {}
    assert server.counters()["smtp_tls_reload_failures_total"] == 2


async def test_require_tls_refuses_mail_before_starttls_with_530_5_7_0(cert_paths):
    make_cert(*cert_paths, "mx.example.org")
    server = await start(*cert_paths, UNSUBD_SMTP__REQUIRE_TLS="true")
    port = server._server.sockets[0].getsockname()[1]         # type: ignore[union-attr]
    try:
        def plain_then_tls() -> tuple[tuple[int, bytes], dict]:
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
                c.ehlo("client.example")
                before = c.mail("a@example.se")
                c.starttls(context=client_context())
                return before, c.sendmail("a@example.se", [RCPT], plain())

        (code, text), refused = await asyncio.to_thread(plain_then_tls)
        assert code == 530 and text.startswith(b"5.7.0")
        assert refused == {} and len(server.ingress._enqueue.items) == 1   # type: ignore[attr-defined]
    finally:
        await server.stop(grace=1)


def test_tls_settings_are_checked_when_loaded():
    with pytest.raises(ConfigError, match="tls_key"):
        make_settings(UNSUBD_SMTP__TLS_CERT="/x/cert.pem")
    with pytest.raises(ConfigError, match="require_tls"):
        make_settings(UNSUBD_SMTP__REQUIRE_TLS="true")


async def test_a_certificate_that_does_not_load_stops_the_start(tmp_path: Path):
    with pytest.raises(ConfigError, match="smtp.tls_cert"):
        await start(tmp_path / "missing.pem", tmp_path / "missing-key.pem")


async def test_sighup_reloads_the_certificate_of_a_running_serve(tmp_path: Path, cert_paths):
    """The signal wiring itself: `unsubd serve --role smtp` as a subprocess, SIGHUP after
    the files were replaced, and new connections show the new certificate."""
    first = make_cert(*cert_paths, "mx-old.example.org")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNSUBD_")}
    env.update(UNSUBD_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'unsubd.db'}", UNSUBD_SMTP_PORT="0",
               UNSUBD_HTTP_PORT="0", UNSUBD_SMTP__TLS_CERT=str(cert_paths[0]),
               UNSUBD_SMTP__TLS_KEY=str(cert_paths[1]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli.main", "serve", "--role", "smtp", "--config",
        str(REPO / "config" / "example.toml"), cwd=str(tmp_path), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        port = None
        output = b""
        while port is None:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)   # type: ignore[union-attr]
            assert line, f"serve ended before listening: {output[-2000:]!r}"
            output += line
            if m := re.search(rb"smtp \('127\.0\.0\.1', (\d+)\)", line):
                port = int(m.group(1))
        fingerprint, _, _ = await asyncio.to_thread(tls_session, port, False)
        assert fingerprint == first
        second = make_cert(*cert_paths, "mx-new.example.org")
        proc.send_signal(signal.SIGHUP)
        for _ in range(200):                                 # bounded poll, never a fixed sleep
            fingerprint, _, _ = await asyncio.to_thread(tls_session, port, False)
            if fingerprint == second:
                break
            await asyncio.sleep(0.05)
        assert fingerprint == second
        assert proc.returncode is None                       # SIGHUP no longer ends the process
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0
