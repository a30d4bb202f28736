"""Settings: an optional YAML file overlaid by the environment, loaded once at the entry point.

Precedence, lowest first: built-in defaults → the YAML file → environment variables. The environment
variable names are the seed's public contract (`VERCEL_TOKEN`, `Mailtrap_API_TOKEN`, ...); see
`ENVIRONMENT` below and `config.example.yaml`, which documents every key.

A string value in the file may be `${NAME}` to read the environment variable NAME, so that a file can be
committed without its secrets. Every secret is a `SecretStr`: its repr is masked, and `secret_values()`
feeds the redactor that scrubs logs, audit records and error messages.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from ops_agent.errors import ConfigError

__all__ = ["ENVIRONMENT", "LLMPrice", "PERMISSION_LEVELS", "ServiceCheck", "Settings", "load_settings"]

PERMISSION_LEVELS = ("sandbox_only", "staging_access", "prod_low_risk", "prod_full_access")
PermissionLevel = Literal["sandbox_only", "staging_access", "prod_low_risk", "prod_full_access"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSettings(_Section):
    path: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share"))
        / "ops-agent"
        / "ops-agent.db",
        description="SQLite database file for governance, audit and domain state.",
    )

    @field_validator("path")
    @classmethod
    def _expand_home(cls, path: Path) -> Path:
        return path.expanduser()


class BudgetSettings(_Section):
    hourly_tokens: int = Field(200_000, ge=0, description="LLM tokens an agent may spend per rolling hour.")
    daily_tokens: int = Field(2_000_000, ge=0, description="LLM tokens an agent may spend per rolling day.")
    hourly_usd: float = Field(2.0, ge=0, description="USD an agent may spend per rolling hour.")
    daily_usd: float = Field(20.0, ge=0, description="USD an agent may spend per rolling day.")


class RateLimitSettings(_Section):
    """Per-agent token buckets, in process memory: every call takes one from `calls_per_minute`, and a
    call that is not a read or a record also one from `changes_per_minute`. 0 turns a limit off."""

    calls_per_minute: int = Field(600, ge=0, description="Tool calls per agent per minute, sustained; 0: off.")
    burst: int = Field(120, ge=1, description="Tool calls an idle agent may make at once.")
    changes_per_minute: int = Field(
        60, ge=0, description="Calls of kind write, destructive, outward or delegate per agent per minute; 0: off."
    )
    change_burst: int = Field(20, ge=1, description="Changing calls an idle agent may make at once.")


class GovernanceSettings(_Section):
    agent_name: str = Field("ops_agent", min_length=1, description="Identity of this agent (stdio, CLI, API).")
    probation_tasks: int = Field(
        5, ge=0, description="Successful consequential tasks a new agent needs before score-based levels apply."
    )
    fail_open: bool = Field(
        False, description="If governance cannot start, run everything unconstrained (the seed's old behaviour)."
    )
    budget: BudgetSettings = BudgetSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    reputation_backend: Literal["auto", "sqlite", "postgres", "supabase"] = Field(
        "auto",
        description="Where agents and reputation live; auto: Supabase when supabase.url and its key are set, "
        "else PostgreSQL when database_url is set, else the embedded store.",
    )
    database_url: SecretStr | None = Field(
        None, description="postgresql:// URL for agents and reputation (DATABASE_URL)."
    )
    policy: dict[str, PermissionLevel] = Field(
        default_factory=dict, description="Overrides of the policy table: action -> minimum permission level."
    )


class LLMPrice(_Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write_5m: float = Field(0.0, ge=0)
    cache_write_1h: float = Field(0.0, ge=0)
    cache_read: float = Field(0.0, ge=0)


# Confirmed list prices (see ../shared/contracts/ANTHROPIC.md §5); an unlisted model is refused, not free.
DEFAULT_PRICES = {
    "claude-opus-5-5": LLMPrice(input=4, output=20, cache_write_5m=5, cache_write_1h=8, cache_read=0.20),
    "claude-sonnet-5-5": LLMPrice(input=2, output=10, cache_write_5m=2.5, cache_write_1h=4, cache_read=0.20),
    "claude-opus-5": LLMPrice(input=5, output=25, cache_write_5m=6.25, cache_write_1h=10, cache_read=0.50),
    "claude-sonnet-5": LLMPrice(input=2, output=10, cache_write_5m=2.5, cache_write_1h=4, cache_read=0.20),
    "claude-haiku-4-5": LLMPrice(input=1, output=5, cache_write_5m=1.25, cache_write_1h=2, cache_read=0.10),
}


class LLMSettings(_Section):
    api_key: SecretStr | None = Field(None, description="Anthropic API key; without it the offline planner runs.")
    base_url: str | None = Field(None, description="Anthropic API base URL (a proxy or gateway).")
    model: str = Field("claude-sonnet-5-5", description="Model for the Claude planner.")
    max_tokens: int = Field(2048, ge=64, le=64_000, description="max_tokens for each planner request.")
    max_steps: int = Field(8, ge=1, le=50, description="Cap on planner requests per task.")
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one planner request.")
    prices: dict[str, LLMPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))


class MCPSettings(_Section):
    host: str = Field("127.0.0.1", description="HTTP bind address. Anything but loopback requires tokens.")
    port: int = Field(8000, ge=0, le=65535)
    path: str = Field("/mcp", pattern=r"^/[A-Za-z0-9/_-]*$")
    public_url: str | None = Field(
        None, description="URL clients use to reach the server, advertised in auth challenges (behind a proxy)."
    )
    tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="Agent name -> bearer token for HTTP callers; each is its own agent."
    )
    allowed_hosts: list[str] = Field(default_factory=list, description="Extra Host headers to accept (DNS rebinding).")
    allowed_origins: list[str] = Field(default_factory=list, description="Extra Origin headers to accept.")


class ServiceCheck(_Section):
    """One service to watch: an HTTP(S) URL or a TCP host:port."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    url: str | None = Field(None, description="http:// or https:// URL to probe.")
    tcp: str | None = Field(None, description="host:port that must accept a TCP connection.")
    expected_status: int = Field(200, ge=100, le=599, description="HTTP status that means up.")
    body_contains: str | None = Field(None, max_length=1000, description="Text the HTTP body must contain.")
    timeout_s: float = Field(5.0, gt=0, le=120, description="A probe taking longer is down.")
    interval_s: float = Field(30.0, ge=1, le=86400, description="How often the service is probed in the background.")
    tls_ca_file: Path | None = Field(None, description="CA bundle to trust for this HTTPS service (private CAs).")
    project: str | None = Field(
        None, description="The Vercel project serving it: diagnosis may blame and roll back its deployments."
    )
    commands: dict[Literal["restart", "free_disk"], str] = Field(
        default_factory=dict, description="Remediation kind -> a name from alerts.restart_commands, for diagnosis."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^\s/]+", url):
            raise ValueError("must be an http:// or https:// URL")
        return url

    @field_validator("tcp")
    @classmethod
    def _host_port(cls, target: str | None) -> str | None:
        if target is not None and not re.match(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$", target):
            raise ValueError("must be host:port, e.g. db.internal:5432 or [::1]:6379")
        return target

    @model_validator(mode="after")
    def _one_target(self) -> ServiceCheck:
        if (self.url is None) == (self.tcp is None):
            raise ValueError("give exactly one of url and tcp")
        return self


class ScrapeTarget(_Section):
    """A Prometheus text-format endpoint whose samples land in the series store with `job=<name>`."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="The job label.")
    url: str = Field(pattern=r"^https?://[^\s/]+", description="http:// or https:// URL of the /metrics endpoint.")
    interval_s: float = Field(15.0, ge=0.2, le=3600, description="How often it is read.")
    timeout_s: float = Field(5.0, gt=0, le=120, description="A read taking longer counts as a failed scrape.")


class MonitoringSettings(_Section):
    sample_interval_s: float = Field(5.0, ge=0.5, le=3600, description="How often system metrics are sampled.")
    top_processes: int = Field(5, ge=0, le=50, description="Processes listed by CPU and by memory.")
    prometheus_url: str | None = Field(None, description="A Prometheus server for PromQL queries (no /api/v1).")
    prometheus_token: SecretStr | None = Field(None, description="Bearer token for that Prometheus, if it needs one.")
    prometheus_timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout of one PromQL query.")
    scrape: list[ScrapeTarget] = Field(
        default_factory=list, description="Prometheus /metrics endpoints read into the series store."
    )


class VercelSettings(_Section):
    token: SecretStr | None = Field(None, description="Vercel access token (VERCEL_TOKEN).")
    team_id: str | None = Field(None, description="Team to act in (VERCEL_TEAM_ID); none = the personal account.")
    api_url: str = Field("https://api.vercel.com", description="API base URL; the sandbox emulator's for local use.")
    projects: list[str] = Field(
        default_factory=list, description="This agent's projects; once set, the deployment tools refuse others."
    )
    default_project: str | None = Field(None, description="Project a task means when it names none.")
    sandbox_projects: list[str] = Field(
        default_factory=list, description="Projects a sandbox_only agent may deploy to any environment."
    )
    staging_environment: str = Field("staging", description="Slug of the custom environment used as staging.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one API request.")
    max_attempts: int = Field(6, ge=1, le=10, description="Attempts per request on 429, 5xx and lost connections.")
    list_version: Literal[6, 7] = Field(6, description="Version of the list-deployments endpoint.")
    poll_interval_s: float = Field(2.0, gt=0, le=60, description="How often a build is polled while waiting.")
    deploy_timeout_s: float = Field(900.0, gt=0, description="How long a deploy waits for a final state.")


class SentrySettings(_Section):
    """Sentry as an error source (docs/SENTRY.md): pulled issues, and issue-alert webhooks on /ingest/sentry."""

    api_url: str = Field("https://sentry.io", description="Sentry's base URL (no /api/0): a region or self-hosted host.")
    auth_token: SecretStr | None = Field(None, description="Auth token with event:read (SENTRY_AUTH_TOKEN).")
    organization: str | None = Field(
        None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$", description="Organization slug (SENTRY_ORG)."
    )
    projects: list[str] = Field(
        default_factory=list, description="Project slugs pulled when a call names none; records' service is the slug."
    )
    query: str = Field("is:unresolved", max_length=500, description="Sentry search sent with every pull.")
    webhook_secret: SecretStr | None = Field(
        None,
        description="The integration's client secret (SENTRY_CLIENT_SECRET): /ingest/sentry checks "
        "Sentry-Hook-Signature with it.",
    )
    timeout_s: float = Field(30.0, gt=0, le=300, description="Timeout of one API request.")
    max_attempts: int = Field(5, ge=1, le=10, description="Attempts per request on 429, 5xx and lost connections.")
    max_retry_after_s: float = Field(
        120.0, gt=0, le=3600, description="Longest wait honoured on a 429 (Retry-After or X-Sentry-Rate-Limit-Reset)."
    )
    max_pages: int = Field(10, ge=1, le=100, description="Pages of 100 issues read per pull, at most.")
    max_events: int = Field(25, ge=0, le=500, description="Issues per pull whose latest event is also fetched.")
    poll_interval_s: float = Field(0.0, ge=0, le=86400, description="Pull every this many seconds; 0 = no background polling.")

    @field_validator("projects")
    @classmethod
    def _slugs(cls, projects: list[str]) -> list[str]:
        for slug in projects:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", slug):
                raise ValueError(f"project {slug!r}: a Sentry project slug (letters, digits, '_', '.', '-')")
        return projects


class LogFileSource(_Section):
    path: str = Field(min_length=1, description="A file or glob (`**` allowed, `~` expanded) to follow.")
    service: str = Field("", description="Service name for lines that carry none; default: the file's stem.")
    start_at_end: bool = Field(False, description="Skip what the files hold at start-up; read only new lines.")


class LogSettings(_Section):
    path: Path | None = Field(
        None, description="SQLite file for the log index; default: logs.db beside storage.path."
    )
    database_url: SecretStr | None = Field(
        None, description="postgresql:// URL: keep the log index in PostgreSQL instead of SQLite."
    )
    retention_days: float = Field(7.0, gt=0, description="Records older than this are deleted.")
    files: list[LogFileSource] = Field(default_factory=list, description="Files to collect from continuously.")
    poll_interval_s: float = Field(0.5, gt=0, le=60, description="How often followed files are checked.")
    batch_size: int = Field(2000, ge=1, le=100_000, description="Lines parsed and written together when collecting from files and streams.")
    ingest_token: SecretStr | None = Field(
        None, description="Bearer token the HTTP ingest endpoint requires from non-loopback senders."
    )
    drain_secret: SecretStr | None = Field(
        None, description="Vercel log-drain secret; deliveries must carry a valid x-vercel-signature."
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Standard Webhooks secret (whsec_<base64>): /ingest/logs accepts requests signed with it "
        "(webhook-id, webhook-timestamp, webhook-signature), each webhook-id once.",
    )
    webhook_tolerance_s: float = Field(
        300.0, gt=0, le=3600, description="How far a signed request's webhook-timestamp may be from now, either way."
    )

    _webhook_secret = field_validator("webhook_secret")(classmethod(lambda cls, v: _signing_secret(v)))
    metrics_window_s: float = Field(
        10.0, ge=0.5, le=3600, description="Window of the log-derived metrics (log_error_ratio, http_*): written as each closes."
    )
    signatures_file: Path | None = Field(
        None, description="Extra known-failure signatures (YAML), added to the built-in ones."
    )


def _signing_secret(secret: SecretStr | None) -> SecretStr | None:
    """A Standard Webhooks secret is whsec_<base64>: refused at load time rather than at every send."""
    if secret is not None:
        encoded = secret.get_secret_value().removeprefix("whsec_")
        try:
            base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be whsec_ followed by base64 (the secret itself is not shown)") from None
    return secret


class NotifyWebhook(_Section):
    """One named outgoing webhook, signed per Standard Webhooks."""

    url: SecretStr = Field(description="Endpoint URL (a secret: webhook paths often carry a token).")
    secret: SecretStr | None = Field(None, description="Signing secret, whsec_<base64>; none = unsigned.")

    _secret = field_validator("secret")(classmethod(lambda cls, v: _signing_secret(v)))


class AlertSettings(_Section):
    interval_s: float = Field(5.0, ge=0.2, le=3600, description="How often every alert rule is evaluated.")
    routing: dict[Literal["critical", "high", "medium", "low"], list[str]] = Field(
        default_factory=lambda: {
            "critical": ["slack", "email", "webhook"], "high": ["slack", "email"], "medium": ["slack"], "low": [],
        },
        description="Channels each priority pages (those configured); a rule's own channels are added.",
    )
    repeat_interval_s: dict[Literal["critical", "high", "medium", "low"], float] = Field(
        default_factory=lambda: {"critical": 1800, "high": 3600, "medium": 14400, "low": 86400},
        description="How often an unacknowledged firing alert is sent again, per priority (a rule may override).",
    )
    escalate_after_s: float = Field(900.0, gt=0, description="A critical alert unacknowledged this long escalates.")
    escalation_channels: list[str] = Field(
        default_factory=lambda: ["email", "webhook", "slack"], description="Where an escalation is sent."
    )
    restart_commands: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Commands a remediation may run, by name (argv lists; no shell). Nothing else can run.",
    )
    command_timeout_s: float = Field(60.0, gt=0, le=3600, description="How long a restart command may run.")

    @field_validator("restart_commands")
    @classmethod
    def _commands(cls, commands: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, argv in commands.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"restart command name {name!r}: letters, digits, '_', '.', '-' only")
            if not argv or not all(isinstance(part, str) and part for part in argv):
                raise ValueError(f"restart command {name!r}: give the command as a non-empty list of arguments")
        return commands


class IncidentSettings(_Section):
    """How `diagnose_incident` and `remediate_incident` read the evidence (docs/OPERATIONS_OUTCOMES.md)."""

    deploy_suspect_s: float = Field(
        900.0, ge=0, le=86400,
        description="A production deployment that went live this long or less before the trouble began is blamed.",
    )
    lookback_s: float = Field(900.0, gt=0, le=86400, description="How far back memory and error lines are read.")
    verify_timeout_s: float = Field(
        60.0, ge=5, le=3600, description="How long a remediation waits for the service to answer healthy again."
    )
    verify_checks: int = Field(2, ge=1, le=20, description="Healthy probes in a row, with no 5xx between, that verify a fix.")
    fix_requests_to: str | None = Field(
        None, description="The peer tool request_code_fix sends to (its registry name, e.g. dev_agent__open_fix_request)."
    )
    summaries_to: str | None = Field(
        None, description="The peer tool share_incident_summary sends to (e.g. faq_agent__add_insight)."
    )


class NotifySettings(_Section):
    mailtrap_token: SecretStr | None = Field(None, description="Mailtrap API token (Mailtrap_API_TOKEN).")
    mailtrap_api_url: str = Field(
        "https://send.api.mailtrap.io", description="Mailtrap send API base URL (POST /api/send); a sink's locally."
    )
    from_email: str = Field("ops-agent@localhost", description="Sender address of e-mail notifications.")
    from_name: str = Field("Ops Agent", description="Sender display name.")
    email_recipients: list[str] = Field(default_factory=list, description="Recipients when a call names none.")
    smtp_host: str | None = Field(None, description="SMTP server; none = no SMTP channel.")
    smtp_port: int = Field(587, ge=1, le=65535, description="587 with STARTTLS, 465 with tls, 25 plain.")
    smtp_username: str | None = Field(None, description="SMTP login, if the server wants one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_starttls: bool = Field(True, description="Require STARTTLS on a plain connection.")
    smtp_tls: bool = Field(False, description="TLS from the first byte (implicit TLS, port 465).")
    slack_webhook_url: SecretStr | None = Field(None, description="Slack incoming webhook (SLACK_WEBHOOK_URL).")
    webhooks: dict[str, NotifyWebhook] = Field(
        default_factory=dict, description="Named outgoing webhooks: name -> {url, secret}; channel webhook:<name>."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Signing secret (whsec_...) for webhooks sent to an ad-hoc URL."
    )
    _webhook_secret = field_validator("webhook_secret")(classmethod(lambda cls, v: _signing_secret(v)))
    webhook_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts, addresses or networks a webhook may reach over http or at a private address.",
    )
    rate_limit_s: dict[str, float] = Field(
        default_factory=lambda: {"slack": 1.0},
        description="Channel -> minimum seconds between two messages on it (Slack allows about 1/s).",
    )
    max_attempts: int = Field(
        16, ge=1, le=50, description="Attempts per delivery before it is marked failed (16: about 2 h of retries)."
    )
    backoff_s: float = Field(1.0, gt=0, description="First retry delay; doubles each attempt, with jitter.")
    max_backoff_s: float = Field(900.0, gt=0, description="Cap of the retry delay.")
    max_retry_after_s: float = Field(3600.0, gt=0, description="Cap on a server's Retry-After.")
    timeout_s: float = Field(15.0, gt=0, le=300, description="Timeout of one delivery request.")
    fallback_order: list[str] = Field(
        default_factory=list,
        description="Channels in order of preference; a failed channel falls back to the next one configured.",
    )
    fallback_after_failures: int = Field(
        3, ge=1, description="Consecutive failures of a channel after which its deliveries fall back."
    )
    poll_interval_s: float = Field(1.0, gt=0, le=60, description="Longest the delivery worker sleeps when idle.")
    in_doubt: Literal["resend", "drop"] = Field(
        "resend",
        description="Slack/e-mail deliveries interrupted mid-send by a stop: resend (never lost) or drop (never twice).",
    )


class RedisSettings(_Section):
    url: SecretStr | None = Field(None, description="redis:// URL (may hold a password).")
    prefix: str = Field(
        "ops:", pattern=r"^[A-Za-z0-9_.:-]{0,64}$",
        description="Put before every key ops-agent writes (queue and budgets), so deployments can share a Redis.",
    )


class QueueSettings(_Section):
    """The Redis task queue and `ops-agent worker` (REDIS_URL selects the server)."""

    group: str = Field("workers", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Consumer group the workers share.")
    concurrency: int = Field(1, ge=1, le=256, description="Tasks one worker runs at the same time.")
    max_deliveries: int = Field(5, ge=1, le=100, description="Deliveries after which a failing task is dead-lettered.")
    claim_idle_s: float = Field(
        30.0, ge=1, le=86400, description="A task unacknowledged and silent this long belongs to a dead worker."
    )
    retry_delay_s: float = Field(5.0, ge=0, le=3600, description="How long a task that hit an outage waits to retry.")
    stop_timeout_s: float = Field(30.0, ge=0, le=3600, description="How long tasks in flight get after SIGTERM.")
    result_ttl_s: int = Field(7 * 86400, ge=60, description="How long a task's result is kept.")


class SupabaseSettings(_Section):
    url: str | None = None
    service_role_key: SecretStr | None = None


class PeerSettings(_Section):
    """Another agent's MCP server whose tools ops-agent offers, governed (docs/MCP.md, "Peers").

    Give `command` (stdio: ops-agent starts the peer) or `url` (streamable HTTP, with `token`)."""

    command: list[str] | None = Field(
        None, min_length=1, description="stdio: the argv that starts the peer's MCP server (no shell)."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="stdio: environment for the peer, added to PATH, HOME and the like (nothing else is inherited).",
    )
    cwd: Path | None = Field(None, description="stdio: working directory of the peer.")
    url: str | None = Field(None, pattern=r"^https?://[^\s/]+", description="streamable HTTP: the peer's MCP endpoint.")
    token: SecretStr | None = Field(None, description="streamable HTTP: bearer token sent to this peer, and only to it.")
    role: Literal["dev", "faq", "other"] = Field("other", description="What the peer is for, for coordination tools.")
    action: str = Field(
        "peer:call", min_length=1,
        description="Governance action (a row of the policy table) of every call to this peer; default outward.",
    )
    tools: list[str] | None = Field(None, description="Offer only these tools of the peer; none = all it lists.")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="A call taking longer fails with a timeout error.")
    connect_timeout_s: float = Field(10.0, gt=0, le=300, description="How long connecting (or reconnecting) may take.")
    relist_interval_s: float = Field(
        60.0, ge=0.05, le=86400, description="How often the peer's tool list is read again to catch changes."
    )
    mode: Literal["auto", "legacy"] = Field("auto", description="MCP protocol negotiation (legacy: 2025-11-25).")

    @model_validator(mode="after")
    def _one_transport(self) -> PeerSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (stdio) and url (streamable HTTP)")
        if self.token is not None and self.url is None:
            raise ValueError("token is for a url peer only")
        return self


class Settings(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    storage: StorageSettings = StorageSettings()
    governance: GovernanceSettings = GovernanceSettings()
    llm: LLMSettings = LLMSettings()
    mcp: MCPSettings = MCPSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    services: Annotated[list[ServiceCheck], Field(description="Services whose health is checked.")] = []
    logs: LogSettings = LogSettings()
    alerts: AlertSettings = AlertSettings()
    incidents: IncidentSettings = IncidentSettings()
    vercel: VercelSettings = VercelSettings()
    sentry: SentrySettings = SentrySettings()
    notify: NotifySettings = NotifySettings()
    redis: RedisSettings = RedisSettings()
    queue: QueueSettings = QueueSettings()
    supabase: SupabaseSettings = SupabaseSettings()
    peers: dict[str, PeerSettings] = Field(
        default_factory=dict, description="Peer agents' MCP servers, by name: their tools are offered as <name>__<tool>."
    )

    @field_validator("peers")
    @classmethod
    def _peer_names(cls, peers: dict[str, PeerSettings]) -> dict[str, PeerSettings]:
        # No "__" inside a name: it separates the peer from the tool in `<peer>__<tool>`.
        for name in peers:
            if not re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*", name) or len(name) > 24:
                raise ValueError(f"peers.{name}: a peer name is lowercase letters, digits and single '_' (24 at most)")
        return peers

    @field_validator("services")
    @classmethod
    def _unique_names(cls, services: list[ServiceCheck]) -> list[ServiceCheck]:
        names = [s.name for s in services]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"duplicate service names: {', '.join(dupes)}")
        return services

    @model_validator(mode="after")
    def _remediations_exist(self) -> Settings:
        """A service's remediation commands must be allowed ones: a typo is found now, not mid-incident."""
        for index, service in enumerate(self.services):
            for kind, name in service.commands.items():
                if name not in self.alerts.restart_commands:
                    known = ", ".join(sorted(self.alerts.restart_commands)) or "none configured"
                    raise ValueError(
                        f"services.{index}.commands.{kind}: {name!r} is not in alerts.restart_commands ({known})"
                    )
        return self

    def secret_values(self) -> list[str]:
        """Every configured secret in clear, for the redactor. Never log this."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, SecretStr):
                if secret := value.get_secret_value():
                    found.append(secret)
            elif isinstance(value, BaseModel):
                for name in type(value).model_fields:
                    walk(getattr(value, name))
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self)
        return found


# Environment variable -> settings path. The first eight are the seed's names, spelled as it spells them.
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "VERCEL_TOKEN": ("vercel", "token"),
    "VERCEL_TEAM_ID": ("vercel", "team_id"),
    "REDIS_URL": ("redis", "url"),
    "SUPABASE_URL": ("supabase", "url"),
    "SUPABASE_SERVICE_ROLE_KEY": ("supabase", "service_role_key"),
    "Mailtrap_API_TOKEN": ("notify", "mailtrap_token"),
    "SLACK_WEBHOOK_URL": ("notify", "slack_webhook_url"),
    "ANTHROPIC_API_KEY": ("llm", "api_key"),
    "ANTHROPIC_BASE_URL": ("llm", "base_url"),
    "VERCEL_API_URL": ("vercel", "api_url"),
    "OPS_AGENT_DB": ("storage", "path"),
    "OPS_AGENT_LOG_LEVEL": ("log_level",),
    "OPS_AGENT_NAME": ("governance", "agent_name"),
    "DATABASE_URL": ("governance", "database_url"),
    "OPS_AGENT_LOGS_DB": ("logs", "path"),
    "OPS_AGENT_LOGS_DATABASE_URL": ("logs", "database_url"),
    "VERCEL_LOG_DRAIN_SECRET": ("logs", "drain_secret"),
    "OPS_AGENT_LOGS_WEBHOOK_SECRET": ("logs", "webhook_secret"),
    "SENTRY_AUTH_TOKEN": ("sentry", "auth_token"),
    "SENTRY_ORG": ("sentry", "organization"),
    "SENTRY_URL": ("sentry", "api_url"),
    "SENTRY_CLIENT_SECRET": ("sentry", "webhook_secret"),
}
CONFIG_FILE_VARIABLE = "OPS_AGENT_CONFIG"

_SCALARS = yaml.SafeLoader("")  # only its constructor is used, for plain scalars
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build Settings from `path` (or $OPS_AGENT_CONFIG, or nothing) and the environment.

    Raises ConfigError naming the key, and the line for keys that came from the file.
    """
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get(CONFIG_FILE_VARIABLE) or None
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        data, lines = _read_yaml(Path(path), environ)
    for variable, key_path in ENVIRONMENT.items():
        if value := environ.get(variable):
            _set_path(data, key_path, value)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = tuple(str(part) for part in error["loc"])
            where = _describe(key, lines, source)
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{'.'.join(key) or '(top level)'}{where}: {message}")
        raise ConfigError("bad configuration: " + "; ".join(problems)) from None


def _describe(key: tuple[str, ...], lines: dict[tuple[str, ...], int], source: str) -> str:
    for length in range(len(key), 0, -1):
        if (line := lines.get(key[:length])) is not None:
            return f" ({source}, line {line})"
    env = [name for name, target in ENVIRONMENT.items() if target == key[: len(target)]]
    return f" (environment variable {env[0]})" if env else ""


def _read_yaml(path: Path, environ: dict[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"config file {path}{where}: {problem}") from None
    if node is None:
        return {}, {}
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"config file {path}, line {node.start_mark.line + 1}: the top level must be a mapping")
    lines: dict[tuple[str, ...], int] = {}
    return _construct(node, (), lines, environ, path), lines


def _construct(node: yaml.Node, key: tuple[str, ...], lines: dict, environ: dict[str, str], path: Path) -> Any:
    lines[key] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            name = str(key_node.value)
            lines[key + (name,)] = key_node.start_mark.line + 1
            result[name] = _construct(value_node, key + (name,), lines, environ, path)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, key + (str(i),), lines, environ, path) for i, item in enumerate(node.value)]
    value = _SCALARS.construct_object(node)
    if isinstance(value, str) and (match := _REFERENCE.match(value)):
        name = match.group(1)
        if name not in environ:
            raise ConfigError(
                f"{'.'.join(key)} ({path}, line {lines[key]}): environment variable {name} is not set"
            )
        return environ[name]
    return value


def _set_path(data: dict[str, Any], key_path: tuple[str, ...], value: str) -> None:
    for part in key_path[:-1]:
        data = data.setdefault(part, {})
    data[key_path[-1]] = value
