"""Scrape targets: Prometheus text-format /metrics endpoints read into ops-agent's own series store.

Many services already expose their figures for Prometheus. Reading them here puts them next to the host
and health series, so queries, custom metrics and alert rules use them without a Prometheus server.

Each target (`monitoring.scrape`) is read on its own interval by its own task, so a slow one never delays
the others. Every sample gets the target's name as its `job` label (a sample's own `job` is kept as
`exported_job`, as Prometheus does) and the scrape's start as its timestamp. Per target, Prometheus's
synthetic series are written too: `up` (1 or 0), `scrape_duration_seconds` and `scrape_samples_scraped`.
NaN and infinite values are skipped; samples the series store would refuse are skipped and counted; the
body is capped at `max_body_bytes` and a scrape at `max_samples` samples. Logs name a URL only as
`scheme://host:port/path`: its query string and credentials may hold a token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from ops_agent.config import ScrapeTarget
from ops_agent.tools.monitoring.series import SeriesStore, checked_name, labels_of

__all__ = ["ScrapeResult", "Scraper"]

log = logging.getLogger(__name__)

ACCEPT = {"Accept": "text/plain;version=0.0.4"}
MAX_BODY_BYTES = 10_000_000
MAX_SAMPLES = 50_000


@dataclass(frozen=True)
class ScrapeResult:
    target: str
    ok: bool
    samples: int = 0  # written
    skipped: int = 0  # refused by the series store's name and label rules (NaN is skipped, not counted)
    dropped: int = 0  # over `max_samples`
    error: str | None = None


@dataclass
class _Read:
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    scraped: int = 0
    skipped: int = 0
    dropped: int = 0
    refused: str | None = None  # why the first skipped sample was refused


class _Failed(Exception):
    """A scrape that counts as down; the message says why."""


class Scraper:
    def __init__(
        self,
        targets: Sequence[ScrapeTarget],
        series: SeriesStore,
        http: httpx2.AsyncClient,
        clock: Callable[[], float] = time.time,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_samples: int = MAX_SAMPLES,
    ) -> None:
        names = [target.name for target in targets]
        if dupes := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"duplicate scrape target names: {', '.join(dupes)}")
        self.targets = list(targets)
        self.series, self.http, self.clock = series, http, clock
        self.max_body_bytes, self.max_samples = max_body_bytes, max_samples
        self.last: dict[str, ScrapeResult] = {}  # each target's latest result

    async def run(self) -> None:
        """Scrape every target on its own interval, forever (cancel to stop; returns at once without targets)."""
        async with asyncio.TaskGroup() as group:
            for target in self.targets:
                group.create_task(self._loop(target), name=f"scrape-{target.name}")

    async def _loop(self, target: ScrapeTarget) -> None:
        due = time.monotonic()
        while True:
            try:
                await self.scrape_once(target)
            except Exception:  # a store that refuses a write, a bug: the next round may do better
                log.exception("scrape of %s failed unexpectedly", target.name)
            due = max(due + target.interval_s, time.monotonic())  # an overrun skips rounds, never bunches them
            await asyncio.sleep(due - time.monotonic())

    async def scrape_once(self, target: ScrapeTarget) -> ScrapeResult:
        """Read `target` once and write its samples and its `up`/`scrape_*` series."""
        ts, started = self.clock(), time.monotonic()
        written, read, error = 0, _Read(), None
        try:
            read = await self._read(target)
            if read.samples:
                try:
                    await self.series.record_many((name, labels, ts, value) for name, labels, value in read.samples)
                    written = len(read.samples)
                except ValueError as exc:  # e.g. a full in-memory store: the target is up, its samples are lost
                    read.skipped += len(read.samples)
                    read.refused = str(exc)
        except _Failed as exc:
            error = _scrubbed(str(exc), target.url)
        duration = time.monotonic() - started
        result = ScrapeResult(target.name, error is None, written, read.skipped, read.dropped, error)
        self._report(target, result, read.refused)
        job = {"job": target.name}
        await self.series.record_many([
            ("up", job, ts, 0.0 if error else 1.0),
            ("scrape_duration_seconds", job, ts, duration),
            ("scrape_samples_scraped", job, ts, float(read.scraped)),
        ])
        return result

    async def _read(self, target: ScrapeTarget) -> _Read:
        try:
            async with asyncio.timeout(target.timeout_s):
                async with self.http.stream(
                    "GET", target.url, headers=ACCEPT, timeout=target.timeout_s, follow_redirects=False
                ) as response:
                    if not response.is_success:
                        raise _Failed(f"HTTP {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_body_bytes:
                            raise _Failed(f"the body is larger than {self.max_body_bytes} bytes")
        except (TimeoutError, httpx2.TimeoutException):
            raise _Failed(f"no answer within {target.timeout_s:g} s") from None
        except httpx2.ConnectError:
            raise _Failed("ConnectError: connection refused or host unreachable") from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:  # their messages may hold the URL: type only
            raise _Failed(f"{type(exc).__name__}: the request failed") from None
        text = body.decode("utf-8", errors="replace")
        try:
            return await asyncio.to_thread(_parse, text, target.name, self.max_samples)
        except Exception as exc:  # noqa: BLE001 (the parser raises ValueError, and rarely IndexError, on bad input)
            raise _Failed(f"unparsable body ({type(exc).__name__}: {str(exc)[:80]})") from None

    def _report(self, target: ScrapeTarget, result: ScrapeResult, refused: str | None) -> None:
        """Log changes only: up to down and back, and the first scrape that skips or drops samples."""
        before = self.last.get(target.name) or ScrapeResult(target.name, ok=True)
        self.last[target.name] = result
        where = _safe_url(target.url)
        if before.ok and not result.ok:
            log.warning("scrape target %s (%s) is down: %s", target.name, where, result.error)
        elif result.ok and not before.ok:
            log.warning("scrape target %s (%s) is up again", target.name, where)
        if result.skipped and not before.skipped:
            log.warning("scrape target %s: %d samples skipped; the first: %s", target.name, result.skipped, refused)
        if result.dropped and not before.dropped:
            log.warning(
                "scrape target %s exposes more than %d samples; %d were dropped",
                target.name, self.max_samples, result.dropped,
            )


def _parse(text: str, job: str, limit: int) -> _Read:
    read = _Read()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            read.scraped += 1
            if not math.isfinite(sample.value):
                continue
            if len(read.samples) >= limit:
                read.dropped += 1
                continue
            labels = dict(sample.labels)
            if "job" in labels:
                labels["exported_job"] = labels.pop("job")
            labels["job"] = job
            try:
                checked_name(sample.name)  # the store's own rules, so one bad sample cannot sink the batch
                labels_of(labels)
            except ValueError as exc:
                read.skipped += 1
                read.refused = read.refused or str(exc)
                continue
            read.samples.append((sample.name, labels, float(sample.value)))
    return read


def _safe_url(url: str) -> str:
    """`scheme://host:port/path`: no credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def _scrubbed(text: str, url: str) -> str:
    """`text` without the URL's query string or credentials, should a body or an error repeat them."""
    parts = urlsplit(url)
    secrets = [parts.query, parts.password, parts.username, *(value for _, value in parse_qsl(parts.query))]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        if len(secret) >= 4:  # shorter is no secret, and replacing it would garble the text
            text = text.replace(secret, "***")
    return text
