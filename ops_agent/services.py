"""The composition root: builds stores, gate, tools, registry, planner and loop from Settings.

`open_services(settings)` is an async context manager, so the same lifespan serves the CLI (`async with`),
the MCP server (its lifespan) and the Python API (`OpsAgentOODA`). Nothing here is global.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx2

from ops_agent.config import LogSettings, Settings
from ops_agent.errors import ConfigError, GovernanceUnavailable
from ops_agent.governance import (
    BudgetLimits,
    Caller,
    GovernanceGate,
    LogAuditLog,
    PolicyTable,
    SqliteAuditLog,
    SqliteCostLedger,
    SqliteReputationStore,
)
from ops_agent.governance.approvals import ApprovalStore
from ops_agent.governance.audit import AuditLog
from ops_agent.governance.ledger import CostLedger
from ops_agent.governance.rate_limit import RateLimiter, RateLimits
from ops_agent.governance.reputation import ReputationStore
from ops_agent.ooda import Planner, RulePlanner, TaskLoop, execute_task_spec
from ops_agent.peers import Peers, open_peers
from ops_agent.redact import RedactingFilter, Redactor
from ops_agent.registry import ToolRegistry
from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.telemetry import Telemetry
from ops_agent.tools.alerts import AlertEvaluator, AlertManagementTool, RoutingPolicy, SqliteAlertStore, alert_specs
from ops_agent.tools.alerts.governance_watch import GovernanceWatch
from ops_agent.tools.alerts.models import Alert, AlertRule
from ops_agent.tools.alerts.notifier import NotificationNotifier
from ops_agent.tools.alerts.remediation import Remediator, restart_command_spec
from ops_agent.tools.alerts.sources import AgentConditionSources
from ops_agent.tools.deployment import DeploymentTool, SqliteDeploymentHistory, VercelClient, deployment_specs
from ops_agent.tools.incidents import Diagnoser, IncidentResponder, incident_specs, service_arguments
from ops_agent.tools.incidents.coordination import Coordinator, coordination_specs
from ops_agent.tools.logs import LogAnalysisTool, LogCollector, VercelLogPuller, log_specs
from ops_agent.tools.logs.analysis.rootcause import DeploymentEvent, load_signatures
from ops_agent.tools.logs.index.sqlite_store import SqliteLogStore
from ops_agent.tools.logs.index.store import LogStore
from ops_agent.tools.logs.ingest.follow import FileFollower, OffsetFile
from ops_agent.tools.logs.log_metrics import LogMetrics
from ops_agent.tools.logs.models import iso
from ops_agent.tools.monitoring import CustomMetrics, MonitoringTool, monitoring_specs
from ops_agent.tools.monitoring.health import ServiceHealth
from ops_agent.tools.monitoring.prometheus import PrometheusClient
from ops_agent.tools.monitoring.scrape import Scraper
from ops_agent.tools.monitoring.series import MemorySeries, SeriesStore, SqliteSeriesStore, TieredSeries
from ops_agent.tools.notify import NotificationService, SqliteOutbox, notify_specs
from ops_agent.tools.sentry import SentrySource, sentry_specs

if TYPE_CHECKING:
    import anthropic

__all__ = ["Services", "configure_logging", "open_services"]

Spawn = Callable[[Coroutine[Any, Any, None], str], None]  # start a background task (or not: see open_services)
log = logging.getLogger("ops_agent.governance")
logs_log = logging.getLogger("ops_agent.logs")
USER_AGENT = "ops-agent/0.1"


@dataclass
class Services:
    settings: Settings
    redactor: Redactor
    gate: GovernanceGate
    registry: ToolRegistry
    loop: TaskLoop
    monitoring: MonitoringTool
    deployment: DeploymentTool
    logs: LogAnalysisTool
    notify: NotificationService
    alerts: AlertManagementTool
    telemetry: Telemetry
    http: httpx2.AsyncClient
    approvals: ApprovalStore
    incidents: IncidentResponder | None = None  # None when monitoring is off
    sentry: SentrySource | None = None  # always built by open_services (its tools say when it is unconfigured)
    peers: Peers | None = None  # config `peers`: other agents' MCP servers, their tools in the registry

    @property
    def identity(self) -> Caller:
        """The local agent: stdio MCP, the CLI and the Python API act as this agent."""
        return Caller(self.settings.governance.agent_name, via="api")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners and daemons swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(settings: Settings) -> Redactor:
    """Log lines to stderr in the seed's `LEVEL:name:message` shape, scrubbed of secrets."""
    redactor = Redactor(settings.secret_values())
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ops_agent", False)]:
        root.removeHandler(old)
    handler._ops_agent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for noisy in ("httpx2", "httpcore2", "mcp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return redactor


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    anthropic_client: anthropic.AsyncAnthropic | None = None,
    http: httpx2.AsyncClient | None = None,
    enable_monitoring: bool = True,
    background: bool = True,
) -> AsyncIterator[Services]:
    """`background=False` for one-shot commands: no sampler, file followers, delivery worker or alert
    evaluator, so a CLI command beside a running server does not deliver, recover or evaluate twice."""
    async with AsyncExitStack() as stack:
        def spawn(coroutine: Coroutine[Any, Any, None], name: str) -> None:
            if background:
                stack.push_async_callback(_cancel, asyncio.create_task(coroutine, name=name))
            else:
                coroutine.close()

        redactor = Redactor(settings.secret_values())
        if http is None:
            http = httpx2.AsyncClient(follow_redirects=False, timeout=10.0, headers={"user-agent": USER_AGENT})
            stack.push_async_callback(http.aclose)
        db, degraded_reason = await _open_database(settings, redactor, stack)
        gate = await _open_governance(settings, redactor, db, degraded_reason, stack)
        telemetry = Telemetry()
        gate.observers.append(telemetry.observe)
        registry = ToolRegistry(gate)
        series = await _open_series(db, degraded_reason, stack)
        monitoring = MonitoringTool(
            settings.services,
            http,
            series=series,
            sample_interval_s=settings.monitoring.sample_interval_s,
            top_processes=settings.monitoring.top_processes,
        )
        stack.push_async_callback(monitoring.aclose)
        custom_metrics = CustomMetrics(db, series, _prometheus(settings, http))
        await custom_metrics.migrate()
        if enable_monitoring:
            for spec in monitoring_specs(monitoring, custom_metrics):
                registry.register(spec)
            spawn(monitoring.run(), "monitoring")
            if settings.monitoring.scrape:
                spawn(Scraper(settings.monitoring.scrape, series, http).run(), "scrape")
        history = SqliteDeploymentHistory(db)
        await history.migrate()
        deployment = DeploymentTool(_vercel_client(settings, http), history, settings.vercel)
        for spec in deployment_specs(deployment, settings.vercel):
            registry.register(spec)
        logs = await _open_logs(settings, redactor, series, deployment, degraded_reason, stack, spawn)
        for spec in log_specs(logs, VercelLogPuller(lambda: deployment.client), settings.vercel.default_project):
            registry.register(spec)
        sentry = SentrySource(settings.sentry, http, logs.store, logs.collector)
        for spec in sentry_specs(sentry):
            registry.register(spec)
        if sentry.configured and settings.sentry.poll_interval_s > 0:
            spawn(sentry.poll(settings.sentry.poll_interval_s), "sentry")
        notify = await _open_notify(settings, redactor, db, http, stack, spawn)
        for spec in notify_specs(notify):
            registry.register(spec)
        alerts = await _open_alerts(settings, db, series, monitoring, logs, notify, registry, redactor, stack, spawn)
        telemetry.alert_counts = alerts.state_counts  # /metrics: ops_agent_alerts{state}
        incidents = None
        if enable_monitoring:
            incidents = _incident_responder(settings, registry, monitoring, logs, deployment, series, alerts)
            for spec in incident_specs(incidents):
                registry.register(spec)
            coordinator = Coordinator(
                registry, incidents.diagnoser, logs, deployment, redactor, lambda: list(incidents.reports),
                fix_requests_to=settings.incidents.fix_requests_to, summaries_to=settings.incidents.summaries_to,
            )
            for spec in coordination_specs(coordinator, service_arguments):
                registry.register(spec)
        # Peers own their connections (tasks of their own), so a one-shot CLI command can call them too.
        peers = await open_peers(settings.peers, registry, redactor)
        stack.push_async_callback(peers.aclose)
        planner = _planner(settings, registry, gate, anthropic_client, stack)
        facts = {
            "services": [service.name for service in settings.services],
            "projects": sorted({*settings.vercel.projects, *settings.vercel.sandbox_projects}),
            "default_project": settings.vercel.default_project,
        }
        approvals = ApprovalStore(db)
        await approvals.migrate()
        configured = [  # what the operator named: a task's guarded step may act on these (ooda/provenance.py)
            *facts["services"], *facts["projects"], settings.vercel.default_project or "",
            *(name for name in notify.channels if name != "webhook"), "email", *settings.notify.email_recipients,
            *settings.alerts.restart_commands,
        ]
        loop = TaskLoop(registry, planner, gate, max_steps=settings.llm.max_steps, facts=facts,
                        approvals=approvals, configured=configured)
        registry.register(execute_task_spec(loop))
        yield Services(
            settings, redactor, gate, registry, loop, monitoring, deployment, logs, notify, alerts, telemetry, http,
            approvals, incidents, peers=peers, sentry=sentry,
        )


def _incident_responder(
    settings: Settings,
    registry: ToolRegistry,
    monitoring: MonitoringTool,
    logs: LogAnalysisTool,
    deployment: DeploymentTool,
    series: SeriesStore,
    alerts: AlertManagementTool,
) -> IncidentResponder:
    """What diagnose_incident and remediate_incident run on: what the other capabilities already watch."""

    async def active_alerts() -> list[tuple[Alert, AlertRule | None]]:
        return [(alert, await alerts.store.rule(alert.rule_id)) for alert in await alerts.store.active_alerts()]

    async def probe(name: str) -> ServiceHealth:
        [health] = await monitoring.health.check([name])
        return health

    async def traffic(name: str, start: float, end: float) -> tuple[int, int]:
        window = f"{iso(start)}..{iso(end)}"
        requests = await logs.search_logs("status:>=100", time_range=window, service=name, limit=1)
        errors = await logs.search_logs("status:>=500", time_range=window, service=name, limit=1)
        return requests.total, errors.total

    diagnoser = Diagnoser(
        settings.services, settings.incidents, logs=logs, deployments=deployment, series=series,
        health=monitoring.health.last, active_alerts=active_alerts,
    )
    return IncidentResponder(diagnoser, registry.invoke, probe, traffic, settings.incidents)


async def _open_database(
    settings: Settings, redactor: Redactor, stack: AsyncExitStack
) -> tuple[SqliteDatabase, str | None]:
    """The configured store, or, when it cannot be opened, an in-memory one and the reason (degraded mode)."""
    db = SqliteDatabase(settings.storage.path)
    stack.push_async_callback(db.close)
    try:
        await db.open()
        return db, None
    except (sqlite3.Error, OSError) as exc:
        reason = f"store {settings.storage.path} unusable: {type(exc).__name__}: {redactor.text(str(exc))}"
    memory = SqliteDatabase(":memory:")
    stack.push_async_callback(memory.close)
    await memory.open()
    return memory, reason


async def _open_logs(
    settings: Settings,
    redactor: Redactor,
    series: SeriesStore,
    deployment: DeploymentTool,
    degraded_reason: str | None,
    stack: AsyncExitStack,
    spawn: Spawn,
) -> LogAnalysisTool:
    """The log index (its own SQLite file, or PostgreSQL), its collector and the background collection."""
    config = settings.logs
    store: LogStore
    if config.database_url is not None:
        from ops_agent.tools.logs.index.postgres_store import PostgresLogStore

        store = PostgresLogStore(config.database_url.get_secret_value())
    else:
        path = ":memory:" if degraded_reason else config.path or settings.storage.path.with_name("logs.db")
        store = SqliteLogStore(path)
    await store.open()
    stack.push_async_callback(store.close)
    metrics = LogMetrics(series, window_s=settings.logs.metrics_window_s)
    collector = LogCollector(store, redactor, batch_size=config.batch_size, observers=[metrics.observe])

    async def deployments_since(since: float) -> list[DeploymentEvent]:
        # Requested up to an hour before `since` may still have finished after it.
        entries = await deployment.history.list(since=datetime.fromtimestamp(since - 3600, UTC), limit=200)
        return [
            DeploymentEvent(e.deployment_id or e.deployment_url or f"#{e.id}", e.project, e.environment,
                            e.finished_at.timestamp(), e.action)
            for e in entries
            if e.finished_at is not None and e.outcome in ("ready", "done")
        ]

    tool = LogAnalysisTool(
        store, collector, signatures=load_signatures(config.signatures_file), deployments=deployments_since,
        metrics=metrics,
    )
    spawn(_maintain_logs(store, metrics, config), "logs")
    # Offsets beside the main database (also when the index is in PostgreSQL): a restart resumes the files.
    offsets = None if degraded_reason else OffsetFile(settings.storage.path.with_name("log-file-offsets.json"))
    saved = offsets.load() if offsets else {}
    for source in config.files:
        follower = FileFollower(
            [source.path], start_at_end=source.start_at_end, offsets=saved, poll_interval_s=config.poll_interval_s
        )
        stack.callback(follower.close)  # runs after the task below is cancelled: LIFO
        spawn(collector.follow_files(follower, {source.path: source.service}, offsets), "logs:files")
    return tool


async def _open_notify(
    settings: Settings,
    redactor: Redactor,
    db: SqliteDatabase,
    http: httpx2.AsyncClient,
    stack: AsyncExitStack,
    spawn: Spawn,
) -> NotificationService:
    """The notification service over a durable outbox, with its delivery worker running."""
    outbox = SqliteOutbox(db)
    await outbox.migrate()
    notify = NotificationService(settings=settings.notify, http=http, outbox=outbox, redactor=redactor)
    spawn(notify.run(), "notify")
    stack.push_async_callback(notify.stop)  # runs first: in-flight sends finish, nothing is left in doubt
    return notify


async def _open_alerts(
    settings: Settings,
    db: SqliteDatabase,
    series: SeriesStore,
    monitoring: MonitoringTool,
    logs: LogAnalysisTool,
    notify: NotificationService,
    registry: ToolRegistry,
    redactor: Redactor,
    stack: AsyncExitStack,
    spawn: Spawn,
) -> AlertManagementTool:
    """Rules, the evaluator on its interval, and remediation through the registry (so through the gate)."""
    from ops_agent.tools.alerts.event_watch import EventDetailsNotifier, EventWatch

    config = settings.alerts
    store = SqliteAlertStore(db)
    await store.migrate()
    registry.register(restart_command_spec(config.restart_commands, redactor, config.command_timeout_s))
    notifier = NotificationNotifier(notify)
    sentry = settings.sentry  # on when issues can arrive: pulled with a token, or pushed to /ingest/sentry
    sentry_on = (sentry.auth_token is not None and sentry.organization) or sentry.webhook_secret is not None
    sources = AgentConditionSources(
        series, monitoring.health.last, logs, sentry_projects=sentry.projects if sentry_on else None
    )
    policy = RoutingPolicy(
        channels=config.routing, repeat_interval_s=config.repeat_interval_s,
        escalate_after_s=config.escalate_after_s, escalation_channels=config.escalation_channels,
    )
    agent_name = settings.governance.agent_name
    watch = GovernanceWatch(registry.gate, series, agent_name)
    registry.gate.observers.append(watch.observe)
    events: EventWatch | None = None  # dead letters and every agent's budget warnings, from the Redis streams
    if settings.redis.url is not None:
        import redis.asyncio

        from ops_agent.governance.redis_keys import GovernanceKeys
        from ops_agent.worker.keys import QueueKeys

        # A client of its own, with short timeouts: a Redis outage costs a cycle 2 s at most, never a hang.
        client = redis.asyncio.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_connect_timeout=2.0, socket_timeout=2.0
        )
        stack.push_async_callback(client.aclose)

        async def own_agent() -> str:
            return (await registry.gate.agent(Caller(agent_name))).id

        events = EventWatch(
            client, series, queue_events=QueueKeys(settings.redis.prefix).events,
            budget_events=GovernanceKeys(settings.redis.prefix).events, own_agent=own_agent, agent_name=agent_name,
            redact=redactor.text,
        )
        stack.push_async_callback(events.close)  # after the evaluator stopped, before the client closes

    async def before_cycle(now: float) -> None:
        if events is not None:
            await events.sample(now)  # never raises
        await watch.sample(now)

    evaluator = AlertEvaluator(
        store, sources, notifier if events is None else EventDetailsNotifier(notifier, events),
        available_channels=notifier.available, policy=policy, remediate=Remediator(registry, agent_name),
        before_cycle=before_cycle,
    )
    tool = AlertManagementTool(store, evaluator, sources, known_services=[s.name for s in settings.services])
    for spec in alert_specs(tool):
        registry.register(spec)
    await watch.install_rules(tool)
    if events is not None:
        await events.install_rules(tool)
    stack.push_async_callback(evaluator.settle)
    spawn(evaluator.run(config.interval_s), "alerts")
    return tool


async def _maintain_logs(store: LogStore, metrics: LogMetrics, config: LogSettings) -> None:
    """Writes closed log-metric windows into the series, and applies retention once an hour."""
    next_prune = 0.0
    while True:
        now = time.time()
        try:
            await metrics.flush(now)
            if now >= next_prune:
                removed = await store.prune(now - config.retention_days * 86400)
                if removed:
                    logs_log.info("log retention: deleted %d records older than %g days", removed, config.retention_days)
                next_prune = now + 3600
        except Exception:
            logs_log.exception("log maintenance failed; retrying")
        await asyncio.sleep(metrics.window_s)


async def _open_governance(
    settings: Settings, redactor: Redactor, db: SqliteDatabase, degraded_reason: str | None, stack: AsyncExitStack
) -> GovernanceGate:
    governance = settings.governance
    limits = BudgetLimits.from_settings(governance.budget)
    try:
        reputation = await _open_reputation(settings, db, stack)
    except GovernanceUnavailable as exc:  # the database is down: start degraded, on the embedded store
        degraded_reason = degraded_reason or f"reputation store unusable: {exc.public_message}"
        reputation = SqliteReputationStore(db)
        await reputation.migrate()
    common = dict(
        policy=PolicyTable.load(governance.policy),
        limits=limits,
        probation_tasks=governance.probation_tasks,
        redactor=redactor,
        reputation=reputation,
        ledger=await _open_ledger(settings, db, limits, stack),
        fail_open=governance.fail_open,  # also mid-run: a backend that goes away lets non-reads run
        rate_limiter=RateLimiter(RateLimits.from_settings(governance.rate_limit)),  # degraded or not
    )
    if degraded_reason is None:
        try:
            audit = SqliteAuditLog(db)
            await audit.migrate()
            stack.push_async_callback(audit.close)
            log.info("✅ Governance modules initialized")
            gate = GovernanceGate(audit=audit, **common)
            await gate.register(governance.agent_name)
            return gate
        except (sqlite3.Error, OSError) as exc:
            degraded_reason = f"registration failed: {type(exc).__name__}: {redactor.text(str(exc))}"
    log.warning("⚠️ Could not register with Governance (degraded mode)")
    mode = "running UNCONSTRAINED (fail_open)" if governance.fail_open else "read-only actions only"
    log.warning("   %s; %s", degraded_reason, mode)
    # Budgets still hold within this process: in degraded mode `db` is an in-memory database.
    audit_log: AuditLog = LogAuditLog()
    return GovernanceGate(audit=audit_log, degraded_reason=degraded_reason, **common)


async def _open_reputation(settings: Settings, db: SqliteDatabase, stack: AsyncExitStack) -> ReputationStore:
    """Agents and reputation: Supabase, PostgreSQL or the embedded store, as governance.reputation_backend says."""
    governance, supabase = settings.governance, settings.supabase
    backend = governance.reputation_backend
    if backend == "auto":
        backend = ("supabase" if supabase.url and supabase.service_role_key
                   else "postgres" if governance.database_url else "sqlite")
    store: ReputationStore
    if backend == "supabase":
        if not (supabase.url and supabase.service_role_key):
            raise ConfigError("governance.reputation_backend: supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        from ops_agent.governance.supabase_reputation import SupabaseReputationStore

        store = SupabaseReputationStore(supabase.url, supabase.service_role_key.get_secret_value())
    elif backend == "postgres":
        if governance.database_url is None:
            raise ConfigError("governance.reputation_backend: postgres needs governance.database_url (DATABASE_URL)")
        from ops_agent.governance.postgres_reputation import PostgresReputationStore

        store = PostgresReputationStore(governance.database_url.get_secret_value())
    else:
        store = SqliteReputationStore(db)
    await store.migrate()
    if hasattr(store, "close"):
        stack.push_async_callback(store.close)
    return store


async def _open_ledger(
    settings: Settings, db: SqliteDatabase, limits: BudgetLimits, stack: AsyncExitStack
) -> CostLedger:
    """Budgets in Redis when REDIS_URL is set (shared by every worker and machine), else in the store."""
    if settings.redis.url is None:
        ledger = SqliteCostLedger(db)
        await ledger.migrate()
        return ledger
    import redis.asyncio

    from ops_agent.governance.redis_ledger import RedisCostLedger

    # Short timeouts: an outage must refuse quickly (degraded mode), not hang every call.
    client = redis.asyncio.Redis.from_url(
        settings.redis.url.get_secret_value(), socket_connect_timeout=2.0, socket_timeout=2.0
    )
    stack.push_async_callback(client.aclose)
    return RedisCostLedger(client, prefix=settings.redis.prefix, limits=limits)


async def _open_series(db: SqliteDatabase, degraded_reason: str | None, stack: AsyncExitStack) -> SeriesStore:
    """Metric series in the store; in degraded mode, a bounded in-memory history."""
    if degraded_reason is not None:
        return MemorySeries()
    store = SqliteSeriesStore(db)
    await store.migrate()
    stack.push_async_callback(store.close)
    return TieredSeries(MemorySeries(), store)  # recent windows from a ring buffer, older ones from the store


def _prometheus(settings: Settings, http: httpx2.AsyncClient) -> PrometheusClient | None:
    monitoring = settings.monitoring
    if monitoring.prometheus_url is None:
        return None
    token = monitoring.prometheus_token.get_secret_value() if monitoring.prometheus_token else None
    return PrometheusClient(http, monitoring.prometheus_url, timeout_s=monitoring.prometheus_timeout_s, bearer_token=token)


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _vercel_client(settings: Settings, http: httpx2.AsyncClient) -> VercelClient | None:
    vercel = settings.vercel
    if vercel.token is None:
        return None
    return VercelClient(
        http,
        base_url=vercel.api_url,
        token=vercel.token.get_secret_value(),
        team_id=vercel.team_id,
        max_attempts=vercel.max_attempts,
        list_version=vercel.list_version,
        timeout_s=vercel.timeout_s,
    )


def _planner(
    settings: Settings,
    registry: ToolRegistry,
    gate: GovernanceGate,
    client: anthropic.AsyncAnthropic | None,
    stack: AsyncExitStack,
) -> Planner:
    llm = settings.llm
    if client is None and llm.api_key is None:
        return RulePlanner(registry)
    import anthropic

    from ops_agent.ooda.claude_planner import ClaudePlanner

    if client is None:
        client = anthropic.AsyncAnthropic(
            api_key=llm.api_key.get_secret_value(),
            base_url=llm.base_url,
            max_retries=2,
            http_client=httpx2.AsyncClient(timeout=llm.timeout_s, headers={"user-agent": USER_AGENT}),
        )
        stack.push_async_callback(client.close)
    return ClaudePlanner(client, registry, gate, llm)
