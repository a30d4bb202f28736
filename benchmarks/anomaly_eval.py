"""Log anomaly detection, side by side in one run.

1. Window primitives (`volume_anomalies`, `novel_templates`, `rate_jumps`) on a synthetic stream with
   no faults: several services × severities, templates with Zipf-like shares, Poisson counts, a slow
   diurnal drift and random multiplicative noise. The false-positive rate is the share of windows
   with any anomaly. Then faults are injected into the same stream (a 5× error spike, a new error
   template with 20 lines, a template whose rate jumps 10×, a service's info lines stopping) and the
   catch rate is measured, by how busy the target was.
2. `SessionModel` against the plain n-gram novelty baseline (n=2 and n=3, start/end padded) on
   DeepLog's HDFS sessions. Training uses the first 20/50/80% of `hdfs_train` (chronological). The
   remaining normal sessions measure false positives, and all of `hdfs_test_abnormal` measures
   detection. The same comparison is repeated on a seeded random split. F1 here is on this split
   only: positives are the majority, so it is not comparable with published HDFS F1 (553,366 normal
   vs 16,838 abnormal test sessions).

    python benchmarks/anomaly_eval.py [--hdfs-dir ../shared/data/hdfs-anomaly] [--windows 500] [--seeds 5]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ops_agent.tools.logs.anomaly import (  # noqa: E402
    Anomaly,
    SessionModel,
    novel_templates,
    rate_jumps,
    volume_anomalies,
)
from ops_agent.tools.logs.record import SEVERITIES  # noqa: E402

DEFAULT_HDFS_DIR = REPO.parent / "shared/data/hdfs-anomaly"
HISTORY_WINDOWS = 12  # an hour of 5-minute windows as the baseline, as the product queries it
WINDOW_S = 300.0


# ---------------------------------------------------------------------------------------------
# Synthetic no-fault stream


@dataclass(frozen=True)
class StreamConfig:
    services: tuple[str, ...] = ("api", "web", "db", "auth", "worker", "billing")
    templates_per_service: int = 80
    zipf_s: float = 1.1  # template shares ∝ 1/rank^s within a service
    lines_per_window: tuple[float, float] = (150.0, 4000.0)  # per-service mean, drawn log-uniformly
    diurnal_amplitude: float = 0.35  # ±35% over a day
    day_windows: int = 288  # 5-minute windows per day
    service_noise: float = 0.15  # lognormal sigma of a whole service's volume, per window
    template_noise: float = 0.10  # lognormal sigma of each template, per window
    # Severity mix of templates (not of lines: head templates are mostly info/debug, see below).
    severity_weights: tuple[float, ...] = (0.2, 0.5, 0.08, 0.12, 0.09, 0.01)


@dataclass(frozen=True)
class Template:
    text: str
    service: str
    severity: str
    rate: float  # mean lines per window before drift and noise


@dataclass
class Window:
    counts: Counter[str]  # template text -> lines
    rates: dict[str, float]  # template text -> the Poisson mean it was drawn from
    volumes: dict[str, float]  # service/severity -> lines


@dataclass
class SyntheticStream:
    """A steady log stream with no faults. Windows are drawn in order and are reproducible per seed."""

    seed: int
    config: StreamConfig = field(default_factory=StreamConfig)
    templates: list[Template] = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        cfg = self.config
        self.templates = []
        low, high = cfg.lines_per_window
        for service in cfg.services:
            volume = math.exp(rng.uniform(math.log(low), math.log(high)))
            weights = [1 / (rank + 1) ** cfg.zipf_s for rank in range(cfg.templates_per_service)]
            total = sum(weights)
            for rank, weight in enumerate(weights):
                # The busiest templates are routine (debug/info); warnings and errors live in the tail.
                severity = rng.choices(SEVERITIES, cfg.severity_weights)[0] if rank >= 5 else rng.choice(("debug", "info"))
                text = f"{service} {severity} event-{rank:03d} op=<*> took <*>ms seed{self.seed}"
                self.templates.append(Template(text, service, severity, volume * weight / total))
        self._rng = random.Random(self.seed * 7919 + 1)
        self._phase = rng.uniform(0, 2 * math.pi)

    def windows(self, count: int) -> list[Window]:
        cfg, rng = self.config, self._rng
        out = []
        for t in range(count):
            drift = 1 + cfg.diurnal_amplitude * math.sin(2 * math.pi * t / cfg.day_windows + self._phase)
            service_factor = {s: rng.lognormvariate(0, cfg.service_noise) for s in cfg.services}
            counts: Counter[str] = Counter()
            rates = {}
            for tpl in self.templates:
                rate = tpl.rate * drift * service_factor[tpl.service] * rng.lognormvariate(0, cfg.template_noise)
                rates[tpl.text] = rate
                n = poisson(rng, rate)
                if n:
                    counts[tpl.text] = n
            out.append(Window(counts, rates, self.volumes(counts)))
        return out

    def volumes(self, counts: Counter[str]) -> dict[str, float]:
        """service/severity -> lines, the shape `volume_anomalies` gets from the log store."""
        out: Counter[str] = Counter()
        for text, n in counts.items():
            service, severity, _ = text.split(" ", 2)  # injected templates follow the same pattern
            out[f"{service}/{severity}"] += n
        return dict(out)


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:  # normal approximation; exact enough for a test stream and O(1)
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


@dataclass
class WindowCheck:
    """Everything the primitives report for one window under test."""

    volume: list[Anomaly]
    novel: list[Anomaly]
    jumps: list[Anomaly]

    @property
    def any(self) -> bool:
        return bool(self.volume or self.novel or self.jumps)


def check_window(stream: SyntheticStream, history: Sequence[Window], current: Counter[str]) -> WindowCheck:
    """Run the three primitives the way the product does: the previous windows are the baseline."""
    vols = [w.volumes for w in history]
    keys = {key for v in vols for key in v}
    vol_history = {key: [v.get(key, 0) for v in vols] for key in keys}
    baseline: Counter[str] = Counter()
    for w in history:
        baseline.update(w.counts)
    return WindowCheck(
        volume=volume_anomalies(vol_history, stream.volumes(current), window_label="5m"),
        novel=novel_templates(baseline, current),
        jumps=rate_jumps(baseline, WINDOW_S * len(history), current, WINDOW_S),
    )


def no_fault_rates(seeds: Sequence[int], windows: int) -> dict:
    """Share of windows (after the first hour) with any anomaly, per kind and overall."""
    flagged = Counter()
    total = 0
    worst: Counter[str] = Counter()  # largest score seen per kind
    for seed in seeds:
        stream = SyntheticStream(seed)
        ws = stream.windows(windows + HISTORY_WINDOWS)
        for t in range(HISTORY_WINDOWS, len(ws)):
            result = check_window(stream, ws[t - HISTORY_WINDOWS:t], ws[t].counts)
            total += 1
            for name, found in (("volume", result.volume), ("novel", result.novel), ("rate_jump", result.jumps)):
                flagged[name] += bool(found)
            flagged["any"] += result.any
    return {"windows": total, **{name: flagged[name] for name in ("volume", "novel", "rate_jump", "any")}}


def fault_catch_rates(seeds: Sequence[int], trials: int) -> dict[str, dict[str, tuple[int, int]]]:
    """Inject one fault per trial into a no-fault window; per fault kind and busyness bucket: (caught, tried)."""
    out: dict[str, dict[str, list[int]]] = {
        "error_spike_5x": {}, "new_error_template_20": {}, "rate_jump_10x": {}, "info_lines_stop": {},
    }

    def tally(kind: str, bucket: str, caught: bool) -> None:
        cell = out[kind].setdefault(bucket, [0, 0])
        cell[0] += caught
        cell[1] += 1

    for seed in seeds:
        stream = SyntheticStream(seed)
        ws = stream.windows(trials + HISTORY_WINDOWS)
        rng = random.Random(seed + 10_000)
        for t in range(HISTORY_WINDOWS, len(ws)):
            history, window = ws[t - HISTORY_WINDOWS:t], ws[t]
            # 5× error spike: a service's error templates log 4× their mean on top of the usual.
            service = rng.choice(stream.config.services)
            errors = [tpl for tpl in stream.templates if tpl.service == service and tpl.severity == "error"]
            if errors:
                counts = Counter(window.counts)
                for tpl in errors:
                    counts[tpl.text] += poisson(rng, 4 * window.rates[tpl.text])
                found = check_window(stream, history, counts).volume
                usual = sum(window.rates[tpl.text] for tpl in errors)
                tally("error_spike_5x", _bucket(usual, (2, 5, 20)),
                      any(a.kind == "volume_spike" and a.key == f"{service}/error" for a in found))
            # A new error template with 20 lines.
            counts = Counter(window.counts)
            text = f"{service} error NEW failure <*> in handler <*> trial{t}"
            counts[text] += 20
            found = check_window(stream, history, counts).novel
            tally("new_error_template_20", "all", any(a.key == text for a in found))
            # One template's rate jumps 10×: 9× its mean on top of the usual.
            tpl = rng.choice(stream.templates)
            rate = window.rates[tpl.text]
            counts = Counter(window.counts)
            counts[tpl.text] += poisson(rng, 9 * rate)
            found = check_window(stream, history, counts).jumps
            tally("rate_jump_10x", _bucket(rate, (0.5, 2, 5)), any(a.key == tpl.text for a in found))
            # A service's info lines stop altogether (its other severities carry on).
            infos = {t.text for t in stream.templates if t.service == service and t.severity == "info"}
            counts = Counter({text: n for text, n in window.counts.items() if text not in infos})
            found = check_window(stream, history, counts).volume
            usual = sum(window.rates[text] for text in infos)
            tally("info_lines_stop", _bucket(usual, (20, 100, 500)),
                  any(a.kind == "volume_drop" and a.key == f"{service}/info" for a in found))
    return {kind: {b: (c[0], c[1]) for b, c in sorted(cells.items(), key=_bucket_order)} for kind, cells in out.items()}


def _bucket(value: float, edges: Sequence[float]) -> str:
    for low, high in zip((0, *edges), edges):
        if value < high:
            return f"{low:g}–{high:g}/window"
    return f"≥{edges[-1]:g}/window"


def _bucket_order(item: tuple[str, list[int]]) -> float:
    label = item[0]
    return -1 if label == "all" else float(label.lstrip("≥").split("–")[0].split("/")[0]) + (0.5 if "≥" in label else 0)


# ---------------------------------------------------------------------------------------------
# HDFS sessions


def load_sessions(path: Path) -> list[tuple[int, ...]]:
    return [tuple(int(key) for key in line.split()) for line in path.read_text().splitlines() if line.strip()]


class NgramNovelty:
    """The baseline: anomalous iff a session holds a key or a start/end-padded n-gram never seen in training."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: set[tuple[Hashable, ...]] = set()

    def _grams(self, session: Sequence[Hashable]) -> set[tuple[Hashable, ...]]:
        padded = ("<s>",) * (self.n - 1) + tuple(session) + ("</s>",) * (self.n - 1)
        return {padded[i:i + self.n] for i in range(len(padded) - self.n + 1)}

    def fit(self, sessions: Sequence[Sequence[Hashable]]) -> NgramNovelty:
        for session in sessions:
            self.seen |= self._grams(session)
        return self

    def is_anomalous(self, session: Sequence[Hashable]) -> bool:
        # Unigrams are implied: an unseen key makes an unseen n-gram.
        return not self._grams(session) <= self.seen


@dataclass(frozen=True)
class DetectorResult:
    detector: str
    train: int
    detected: int
    abnormal: int
    false_pos: int
    normal: int
    fit_per_s: float
    score_per_s: float

    @property
    def recall(self) -> float:
        return self.detected / self.abnormal

    @property
    def fp_rate(self) -> float:
        return self.false_pos / self.normal if self.normal else 0.0

    @property
    def f1(self) -> float:
        precision = self.detected / (self.detected + self.false_pos) if self.detected else 0.0
        return 2 * precision * self.recall / (precision + self.recall) if precision + self.recall else 0.0


def evaluate(
    name: str,
    build: Callable[[list[tuple[int, ...]]], Callable[[tuple[int, ...]], bool]],
    train: list[tuple[int, ...]],
    held_out: list[tuple[int, ...]],
    abnormal: list[tuple[int, ...]],
) -> DetectorResult:
    start = time.perf_counter()
    is_anomalous = build(train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    false_pos = sum(map(is_anomalous, held_out))
    detected = sum(map(is_anomalous, abnormal))
    score_s = time.perf_counter() - start
    return DetectorResult(
        name, len(train), detected, len(abnormal), false_pos, len(held_out),
        len(train) / fit_s, (len(held_out) + len(abnormal)) / score_s,
    )


def _session_model(train: list[tuple[int, ...]]) -> Callable[[tuple[int, ...]], bool]:
    model = SessionModel().fit(train)
    return lambda session: model.score(session).anomalous


def _ngram(n: int) -> Callable[[list[tuple[int, ...]]], Callable[[tuple[int, ...]], bool]]:
    def build(train: list[tuple[int, ...]]) -> Callable[[tuple[int, ...]], bool]:
        return NgramNovelty(n).fit(train).is_anomalous

    return build


def hdfs_comparison(hdfs_dir: Path, fractions: Sequence[float], split: str) -> list[DetectorResult]:
    normal = load_sessions(hdfs_dir / "hdfs_train")
    abnormal = load_sessions(hdfs_dir / "hdfs_test_abnormal")
    if split == "random":
        normal = normal[:]
        random.Random(0).shuffle(normal)
    results = []
    for fraction in fractions:
        cut = int(len(normal) * fraction)
        train, held_out = normal[:cut], normal[cut:]
        for name, build in (("SessionModel", _session_model), ("2-gram novelty", _ngram(2)), ("3-gram novelty", _ngram(3))):
            results.append(evaluate(name, build, train, held_out, abnormal))
    return results


def view_table(hdfs_dir: Path, fraction: float) -> list[tuple[str, int, int, int, int, float]]:
    """Per view of SessionModel (first `fraction` of training, chronological): held-out false alarms
    estimated in training, false positives, and detections if the view alone decided."""
    normal = load_sessions(hdfs_dir / "hdfs_train")
    abnormal = load_sessions(hdfs_dir / "hdfs_test_abnormal")
    cut = int(len(normal) * fraction)
    model = SessionModel().fit(normal[:cut])
    rows = []
    for view in model.evidence:
        fp = sum(view in model.findings(s) for s in normal[cut:])
        det = sum(view in model.findings(s) for s in abnormal)
        rows.append((view, model.false_alarms[view], cut, fp, det, model.evidence[view]))
    return rows


# ---------------------------------------------------------------------------------------------
# report


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(hdfs_dir: Path = DEFAULT_HDFS_DIR, *, windows: int = 500, seeds: int = 5) -> dict:
    seed_list = list(range(seeds))
    report: dict = {}
    start = time.perf_counter()
    quiet = no_fault_rates(seed_list, windows)
    report["no_fault"] = quiet
    print(f"== Window primitives: no-fault stream, {len(seed_list)} seeds × {windows} windows "
          f"(6 services × 6 severities, 80 templates each, baseline = previous {HISTORY_WINDOWS} windows)")
    print(_table(
        ["anomaly", "windows flagged", "FP rate"],
        [(name, f"{quiet[name]}/{quiet['windows']}", f"{quiet[name] / quiet['windows']:.2%}")
         for name in ("volume", "novel", "rate_jump", "any")],
    ))
    caught = fault_catch_rates(seed_list, windows // 2)
    report["faults"] = caught
    print("\n== Window primitives: injected faults (one per trial, in an otherwise no-fault window)")
    print(_table(
        ["fault", "target's usual rate", "caught", "catch rate"],
        [(kind, bucket, f"{c}/{n}", f"{c / n:.1%}") for kind, cells in caught.items() for bucket, (c, n) in cells.items()],
    ))
    print(f"({time.perf_counter() - start:.1f}s)")

    report["hdfs"] = {}
    if not (hdfs_dir / "hdfs_train").exists():
        print(f"\n(no HDFS data in {hdfs_dir}: session comparison skipped)")
        return report
    for split, title in (("first", "first X% of hdfs_train (chronological)"), ("random", "seeded random X% (seed 0)")):
        results = hdfs_comparison(hdfs_dir, (0.2, 0.5, 0.8), split)
        report["hdfs"][split] = [r.__dict__ | {"recall": r.recall, "fp_rate": r.fp_rate, "f1": r.f1} for r in results]
        print(f"\n== HDFS sessions, train = {title}; positives = all {results[0].abnormal} of hdfs_test_abnormal")
        print(_table(
            ["detector", "train", "detection", "false positives", "FP %", "F1 (this split)", "fit sess/s", "score sess/s"],
            [(r.detector, r.train, f"{r.recall:.2%}", f"{r.false_pos}/{r.normal}", f"{r.fp_rate:.2%}", f"{r.f1:.4f}",
              f"{r.fit_per_s:,.0f}", f"{r.score_per_s:,.0f}") for r in results],
        ))
    rows = view_table(hdfs_dir, 0.5)
    report["views_50"] = rows
    print("\n== SessionModel views alone, train = first 50% (the model flags by calibrated sum, not by any one view)")
    print(_table(
        ["view", "held-out alarms in training", "held-out FP", "detection alone", "evidence"],
        [(v, f"{fa}/{n}", f"{fp}/{len(load_sessions(hdfs_dir / 'hdfs_train')) - n}", det, f"{ev:.2f}")
         for v, fa, n, fp, det, ev in rows],
    ))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hdfs-dir", type=Path, default=DEFAULT_HDFS_DIR)
    parser.add_argument("--windows", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    main(args.hdfs_dir, windows=args.windows, seeds=args.seeds)
