"""Root-cause hints: known failure signatures (a data file) and what deployments happened just before."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from ops_agent.errors import ConfigError

__all__ = ["HINT_WINDOW_S", "DeploymentEvent", "Signature", "SignatureMatch", "deployment_hints", "load_signatures", "match_signatures"]


HINT_WINDOW_S = 1800.0  # a deployment this long before an onset is named as a possible cause


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    category: str
    pattern: re.Pattern[str]  # the entry's patterns as one alternation
    recommendation: str


@dataclass(frozen=True, slots=True)
class SignatureMatch:
    signature: Signature
    count: int
    example: str


@dataclass(frozen=True, slots=True)
class DeploymentEvent:
    deployment: str  # id or URL
    project: str
    environment: str
    at: float  # when it reached that environment (Unix seconds)
    action: str = "deploy"


def load_signatures(extra: Path | None = None) -> list[Signature]:
    """The built-in signatures, then those of `extra` (a YAML list; same name replaces a built-in)."""
    builtin = resources.files("ops_agent.tools.logs.analysis").joinpath("signatures.yaml").read_text()
    entries = {entry["name"]: entry for entry in _entries(builtin, "signatures.yaml")}
    if extra is not None:
        try:
            text = extra.expanduser().read_text()
        except OSError as exc:
            raise ConfigError(f"logs.signatures_file: cannot read {extra}: {exc.strerror}") from None
        entries.update({entry["name"]: entry for entry in _entries(text, str(extra))})
    return [
        Signature(
            name=entry["name"],
            category=entry.get("category", "other"),
            pattern=re.compile("|".join(f"(?:{p})" for p in entry["patterns"]), re.IGNORECASE),
            recommendation=entry["recommendation"],
        )
        for entry in entries.values()
    ]


def _entries(text: str, source: str) -> list[dict]:
    try:
        data = yaml.safe_load(text) or []
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, list):
        raise ConfigError(f"{source}: expected a list of signatures")
    for index, entry in enumerate(data):
        where = f"{source}: signature {index + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping with name, patterns and recommendation")
        for key in ("name", "recommendation"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"{where}: {key!r} is missing or not text")
        patterns = entry.get("patterns")
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"{where} ({entry['name']}): 'patterns' must be a non-empty list of regexes")
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{where} ({entry['name']}): bad pattern {pattern!r}: {exc}") from None
    return data


def match_signatures(messages: Iterable[str], signatures: Sequence[Signature]) -> list[SignatureMatch]:
    """Which signatures the messages show, most frequent first; each message counts for its first match."""
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    for message in messages:
        for signature in signatures:
            if signature.pattern.search(message):
                counts[signature.name] = counts.get(signature.name, 0) + 1
                examples.setdefault(signature.name, message[:300])
                break
    by_name = {s.name: s for s in signatures}
    return [
        SignatureMatch(by_name[name], count, examples[name])
        for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def deployment_hints(
    onset: float, deployments: Iterable[DeploymentEvent], *, window_s: float = HINT_WINDOW_S
) -> list[str]:
    """One line per deployment that reached an environment within `window_s` before the onset, nearest first."""
    before = sorted(
        (d for d in deployments if onset - window_s <= d.at <= onset + 5), key=lambda d: onset - d.at
    )
    return [
        f"errors began {_ago(onset - d.at)} after {d.action} {d.deployment} of {d.project} "
        f"reached {d.environment}"
        for d in before
    ]


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
