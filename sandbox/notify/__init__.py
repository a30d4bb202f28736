"""Local notification sinks: they receive notifications exactly as the real services would
(../shared/contracts/NOTIFY.md) and keep one inbox.

    async with NotifySinks(SinksConfig(slack_rate_per_s=None)) as sinks:
        sinks.slack_url        # http://127.0.0.1:PORT/services/T0SANDBOX/B0SANDBOX/<secret>
        sinks.mailtrap_url     # http://127.0.0.1:PORT (POST /api/send), with sinks.mailtrap_token
        sinks.webhook_url      # http://127.0.0.1:PORT/hooks/default, signed with sinks.webhook_secret
        sinks.smtp_host, sinks.smtp_port, sinks.smtp_username, sinks.smtp_password
        ...
        [entry] = await sinks.wait_for(1, channel="slack")
        sinks.fail_next("slack", 429, retry_after=2)

One uvicorn app serves the Slack, Mailtrap and webhook routes plus `GET /inbox` / `DELETE /inbox` and
`GET /attempts`; an aiosmtpd server takes mail on a second port. Both run on one event loop in a background
thread, so a test that blocks its own loop does not stall them.
`python -m sandbox notify` runs them in the foreground; `python -m sandbox inbox --url …` lists the inbox.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Self

import uvicorn

from sandbox.notify.app import SinksState, create_app
from sandbox.notify.config import SinksConfig, SlackState, SlackWebhookConfig
from sandbox.notify.inbox import CHANNELS, Attempt, Channel, Fault, Inbox, InboxEntry
from sandbox.notify.signing import SignatureError, sign, verify
from sandbox.notify.smtp import SmtpSink
from sandbox.threaded_server import STARTUP_TIMEOUT_S, Lifecycle, listen

__all__ = [
    "Attempt",
    "Channel",
    "Inbox",
    "InboxEntry",
    "NotifySinks",
    "SignatureError",
    "SinksConfig",
    "SinksState",
    "SlackWebhookConfig",
    "create_app",
    "sign",
    "verify",
]


class NotifySinks(Lifecycle):
    """Slack, Mailtrap, webhook and SMTP sinks on 127.0.0.1 (sync or async context manager)."""

    def __init__(
        self, config: SinksConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, smtp_port: int = 0,
        clock: Callable[[], float] = time.time, log_level: str = "warning",
    ) -> None:
        self.config = config or SinksConfig()
        self.state = SinksState(self.config, Inbox(), clock=clock)
        self.app = create_app(self.state)
        self.smtp = SmtpSink(self.config, self.state)
        self._host = host
        self._port = port
        self._smtp_port = smtp_port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http_socket: socket.socket | None = None
        self._smtp_socket: socket.socket | None = None
        self._smtp_started = threading.Event()
        self._failure: BaseException | None = None
        self._base_url: str | None = None

    # -- where to send -------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """http://HOST:PORT of the HTTP sinks (kept after stop)."""
        if self._base_url is None:
            raise RuntimeError("the sinks have not been started")
        return self._base_url

    @property
    def slack_url(self) -> str:
        """The full URL of the first configured Slack webhook."""
        return self.slack_webhook_url(self.config.slack_webhooks[0].name)

    def slack_webhook_url(self, name: str) -> str:
        return self.base_url + self.state.slack_webhook(name).path

    @property
    def mailtrap_url(self) -> str:
        """Base URL of the Mailtrap send API (POST {mailtrap_url}/api/send)."""
        return self.base_url

    @property
    def mailtrap_token(self) -> str:
        return self.config.mailtrap_tokens[0]

    @property
    def webhook_url(self) -> str:
        """The full URL of the hook named `default`."""
        return self.hook_url("default")

    def hook_url(self, name: str) -> str:
        return f"{self.base_url}/hooks/{name}"

    def paging_config(self, **timing: float) -> dict[str, Any]:
        """ops-agent's `notify` config section that pages every sink here (Slack, Mailtrap, a webhook named
        `pager`); `timing` overrides the retry and polling keys (backoff_s, max_backoff_s, poll_interval_s)."""
        return {
            "mailtrap_token": self.mailtrap_token, "mailtrap_api_url": self.mailtrap_url,
            "slack_webhook_url": self.slack_url, "email_recipients": ["oncall@example.com"],
            "webhooks": {"pager": {"url": self.hook_url("pager"), "secret": self.webhook_secret}},
            "webhook_allow_hosts": ["127.0.0.1"], "rate_limit_s": {}, **timing,
        }

    @property
    def webhook_secret(self) -> str:
        """The whsec_… secret of the hook named `default` (and of every hook without its own)."""
        return self.config.webhook_secrets.get("default", self.config.webhook_secret)

    @property
    def smtp_host(self) -> str:
        return self._host

    @property
    def smtp_port(self) -> int:
        if self._smtp_socket is None and self.smtp.port is None:
            raise RuntimeError("the sinks have not been started")
        return self.smtp.port or 0

    @property
    def smtp_username(self) -> str:
        return self.config.smtp_username

    @property
    def smtp_password(self) -> str:
        return self.config.smtp_password

    @property
    def smtp_cert_pem(self) -> str | None:
        """The self-signed certificate (PEM) of the SMTP server when smtp_tls is starttls or tls."""
        return self.smtp.cert_pem

    def smtp_client_tls_context(self) -> ssl.SSLContext:
        """A client context that trusts the server's self-signed certificate (and checks the host name)."""
        if self.smtp.cert_pem is None:
            raise RuntimeError("the SMTP sink runs without TLS (SinksConfig.smtp_tls='none')")
        return ssl.create_default_context(cadata=self.smtp.cert_pem)

    # -- what arrived --------------------------------------------------------------------------------------

    @property
    def inbox(self) -> list[InboxEntry]:
        """Every accepted message, all channels, in arrival order."""
        return self.state.inbox.messages()

    def messages(self, channel: Channel | None = None, *, include_duplicates: bool = True) -> list[InboxEntry]:
        return self.state.inbox.messages(channel, include_duplicates=include_duplicates)

    def attempts(self, channel: Channel | None = None) -> list[Attempt]:
        """Every request answered, accepted or refused, with its status: to check retries and backoff."""
        return self.state.inbox.attempts(channel)

    async def wait_for(
        self, count: int, channel: Channel | None = None, *, timeout_s: float = 5.0, include_duplicates: bool = True
    ) -> list[InboxEntry]:
        """Wait until at least `count` messages (of `channel`) arrived and return them; TimeoutError if not."""
        return await self.state.inbox.wait_for(
            count, channel, timeout_s=timeout_s, include_duplicates=include_duplicates
        )

    def clear(self, *, reset_dedup: bool = False) -> None:
        """Empty the inbox and attempts log; `reset_dedup` also forgets the webhook-ids seen."""
        self.state.inbox.clear(reset_dedup=reset_dedup)

    # -- faults --------------------------------------------------------------------------------------------

    def fail_next(
        self, channel: Channel, status: int, body: str | None = None, *, retry_after: float | None = None,
        count: int = 1, after_delivery: bool = False,
    ) -> None:
        """Answer the next `count` requests of `channel` with `status` (an SMTP reply code for smtp).

        `body` defaults to the channel's own error shape; `retry_after` adds a Retry-After header (seconds).
        `after_delivery=True` keeps the message in the inbox first, then answers the error: a lost answer,
        after which a retry delivers a second copy.
        """
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
        self.state.inbox.queue_fault(channel, Fault(status, body, retry_after, after_delivery), count)

    @property
    def latency_s(self) -> float:
        return self.state.latency_s

    @latency_s.setter
    def latency_s(self, seconds: float) -> None:
        """Added before every answer on every channel."""
        self.state.latency_s = seconds

    def set_slack_state(self, name: str, state: SlackState) -> None:
        """Archive, revoke, disable or reactivate a Slack webhook while running."""
        self.state.slack_states[name] = state

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> Self:
        self._http_socket = listen(self._host, self._port)
        self._smtp_socket = listen(self._host, self._smtp_port)
        self._base_url = f"http://{self._host}:{self._http_socket.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level=self._log_level, lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="notify-sinks", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (self._server.started and self._smtp_started.is_set()):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                failure = self._failure
                self.stop()
                raise RuntimeError("the notification sinks did not start") from failure
            time.sleep(0.005)
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._failure = exc

    async def _serve(self) -> None:
        assert self._server is not None and self._http_socket is not None and self._smtp_socket is not None
        self._loop = asyncio.get_running_loop()
        await self.smtp.start(self._smtp_socket)
        self._smtp_started.set()
        try:
            await self._server.serve(sockets=[self._http_socket])
        finally:
            await self.smtp.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in (self._http_socket, self._smtp_socket):
            if sock is not None:
                sock.close()
        self._server = self._thread = self._http_socket = self._smtp_socket = None
        self._smtp_started.clear()
