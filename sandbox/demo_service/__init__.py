"""A demo service with fault injection: "the app Vercel deploys", for incident scenarios.

Whichever deployment production of a project points to in the Vercel emulator is the version served, and a
version may carry a fault (error spike, latency, crash loop, memory leak, disk fill, dependency down); faults
can also be injected at run time. The service writes JSON log lines to a file, serves Prometheus /metrics
and /health, and takes the agent's remediations: a rollback on Vercel, or a restart or disk cleanup through
`python -m sandbox.demo_service.ctl`. `LoadGenerator` puts steady load on it and counts what fails.

Names load on first use, so `ctl` (a subprocess per agent command) imports no server code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.demo_service.load import LoadGenerator, LoadStats
    from sandbox.demo_service.process import Fault, FaultKind
    from sandbox.demo_service.service import DemoService, create_app

__all__ = ["DemoService", "Fault", "FaultKind", "LoadGenerator", "LoadStats", "create_app"]

_MODULES = {
    "DemoService": "service", "create_app": "service", "Fault": "process", "FaultKind": "process",
    "LoadGenerator": "load", "LoadStats": "load",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
