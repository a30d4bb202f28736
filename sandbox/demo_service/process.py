"""The simulated process behind the demo service: the version it runs, its faults, its memory and disk, its log.

Nothing is really allocated or written: memory and disk are numbers advanced from the elapsed time whenever
the process is looked at (a request, a scrape, an admin call), so a leak or a filling disk is cheap and
repeatable. The version running is whatever deployment production of the project points to in the Vercel
emulator's `State`, so a deploy or a rollback there changes what this process serves, and the fault its git
ref carries (`versions`) with it. Every method takes one lock: the server thread and a scenario runner's
thread both call in.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from sandbox.vercel import State

__all__ = ["Fault", "FaultKind", "Outcome", "Process"]

FaultKind = Literal["error_spike", "latency", "crash_loop", "memory_leak", "disk_fill", "dependency_down"]
PROCESS_LOCAL = frozenset({"error_spike", "latency", "crash_loop", "memory_leak"})  # what a restart clears
BASELINE_MEMORY_MB = 120.0
DISK_TOTAL_MB = 10 * 1024.0
BASELINE_DISK_MB = 0.3 * DISK_TOTAL_MB
MB = 1024 * 1024

OOM_MESSAGE = "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"
CRASH_MESSAGES = (
    "Unhandled exception during startup: Error: Cannot find module './config/production.json'",
    "Error: Runtime exited with error: exit status 1",
)
SPIKE_MESSAGE = "TypeError: Cannot read properties of undefined (reading 'id') at handler (/var/task/api/work.js:42:17)"


class Fault(BaseModel):
    """One thing wrong with the service; only the parameters of its `kind` matter."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    error_rate: float = Field(0.5, ge=0, le=1, description="error_spike: share of /work requests answered 500.")
    latency_ms: float = Field(800, ge=0, description="latency: how long /work takes (±10%).")
    leak_mb_per_s: float = Field(40, ge=0, description="memory_leak: growth of resident memory.")
    fill_mb_per_s: float = Field(200, ge=0, description="disk_fill: growth of disk usage.")
    dependency: str = Field("db", description="dependency_down: the dependency that refuses connections.")


@dataclass
class Outcome:
    """What the process does with one request: the answer, how long it takes, what it logs as errors."""

    status: int
    body: dict[str, Any]
    delay_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


class Process:
    """The demo app as deployed: thread-safe; every public method first advances the simulation to now."""

    def __init__(
        self, state: State, *, project: str, log_path: Path, versions: Mapping[str, Fault | None] | None,
        service: str, seed: int, memory_limit_mb: float, clock: Callable[[], float],
    ) -> None:
        state.production_deployment(project)  # an unknown project fails here (KeyError), not on every request
        self._state, self.project, self.service = state, project, service
        self.log_path = log_path
        self.versions = dict(versions or {})
        self.memory_limit_mb = memory_limit_mb
        self._clock = clock
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._runtime: dict[str, Fault] = {}
        self._serving: tuple[str, str | None] | None = None  # (deployment id, git ref)
        self._memory_mb = BASELINE_MEMORY_MB
        self._disk_mb = BASELINE_DISK_MB
        self._oom = False
        self._last = clock()
        self.restarts = 0
        self.requests: Counter[tuple[str, int]] = Counter()
        log_path.parent.mkdir(parents=True, exist_ok=True)

    # -- requests ------------------------------------------------------------------------------------------

    def work(self) -> Outcome:
        """GET /work: the request the load generator sends; it writes an upload to disk."""
        with self._lock:
            self._advance()
            down = self._down()
            if down is not None:
                return down
            faults = self._faults()
            latency = faults.get("latency")
            if latency is not None:
                delay = latency.latency_ms / 1000 * self._rng.uniform(0.9, 1.1)
            else:
                delay = self._rng.uniform(0.005, 0.025)
            error = None
            spike = faults.get("error_spike")
            if self._disk_mb >= DISK_TOTAL_MB:
                upload = self._rng.getrandbits(32)
                error = f"OSError: [Errno 28] No space left on device: '/var/tmp/demo/upload-{upload:08x}'"
            elif "dependency_down" in faults:
                name = faults["dependency_down"].dependency
                error = f"Error: connect ECONNREFUSED 10.0.0.5:5432 (database {name})"
            elif spike is not None and self._rng.random() < spike.error_rate:
                error = SPIKE_MESSAGE
            if error is not None:
                return Outcome(500, {"error": "Internal Server Error"}, delay, [error])
            return Outcome(200, {"ok": True, "version": self._serving and self._serving[1]}, delay)

    def health(self) -> Outcome:
        with self._lock:
            self._advance()
            down = self._down()
            if down is not None:
                return down
            faults = self._faults()
            if self._disk_mb >= DISK_TOTAL_MB:
                return Outcome(503, {"status": "down", "error": "disk full"})
            if "dependency_down" in faults:
                name = faults["dependency_down"].dependency
                return Outcome(503, {"status": "degraded", "dependency": name, "error": "connection refused"})
            deployment, ref = self._serving  # type: ignore[misc]  (_down answered when nothing runs)
            return Outcome(200, {"status": "ok", "version": ref, "deployment": deployment})

    def finish(self, method: str, path: str, outcome: Outcome, duration_ms: float) -> None:
        """Count an answered request and log it: its error lines, then its access line."""
        with self._lock:
            self.requests[(path, outcome.status)] += 1
            for message in outcome.errors:
                self._log("error", message)
            level = "error" if outcome.status >= 500 else "warning" if outcome.status >= 400 else "info"
            self._log(
                level, f"{method} {path} {outcome.status}", method=method, path=path, status=outcome.status,
                duration_ms=round(duration_ms, 1),
            )

    # -- what the scenario and the agent's commands do ----------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """A run-time fault, whatever version runs; replaces one of the same kind."""
        with self._lock:
            self._advance()
            self._runtime[fault.kind] = fault

    def clear(self, kind: str | None = None) -> None:
        with self._lock:
            self._advance()
            if kind is None:
                self._runtime.clear()
            else:
                self._runtime.pop(kind, None)

    def restart(self) -> dict[str, Any]:
        """A process restart: clears process-local state; disk and outside dependencies stay as they are."""
        with self._lock:
            self._advance()
            self._log("info", "received SIGTERM, shutting down")
            for kind in PROCESS_LOCAL:
                self._runtime.pop(kind, None)
            self.restarts += 1
            self._boot()
            return self._snapshot()

    def free_disk(self) -> dict[str, Any]:
        """Deletes temp files: disk usage back to its baseline, and a run-time disk_fill stops."""
        with self._lock:
            self._advance()
            freed = max(0.0, self._disk_mb - BASELINE_DISK_MB)
            self._disk_mb = BASELINE_DISK_MB
            self._runtime.pop("disk_fill", None)
            self._log("info", f"cleanup: removed temp files under /var/tmp/demo, freed {freed:.0f} MB")
            return {"freed_mb": round(freed, 1), **self._snapshot()}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._advance()
            return self._snapshot()

    def request_counts(self) -> dict[tuple[str, int], int]:
        """Answered requests by (path, status)."""
        with self._lock:
            return dict(self.requests)

    # -- rules (callers hold the lock) ---------------------------------------------------------------------

    def _advance(self) -> None:
        """Follow production on Vercel, then grow memory and disk by the time elapsed since the last look."""
        now = self._clock()
        elapsed, self._last = max(0.0, now - self._last), now
        serving = self._state.production_deployment(self.project)
        if serving != self._serving:  # a new deployment runs on fresh instances
            self._serving = serving
            self._boot()
        faults = self._faults()
        leak = faults.get("memory_leak")
        if leak is not None and self._running() and not self._oom:
            self._memory_mb += leak.leak_mb_per_s * elapsed
            if self._memory_mb >= self.memory_limit_mb:
                self._oom = True
                self._log("error", f"{OOM_MESSAGE} (rss {self._memory_mb:.0f} MB, limit {self.memory_limit_mb:.0f} MB)")
        fill = faults.get("disk_fill")
        if fill is not None:
            self._disk_mb = min(DISK_TOTAL_MB, self._disk_mb + fill.fill_mb_per_s * elapsed)

    def _boot(self) -> None:
        self._memory_mb, self._oom = BASELINE_MEMORY_MB, False
        if self._serving is None:
            self._log("info", f"starting {self.service} (no production deployment)")
            return
        deployment, ref = self._serving
        self._log("info", f"starting {self.service} (version {ref}, deployment {deployment})")
        if "crash_loop" not in self._faults():
            self._log("info", f"{self.service} listening on port 3000")

    def _faults(self) -> dict[str, Fault]:
        """Active faults by kind: the running version's, overridden by run-time ones."""
        version_fault = self.versions.get(self._serving[1] or "") if self._serving else None
        return ({version_fault.kind: version_fault} if version_fault else {}) | self._runtime

    def _running(self) -> bool:
        return self._serving is not None and "crash_loop" not in self._faults()

    def _down(self) -> Outcome | None:
        """The answer when no process can serve: nothing deployed, a crash at start, or after an OOM kill."""
        if self._serving is None:
            body = {"error": {"code": "DEPLOYMENT_NOT_FOUND", "message": "The deployment could not be found."}}
            return Outcome(503, body, headers={"x-vercel-error": "DEPLOYMENT_NOT_FOUND"})
        if "crash_loop" in self._faults():
            errors = list(CRASH_MESSAGES)
        elif self._oom:
            errors = ["Error: Runtime exited with error: signal: killed (JavaScript heap out of memory)"]
        else:
            return None
        body = {"error": {"code": "FUNCTION_INVOCATION_FAILED", "message": "A server error has occurred."}}
        return Outcome(500, body, errors=errors, headers={"x-vercel-error": "FUNCTION_INVOCATION_FAILED"})

    def _snapshot(self) -> dict[str, Any]:
        deployment, ref = self._serving or (None, None)
        version_fault = self.versions.get(ref or "")
        return {
            "service": self.service,
            "project": self.project,
            "deployment": deployment,
            "version": ref,
            "up": self._running() and not self._oom,
            "oom_killed": self._oom,
            "faults": {kind: fault.model_dump() for kind, fault in self._faults().items()},
            "version_fault": version_fault.kind if version_fault else None,
            "runtime_faults": sorted(self._runtime),
            "memory_mb": round(self._memory_mb, 1),
            "memory_limit_mb": self.memory_limit_mb,
            "disk_used_mb": round(self._disk_mb, 1),
            "disk_total_mb": DISK_TOTAL_MB,
            "disk_used_ratio": round(self._disk_mb / DISK_TOTAL_MB, 4),
            "restarts": self.restarts,
            "requests": {f"{path} {status}": n for (path, status), n in sorted(self.requests.items())},
        }

    def _log(self, level: str, message: str, **fields: Any) -> None:
        """Append one JSON line, closed at once: the agent tails the file and sees every line when written."""
        deployment, ref = self._serving or (None, None)
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "service": self.service,
            "message": message,
            **fields,
            "deployment": deployment,
            "version": ref,
        }
        with self.log_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
