"""Events other processes publish on Redis streams, as alert series: dead-lettered tasks, and the budget
warnings of every agent that shares the Redis cost ledger.

    {prefix}events              the task queue's events; `task_dead_lettered` (TaskQueue.dead_letter)
    {prefix}governance:events   budget warnings of the Redis cost ledger, for every agent (RedisCostLedger)

Before each evaluation cycle `EventWatch.sample` reads what is new on both streams and writes, for that cycle,
how many events it read (0 when none):

    queue_tasks_dead_lettered                                           tasks dead-lettered
    governance_budget_warnings{agent, window, metric, threshold, local} budget warnings (local="true": this
                                                                        process's own agent)

and three built-in rules (created when missing; edit, silence or disable them like any other) read them:
`sum(queue_tasks_dead_lettered[5m]) > 0` and a budget rule per threshold over the warnings of *other* agents
(this agent's own budget is what governance_budget_80/95 watch already, from its usage: one alert, not two).

**Counts per cycle, read with sum(), not a `_total` counter read with increase().** `increase()` extrapolates
the rise between the first and the last point to the whole window and needs two points of a series, so one
event on a series young or new would read "increase(...) = 60" and a brand-new label set would be no data;
and a counter kept per process restarts at 0, which several processes writing the same series (a server and
a worker on one store, a one-shot CLI command installing rules) turn into false rises. A count per cycle has
none of that: `sum(x[5m])` is exactly the number of events of the last five minutes, whoever wrote them.
Zeros are written every cycle so an alert resolves when its events leave the window (a series without points
would be "no data", which holds an alert as it is).

**The cursor is a consumer group (`alerts`) on each stream, kept by Redis.** Every process that evaluates
alerts (`serve`, each `worker`) reads through it, so an event is counted once across the fleet — one page
per dead letter, not one per worker — and a restart resumes after the last event read: nothing that happened
while the process was down is lost, nothing already read is read again. Entries are read with NOACK (no
pending list to reclaim; a crash between the read and the series write loses that batch, a few events at
most). A group is created starting `LOOKBACK_S` (10 minutes) before the Redis server's clock, whenever it is
missing: on the first start the history of the stream is not replayed (only events recent enough to be
alerted on), and after Redis lost its data (a restart without persistence) the events written since it came
back are still read.

Redis unreachable during a cycle: one warning (no URL, no password: the exception's type only), then nothing
until it is back; the zeros are still written (no event can be published on a Redis that is down) and the
evaluator goes on with every other rule. Notifications of these rules carry what happened — which task, which
agent — through `EventDetailsNotifier`, since a rule's summary only says how many.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import redis.asyncio
import redis.exceptions

from ops_agent.errors import OpsAgentError, ToolRetry
from ops_agent.stores.redis_text import as_fields, as_text
from ops_agent.tools.alerts.alert_management_tool import AlertManagementTool
from ops_agent.tools.alerts.evaluator import AlertNotifier
from ops_agent.tools.monitoring.series import SeriesStore

__all__ = ["BUDGET_WARNINGS", "DEAD_LETTERED", "EVENT_RULES", "EventDetailsNotifier", "EventWatch"]

log = logging.getLogger(__name__)

DEAD_LETTERED = "queue_tasks_dead_lettered"
BUDGET_WARNINGS = "governance_budget_warnings"
GROUP = "alerts"
LOOKBACK_S = 600  # a group created now starts this far back (the longest window of the rules below)
BATCH = 500  # entries per XREADGROUP
MAX_BATCHES = 20  # per stream and cycle; the rest waits for the next cycle
ZEROS_FOR_S = 1800  # a budget series gets zeros this long after its last event, so its alert resolves
STALE_CONSUMER_S = 86400  # consumers left by crashed processes are removed once idle this long
RECENT_EVENTS = 500  # events kept for the notifications' detail lines
DETAIL_LINES = 10  # per alert in one notification

# name, condition, severity, window of the condition (for the detail lines)
EVENT_RULES = (
    ("queue_task_dead_lettered", f"sum({DEAD_LETTERED}[5m]) > 0", "critical", 300),
    ("governance_budget_warning_80", f'sum({BUDGET_WARNINGS}{{threshold="80", local="false"}}[10m]) > 0', "medium",
     600),
    ("governance_budget_warning_95", f'sum({BUDGET_WARNINGS}{{threshold="95", local="false"}}[10m]) > 0', "critical",
     600),
)
# this agent's own warnings are details of the usage rules of governance_watch.BUILT_IN_RULES
_LOCAL_BUDGET_RULES = {80: ("governance_budget_80", 600), 95: ("governance_budget_95", 600)}
_WINDOWS = ("hour", "day")
_METRICS = ("tokens", "usd_micros")
_THRESHOLDS = (80, 95)
_ALERT_LINE = re.compile(r"^(?:FIRING|STILL FIRING|ESCALATED) ([A-Za-z0-9][A-Za-z0-9_.-]*):")


@dataclass(frozen=True, slots=True)
class _Detail:
    at: float  # when it was read
    rule: str
    text: str


class EventWatch:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        series: SeriesStore,
        *,
        queue_events: str,
        budget_events: str,
        own_agent: Callable[[], Awaitable[str]],
        agent_name: str = "",
        redact: Callable[[str], str] = lambda text: text,
        clock: Callable[[], float] = time.time,
        group: str = GROUP,
    ) -> None:
        """`queue_events` and `budget_events` are the two stream keys; `own_agent` returns this process's agent
        id (its warnings are labelled local="true"); `redact` scrubs secrets from event text."""
        self.client = client
        self.series = series
        self.streams = (queue_events, budget_events)
        self.own_agent = own_agent
        self.agent_name = agent_name
        self.redact = redact
        self.clock = clock
        self.group = group
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.windows = {name: window for name, _, _, window in EVENT_RULES} | dict(_LOCAL_BUDGET_RULES.values())
        self._own: str | None = None
        self._cycle_at: float | None = None
        self._groups_ready = False
        self._read_once = False
        self._down = False
        self._budget_series: dict[frozenset[tuple[str, str]], float] = {}  # labels -> last event (or seeding)
        self._recent: deque[_Detail] = deque(maxlen=RECENT_EVENTS)

    # -- each cycle ------------------------------------------------------------------------------------

    async def sample(self, now: float | None = None) -> None:
        """Read the new events and write this cycle's counts. Never raises: the evaluator must go on."""
        now = self.clock() if now is None else now
        self._cycle_at = now  # the notifications of this cycle list what was read up to it
        try:
            entries = await self._read()
        except Exception as exc:  # noqa: BLE001 - whatever Redis does, the cycle goes on
            self._unavailable(exc)
            entries = []
        else:
            if self._down:
                log.info("alert events: Redis reachable again; reading the event streams")
                self._down = False
        try:
            await self.series.record_many(await self._samples(entries, now))
        except Exception:
            log.exception("alert events: could not write the event counts")

    async def _read(self) -> list[tuple[str, str, dict[str, str]]]:
        """(stream, entry id, fields) of every entry not yet read by the group, oldest first per stream."""
        try:
            return await self._read_groups()
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups_ready = False  # Redis lost its data, or someone removed the group: make it again
            return await self._read_groups()

    async def _read_groups(self) -> list[tuple[str, str, dict[str, str]]]:
        await self._ensure_groups()
        self._read_once = True
        found: list[tuple[str, str, dict[str, str]]] = []
        wanted = list(self.streams)
        for _ in range(MAX_BATCHES):
            reply = await self.client.xreadgroup(
                self.group, self.consumer, {stream: ">" for stream in wanted}, count=BATCH, noack=True
            )
            full = []
            for stream, messages in reply or []:
                stream = as_text(stream)
                found.extend((stream, as_text(entry_id), as_fields(fields)) for entry_id, fields in messages)
                if len(messages) >= BATCH:
                    full.append(stream)
            if not full:
                break
            wanted = full
        return found

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        seconds, micros = await self.client.time()
        start_ms = max(0, int(seconds) * 1000 + int(micros) // 1000 - LOOKBACK_S * 1000)
        for stream in self.streams:
            try:
                await self.client.xgroup_create(stream, self.group, id=f"{start_ms}-0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                await self._forget_stale_consumers(stream)
        self._groups_ready = True

    async def _forget_stale_consumers(self, stream: str) -> None:
        """Consumers of processes long gone (NOACK: they hold no pending entries) are only clutter."""
        for consumer in await self.client.xinfo_consumers(stream, self.group):
            name, idle_ms, pending = as_text(consumer["name"]), int(consumer["idle"]), int(consumer["pending"])
            if name != self.consumer and pending == 0 and idle_ms > STALE_CONSUMER_S * 1000:
                await self.client.xgroup_delconsumer(stream, self.group, name)

    def _unavailable(self, exc: Exception) -> None:
        self._groups_ready = False  # a Redis that restarted may have lost them
        if self._down:
            return
        self._down = True
        if isinstance(exc, redis.exceptions.TimeoutError | asyncio.TimeoutError):
            reason = "timed out"
        elif isinstance(exc, redis.exceptions.ConnectionError | OSError):
            reason = "unreachable"
        else:
            reason = f"failed ({type(exc).__name__})"
        log.warning("⚠️ alert events: Redis %s; dead letters and budget warnings are read again once it is back",
                    reason)

    async def _samples(
        self, entries: Sequence[tuple[str, str, dict[str, str]]], now: float
    ) -> list[tuple[str, dict[str, str], float, float]]:
        dead = 0
        warnings: dict[frozenset[tuple[str, str]], int] = {}
        own = await self._own_agent() if any(stream == self.streams[1] for stream, _, _ in entries) else self._own
        for stream, entry_id, fields in entries:
            if stream == self.streams[0]:
                dead += self._dead_letter(entry_id, fields, now)
            else:
                labels = self._budget_warning(entry_id, fields, own, now)
                if labels is not None:
                    warnings[labels] = warnings.get(labels, 0) + 1
                    self._budget_series[labels] = now
        samples = [(DEAD_LETTERED, {}, now, float(dead))]
        for labels, last in list(self._budget_series.items()):
            if now - last > ZEROS_FOR_S:
                del self._budget_series[labels]
            else:
                samples.append((BUDGET_WARNINGS, dict(labels), now, float(warnings.get(labels, 0))))
        return samples

    def _dead_letter(self, entry_id: str, fields: dict[str, str], now: float) -> int:
        if fields.get("type") != "task_dead_lettered":
            return 0  # another kind of event: not ours to count
        task = _one_line(fields.get("task_id") or "(unknown task)", 128)
        deliveries = fields.get("deliveries", "?")
        error = _one_line(self.redact(fields.get("error", "")), 200)
        log.info("alert events: task %s was dead-lettered after %s deliveries (event %s)", task, deliveries, entry_id)
        text = f"task {task} dead-lettered after {deliveries} deliveries" + (f": {error}" if error else "")
        self._recent.append(_Detail(now, EVENT_RULES[0][0], text))
        return 1

    def _budget_warning(
        self, entry_id: str, fields: dict[str, str], own: str | None, now: float
    ) -> frozenset[tuple[str, str]] | None:
        try:
            agent, window, metric = fields["agent_id"], fields["window"], fields["metric"]
            threshold, used, limit = int(fields["threshold_pct"]), int(fields["used"]), int(fields["limit"])
        except (KeyError, ValueError):
            log.warning("alert events: budget warning %s ignored: not the ledger's shape", entry_id)
            return None
        local = agent == own
        who = f"{agent} (this agent, {self.agent_name})" if local and self.agent_name else agent
        log.info("alert events: agent %s reached %d%% of its %s %s budget (event %s)", who, threshold, window,
                 metric, entry_id)
        rule = _LOCAL_BUDGET_RULES[threshold][0] if local and threshold in _LOCAL_BUDGET_RULES else (
            f"governance_budget_warning_{threshold}")
        text = f"agent {who}: {threshold}% of its {_budget(window, metric, used, limit)}"
        self._recent.append(_Detail(now, rule, text))
        return frozenset({
            "agent": agent, "window": window, "metric": metric, "threshold": str(threshold),
            "local": "true" if local else "false",
        }.items())

    async def _own_agent(self) -> str | None:
        if self._own is None:
            try:
                self._own = await self.own_agent()
            except Exception as exc:  # noqa: BLE001 - the reputation store is away: all agents count as others
                reason = exc.public_message if isinstance(exc, OpsAgentError) else type(exc).__name__
                log.warning("alert events: this agent's id is unknown for now: %s", reason)
        return self._own

    # -- startup and shutdown ----------------------------------------------------------------------------

    async def install_rules(self, tool: AlertManagementTool) -> None:
        """Create the built-in rules that are missing. Reads nothing from Redis (a one-shot command must not
        take events from the evaluating processes); writes zeros so the series exist, for the rules' checks."""
        now = self.clock()
        own = await self._own_agent()
        stored = await self.series.latest(BUDGET_WARNINGS, {"local": "false"})
        for labels, point in stored.items():  # alerts firing before a restart must still resolve
            if now - point.ts <= ZEROS_FOR_S:
                self._budget_series.setdefault(labels, point.ts)
        samples = [(DEAD_LETTERED, {}, now, 0.0)]
        if own is not None:
            samples += [
                (BUDGET_WARNINGS, {"agent": own, "window": window, "metric": metric, "threshold": str(threshold),
                                   "local": "true"}, now, 0.0)
                for window in _WINDOWS for metric in _METRICS for threshold in _THRESHOLDS
            ]
        await self.series.record_many(samples)
        for name, condition, severity, _ in EVENT_RULES:
            if await tool.store.rule(name) is not None:
                continue
            try:
                await tool.create_alert_rule(name, condition, severity, created_by="ops-agent (built in)")
            except ToolRetry as exc:  # e.g. no budget series yet (this agent's id unknown): next start
                log.warning("alert events: built-in rule %s not created yet: %s", name, exc.public_message)

    async def close(self) -> None:
        """Leave the groups (best effort: a consumer left behind is removed by a later start)."""
        if not self._read_once or self._down:
            return
        for stream in self.streams:
            try:
                await self.client.xgroup_delconsumer(stream, self.group, self.consumer)
            except Exception as exc:  # noqa: BLE001 - shutting down: nothing more to do about it
                log.debug("alert events: could not leave the group of %s: %s", stream, type(exc).__name__)
                return

    # -- notifications ---------------------------------------------------------------------------------------

    def details(self, message: str, now: float | None = None) -> str:
        """`message` with, under each firing line of a rule of these events, what was read in its window
        (up to `now`, by default the time of the latest cycle)."""
        now = now if now is not None else self._cycle_at if self._cycle_at is not None else self.clock()
        lines = []
        for line in message.split("\n"):
            lines.append(line)
            match = _ALERT_LINE.match(line)
            window = self.windows.get(match.group(1)) if match else None
            if match is None or window is None:
                continue
            found = [d.text for d in self._recent if d.rule == match.group(1) and 0 <= now - d.at <= window]
            lines += [f"  - {text}" for text in found[-DETAIL_LINES:]]
            if len(found) > DETAIL_LINES:
                lines.append(f"  - … and {len(found) - DETAIL_LINES} earlier")
        return "\n".join(lines)


class EventDetailsNotifier:
    """The alert notifier, with the events behind an alert of these rules added under its line."""

    def __init__(self, notifier: AlertNotifier, watch: EventWatch) -> None:
        self.notifier = notifier
        self.watch = watch

    async def notify(self, channels: Sequence[str], *, subject: str, message: str, priority: str, key: str) -> None:
        try:
            message = self.watch.details(message)
        except Exception:  # the alert matters more than its details
            log.exception("alert events: could not add event details to a notification")
        await self.notifier.notify(channels, subject=subject, message=message, priority=priority, key=key)


def _budget(window: str, metric: str, used: int, limit: int) -> str:
    period = {"hour": "hourly", "day": "daily"}.get(window, window)
    if metric == "usd_micros":
        return f"{period} USD budget (${used / 1e6:,.2f} of ${limit / 1e6:,.2f})"
    return f"{period} {metric} budget ({used:,} of {limit:,})"


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
