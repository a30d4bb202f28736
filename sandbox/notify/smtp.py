"""The SMTP sink: an aiosmtpd server on a socket bound beforehand, optionally with AUTH (PLAIN/LOGIN) and
STARTTLS or implicit TLS using a self-signed certificate made at start. Every message is parsed (subject,
from, to, cc, text and html parts, attachments) into the inbox.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import os
import socket
import ssl
import tempfile
import warnings
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from sandbox.notify.app import SinksState
from sandbox.notify.config import SinksConfig

SMTP_FAULT_TEXT = {
    421: "Service not available, closing transmission channel",
    450: "Requested mail action not taken: mailbox unavailable",
    451: "Requested action aborted: local error in processing",
    452: "Requested action not taken: insufficient system storage",
    550: "Requested action not taken: mailbox unavailable",
    552: "Requested mail action aborted: exceeded storage allocation",
    554: "Transaction failed",
}
HEADERS_OF_INTEREST = ("message-id", "date", "content-type", "reply-to")


def self_signed_cert(host: str) -> tuple[str, str]:
    """A fresh (certificate PEM, private key PEM) for localhost, 127.0.0.1 and `host` (EC P-256, one day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ops-agent sandbox SMTP")])
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert_pem, key_pem


def server_tls_context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files only
        cert_file, key_file = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_file, "w") as f:
            f.write(cert_pem)
        with open(key_file, "w", opener=lambda path, flags: os.open(path, flags, 0o600)) as f:
            f.write(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


def parse_message(raw: bytes) -> dict[str, Any]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)

    def body(kind: str) -> str | None:
        part = message.get_body(preferencelist=(kind,))
        return part.get_content() if part is not None else None

    def addresses(header: str) -> list[str]:
        return [address for _, address in getaddresses(message.get_all(header, [])) if address]

    return {
        "subject": message.get("subject", ""),
        "from": str(message.get("from", "")),
        "to": addresses("to"),
        "cc": addresses("cc"),
        "text": body("plain"),
        "html": body("html"),
        "attachments": [part.get_filename() or "" for part in message.iter_attachments()],
    }


class _Handler:
    def __init__(self, state: SinksState) -> None:
        self.state = state

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        state = self.state
        if state.latency_s > 0:
            await asyncio.sleep(state.latency_s)
        fault = state.inbox.take_fault("smtp")
        if fault is not None and not fault.after_delivery:
            state.inbox.attempt("smtp", "", fault.status, "fault")
            return f"{fault.status} {fault.body or SMTP_FAULT_TEXT.get(fault.status, 'Error')}"
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        transport = server.transport
        tls = session.ssl is not None or (transport is not None and transport.get_extra_info("ssl_object") is not None)
        payload = {
            **parse_message(raw),
            "envelope_from": envelope.mail_from,
            "envelope_to": list(envelope.rcpt_tos),
            "tls": tls,
            "authenticated_as": session.auth_data if session.authenticated else None,
            "raw": raw.decode("utf-8", errors="replace"),
        }
        headers = {name: str(message[name]) for name in HEADERS_OF_INTEREST if message[name] is not None}
        headers.update({k.lower(): str(v) for k, v in message.items() if k.lower().startswith("x-")})
        state.inbox.add(
            channel="smtp", path="", name=envelope.mail_from or "", recipients=list(envelope.rcpt_tos),
            payload=payload, headers=headers, verified=bool(session.authenticated), received_at=state.clock(),
        )
        if fault is not None:
            state.inbox.attempt("smtp", "", fault.status, "fault-after-delivery")
            return f"{fault.status} {fault.body or SMTP_FAULT_TEXT.get(fault.status, 'Error')}"
        state.inbox.attempt("smtp", "", 250, "ok")
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, config: SinksConfig, state: SinksState) -> None:
        self.config = config
        self.state = state
        self.port: int | None = None
        self.cert_pem: str | None = None
        self._server: asyncio.base_events.Server | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.config.smtp_username
            and auth_data.password.decode() == self.config.smtp_password
        )
        return AuthResult(success=ok, handled=False, auth_data=self.config.smtp_username if ok else None)

    async def start(self, sock: socket.socket) -> None:
        host = sock.getsockname()[0]
        context: ssl.SSLContext | None = None
        if self.config.smtp_tls != "none":
            self.cert_pem, key_pem = self_signed_cert(host)
            context = server_tls_context(self.cert_pem, key_pem)
        handler = _Handler(self.state)
        starttls = self.config.smtp_tls == "starttls"

        def protocol() -> SMTP:
            with warnings.catch_warnings():  # AUTH without TLS is what the plain sandbox mode is for
                warnings.simplefilter("ignore", UserWarning)
                return self._protocol(handler, context, starttls)

        self._server = await asyncio.get_running_loop().create_server(
            protocol, sock=sock, ssl=context if self.config.smtp_tls == "tls" else None
        )
        self.port = sock.getsockname()[1]

    def _protocol(self, handler: _Handler, context: ssl.SSLContext | None, starttls: bool) -> SMTP:
        return SMTP(
            handler,
            hostname="sandbox.smtp.local",
            ident="ops-agent sandbox SMTP",
            authenticator=self._authenticate,
            auth_required=self.config.smtp_auth_required,
            # implicit TLS is TLS already, though aiosmtpd only knows about STARTTLS
            auth_require_tls=starttls,
            tls_context=context if starttls else None,
            require_starttls=False,
            decode_data=False,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
