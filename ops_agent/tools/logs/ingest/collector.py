"""Collection: every source (files, stdin, HTTP, Vercel) hands records here; they are scrubbed and written.

Secrets are redacted right after parsing, before anything is stored, so they never reach the index, a
search result or a prompt; after parsing, because what parsing decodes (JSON escapes, quoting) is what is
stored and shown. Text is made storable (no lone surrogates) and times plausible (1970..2100; else the time
the line arrived, the original kept as `original_time`).

Writes are group-committed: a caller's records are written before its `write` returns (nothing accepted is
lost), and callers arriving while a write is in progress share the next one, so a thousand small HTTP
posts cost a few transactions, not a thousand.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path

from ops_agent.redact import Redactor
from ops_agent.tools.logs.index.store import LogStore
from ops_agent.tools.logs.ingest.follow import FileFollower, OffsetFile
from ops_agent.tools.logs.ingest.parse import parse_line, without_surrogates
from ops_agent.tools.logs.record import LogRecord

__all__ = ["LogCollector"]

log = logging.getLogger(__name__)

Observer = Callable[[Sequence[LogRecord]], None]


class LogCollector:
    def __init__(
        self,
        store: LogStore,
        redactor: Redactor,
        *,
        batch_size: int = 2000,
        observers: Sequence[Observer] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.redactor = redactor
        self.batch_size = batch_size
        self.observers = list(observers)
        self.clock = clock
        self.written = 0
        self._pending: list[tuple[list[LogRecord], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    def scrub(self, record: LogRecord, *, parsed: bool = False) -> LogRecord:
        """Redact secrets, make text storable (parse_line already has) and the time plausible, in place."""
        record.message = self.redactor.text(record.message if parsed else without_surrogates(record.message))
        if record.attributes:
            record.attributes = self.redactor.value(record.attributes if parsed else without_surrogates(record.attributes))
        if not _EARLIEST <= record.time <= _LATEST:  # NaN fails both
            record.attributes = {**record.attributes, "original_time": str(record.time)}
            record.time = self.clock()
        return record

    def parse_lines(
        self, lines: Iterable[str], *, service: str = "", host: str = "", attributes: dict | None = None
    ) -> list[LogRecord]:
        """Redacted records of raw lines."""
        received = self.clock()
        records = []
        for line in lines:
            record = parse_line(line, service=service, host=host, received=received)
            if attributes:
                record.attributes = {**attributes, **record.attributes}
            records.append(self.scrub(record, parsed=True))
        return records

    async def write(self, records: Iterable[LogRecord], *, scrubbed: bool = False) -> int:
        """Store `records` (scrubbed here unless `scrubbed`); returns once they are committed."""
        batch = list(records) if scrubbed else [self.scrub(record) for record in records]
        if not batch:
            return 0
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await done
        return len(batch)

    async def write_new(self, records: Iterable[LogRecord], *, scrubbed: bool = False) -> tuple[int, int]:
        """`write` the records whose keys are not stored yet, and each key once: (written, duplicates). Keeping
        repeats out here keeps them out of the answer's count and of the log-derived metrics; two writers
        racing past this check are still stored once (the store's unique key)."""
        batch = list(records)
        keys = [record.key for record in batch if record.key is not None]
        seen = await self.store.known_keys(keys) if keys else set()
        fresh = []
        for record in batch:
            if record.key is None or record.key not in seen:
                fresh.append(record)
                if record.key is not None:
                    seen.add(record.key)
        return await self.write(fresh, scrubbed=scrubbed), len(batch) - len(fresh)

    async def write_lines(
        self, lines: Iterable[str], *, service: str = "", host: str = "", attributes: dict | None = None
    ) -> int:
        records = self.parse_lines(lines, service=service, host=host, attributes=attributes)
        return await self.write(records, scrubbed=True)

    async def _drain(self) -> None:
        while self._pending:
            waiting, self._pending = self._pending, []
            try:
                await self._append([record for batch, _ in waiting for record in batch])
            except Exception:
                # One caller's bad batch must not fail the others that shared the transaction: alone now.
                for batch, done in waiting:
                    try:
                        await self._append(batch)
                    except Exception as exc:
                        done.set_exception(exc)
            for _, done in waiting:
                if not done.done():
                    done.set_result(None)

    async def _append(self, records: list[LogRecord]) -> None:
        await self.store.append(records)  # one transaction: all of them or none, so a retry can't duplicate
        self.written += len(records)
        for observe in self.observers:
            try:
                observe(records)
            except Exception:
                log.exception("log observer failed")

    async def ingest_chunks(self, chunks: AsyncIterator[bytes], *, service: str = "", host: str = "") -> int:
        """Store the lines of a byte stream (stdin, a socket) as they arrive; returns how many were stored.

        Chunks are whatever the source has ready (`read1`), so a slow pipe is written line by line and a
        file in batches of `batch_size`. One batch is written while the next is parsed."""
        total = 0
        tail = b""
        writing: asyncio.Task[int] | None = None

        async def handoff(lines: list[bytes]) -> None:
            nonlocal total, writing
            decoded = [line.decode("utf-8", errors="replace") for line in lines if line.strip()]
            records = self.parse_lines(decoded, service=service, host=host)
            if writing is not None:
                total += await writing
            writing = asyncio.create_task(self.write(records, scrubbed=True))

        try:
            async for chunk in chunks:
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                if len(tail) > MAX_LINE_BYTES:  # a line that never ends is stored in pieces, not buffered forever
                    lines.append(tail)
                    tail = b""
                for start in range(0, len(lines), self.batch_size):
                    await handoff(lines[start : start + self.batch_size])
            await handoff([tail])
        finally:
            if writing is not None:
                total += await writing
        return total

    async def follow_files(
        self, follower: FileFollower, services: dict[str, str] | None = None, offsets: OffsetFile | None = None
    ) -> None:
        """Collect from followed files until cancelled. `services` maps a glob pattern to its service name;
        `offsets` records, after each stored batch, how far each file has been stored."""
        async for batch in follower.follow():
            by_path: dict[str, list[str]] = {}
            for path, line in batch:
                by_path.setdefault(path, []).append(line)
            for path, lines in by_path.items():
                service = _service_for(path, services or {})
                delay_s = 0.5
                while True:  # the follower has moved past these lines: retry rather than drop them
                    try:
                        await self.write_lines(lines, service=service, attributes={"file": path})
                        break
                    except Exception:
                        log.exception("could not store %d lines from %s; retrying in %.1f s", len(lines), path, delay_s)
                        await asyncio.sleep(delay_s)
                        delay_s = min(delay_s * 2, 30.0)
            if offsets is not None:
                try:
                    offsets.save(follower.offsets)
                except OSError:
                    log.exception("could not save file offsets to %s", offsets.path)


MAX_LINE_BYTES = 1 << 20
_EARLIEST, _LATEST = 0.0, 4_102_444_800.0  # 1970-01-01 .. 2100-01-01
def _service_for(path: str, services: dict[str, str]) -> str:
    for pattern, service in services.items():
        if service and fnmatch.fnmatch(path, str(Path(pattern).expanduser())):
            return service
    return Path(path).stem.split(".")[0]
