"""Log anomaly detection, side by side in one run.

1. Window primitives (`volume_anomalies`, `novel_templates`, `rate_jumps`) on a synthetic stream with
   no faults: several services × severities, templates with Zipf-like shares, Poisson counts, a slow
   diurnal drift and random multiplicative noise. The false-positive rate is the share of windows
   with any anomaly. Then faults are injected into the same stream (a 5× error spike, a new error
   template with 20 lines, a template whose rate jumps 10×, a service's info lines stopping) and the
   catch rate is measured, by how busy the target was.
2. `SessionModel` against the plain n-gram novelty baseline (n=2 and n=3, start/end padded) on
   DeepLog's HDFS sessions. Training uses the first 20/50/80% of `hdfs_train` in file order. The
   remaining normal sessions measure false positives, and all of `hdfs_test_abnormal` measures
   detection. The same comparison is repeated on seeded random splits. F1 here is on this split
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ops_agent.tools.logs.analysis.anomaly import (  # noqa: E402
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
                if rank < 5:
                    severity = rng.choice(("debug", "info"))
                else:
                    severity = rng.choices(SEVERITIES, cfg.severity_weights)[0]
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
    flagged: Counter[str] = Counter()
    total = 0
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
    out: dict[str, dict[tuple[int, str], list[int]]] = {
        "error_spike_5x": {}, "new_error_template_20": {}, "rate_jump_10x": {}, "info_lines_stop": {},
    }

    def tally(kind: str, bucket: tuple[int, str], caught: bool) -> None:
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
            tally("new_error_template_20", (0, "any"), any(a.key == text for a in found))
            # One template's rate jumps 10×: 9× its mean on top of the usual.
            tpl = rng.choice(stream.templates)
            rate = window.rates[tpl.text]
            counts = Counter(window.counts)
            counts[tpl.text] += poisson(rng, 9 * rate)
            found = check_window(stream, history, counts).jumps
            tally("rate_jump_10x", _bucket(rate, (0.5, 2, 5)), any(a.key == tpl.text for a in found))
            # A service's info lines stop altogether (its other severities carry on).
            infos = {info.text for info in stream.templates if info.service == service and info.severity == "info"}
            if infos:
                counts = Counter({text: n for text, n in window.counts.items() if text not in infos})
                found = check_window(stream, history, counts).volume
                usual = sum(window.rates[text] for text in infos)
                tally("info_lines_stop", _bucket(usual, (20, 100, 500)),
                      any(a.kind == "volume_drop" and a.key == f"{service}/info" for a in found))
    return {kind: {label: (c[0], c[1]) for (_, label), c in sorted(cells.items())} for kind, cells in out.items()}


def _bucket(value: float, edges: Sequence[float]) -> tuple[int, str]:
    """(order, label) of the bucket `value` falls in."""
    for i, (low, high) in enumerate(zip((0, *edges), edges)):
        if value < high:
            return i, f"{low:g}–{high:g}/window"
    return len(edges), f"≥{edges[-1]:g}/window"


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


DETECTORS = (("SessionModel", _session_model), ("2-gram novelty", _ngram(2)), ("3-gram novelty", _ngram(3)))


def hdfs_comparison(
    normal: list[tuple[int, ...]], abnormal: list[tuple[int, ...]], fractions: Sequence[float], seed: int | None
) -> list[DetectorResult]:
    """Train on the first `fraction` of `normal` (shuffled first if `seed` is given); FP on the rest."""
    if seed is not None:
        normal = normal[:]
        random.Random(seed).shuffle(normal)
    results = []
    for fraction in fractions:
        cut = int(len(normal) * fraction)
        for name, build in DETECTORS:
            results.append(evaluate(name, build, normal[:cut], normal[cut:], abnormal))
    return results


def view_table(
    normal: list[tuple[int, ...]], abnormal: list[tuple[int, ...]], fraction: float
) -> list[tuple[str, str, str, int, float]]:
    """Per view of SessionModel (first `fraction` of training): false alarms estimated in training
    (held out one at a time), false positives on the held-out normals and detections, each as if the
    view alone decided."""
    cut = int(len(normal) * fraction)
    model = SessionModel().fit(normal[:cut])
    held_out = [set(model.findings(s)) for s in normal[cut:]]
    positives = [set(model.findings(s)) for s in abnormal]
    return [
        (view, f"{model.false_alarms[view]}/{cut}", f"{sum(view in f for f in held_out)}/{len(held_out)}",
         sum(view in f for f in positives), model.evidence[view])
        for view in model.evidence
    ]


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
        [(kind, bucket, f"{c}/{n}", f"{c / n:.1%}")
         for kind, cells in caught.items() for bucket, (c, n) in cells.items()],
    ))
    print(f"({time.perf_counter() - start:.1f}s)")

    report["hdfs"] = {}
    if not (hdfs_dir / "hdfs_train").exists():
        print(f"\n(no HDFS data in {hdfs_dir}: session comparison skipped)")
        return report
    normal = load_sessions(hdfs_dir / "hdfs_train")
    abnormal = load_sessions(hdfs_dir / "hdfs_test_abnormal")
    fractions = (0.2, 0.5, 0.8)

    results = hdfs_comparison(normal, abnormal, fractions, seed=None)
    report["hdfs"]["chronological"] = [_as_dict(r) for r in results]
    print(f"\n== HDFS sessions, train = first X% of hdfs_train (file order), FP = the rest; "
          f"positives = all {len(abnormal)} of hdfs_test_abnormal")
    print(_table(
        ["detector", "train", "detection", "false positives", "FP %", "F1 (this split)", "fit sess/s", "score sess/s"],
        [(r.detector, r.train, f"{r.recall:.2%}", f"{r.false_pos}/{r.normal}", f"{r.fp_rate:.2%}", f"{r.f1:.4f}",
          f"{r.fit_per_s:,.0f}", f"{r.score_per_s:,.0f}") for r in results],
    ))

    runs = [hdfs_comparison(normal, abnormal, fractions, seed=seed) for seed in seed_list]
    report["hdfs"]["random"] = [[_as_dict(r) for r in run] for run in runs]
    print(f"\n== HDFS sessions, train = random X% of hdfs_train, seeds {seed_list[0]}–{seed_list[-1]} "
          f"(detection: mean and range over seeds; false positives: summed over seeds)")
    rows = []
    for i, first in enumerate(runs[0]):
        same = [run[i] for run in runs]
        recalls = [r.recall for r in same]
        fp, total = sum(r.false_pos for r in same), sum(r.normal for r in same)
        rows.append((
            first.detector, first.train, f"{sum(recalls) / len(recalls):.2%}",
            f"{min(recalls):.2%}–{max(recalls):.2%}", f"{fp}/{total}", f"{fp / total:.2%}",
            f"{sum(r.f1 for r in same) / len(same):.4f}",
        ))
    print(_table(["detector", "train", "detection", "range", "false positives", "FP %", "F1 (mean)"], rows))

    views = view_table(normal, abnormal, 0.5)
    report["views_first_50"] = views
    print("\n== SessionModel views one at a time, train = first 50% "
          "(the model itself flags by calibrated sum, not by any single view)")
    print(_table(
        ["view", "false alarms in training (held out)", "held-out FP", "detection", "evidence"],
        [(view, estimated, fp, det, f"{evidence:.2f}") for view, estimated, fp, det, evidence in views],
    ))
    return report


def _as_dict(result: DetectorResult) -> dict:
    return asdict(result) | {"recall": result.recall, "fp_rate": result.fp_rate, "f1": result.f1}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hdfs-dir", type=Path, default=DEFAULT_HDFS_DIR)
    parser.add_argument("--windows", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    main(args.hdfs_dir, windows=args.windows, seeds=args.seeds)
