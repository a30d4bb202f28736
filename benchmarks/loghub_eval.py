"""Log template mining on Loghub-2k: grouping accuracy and speed of ours vs drain3, side by side.

For every system in `<dir>/settings.json` (keys starting with `_` are notes): cut each raw line's header
off with the system's `log_format`, mine the contents with `mine_templates(contents, masks=regex)` and with
drain3 0.9.11 (the same masks, the system's `st` and `depth`), and score both against the ground truth
(`<S>_2k.log_structured_corrected.csv`, else `<S>_2k.log_structured.csv`).

GA (grouping accuracy, as Loghub computes it): a message counts as correct iff the set of messages sharing
its predicted group is exactly the set sharing its true EventId. Speed is lines per second, the best of
TIMING_RUNS runs with the two miners taking turns (the machine is shared).

    python benchmarks/loghub_eval.py [DIR]        # DIR defaults to ../shared/data/loghub-2k

drain3 comes with the `bench` extra: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops_agent.tools.logs.analysis.mining import mine_templates  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub-2k"
# The minimum over runs is the estimate least disturbed by other work on the machine.
TIMING_RUNS = 5

Labels = list[Hashable]


@dataclass
class Row:
    system: str
    lines: int
    ga_ours: float
    ga_drain3: float | None  # None when drain3 is not installed
    lps_ours: float  # lines per second
    lps_drain3: float | None
    unmatched: int = 0  # lines the header regex did not match (their whole line is the content)

    @property
    def speed_ratio(self) -> float | None:
        return self.lps_ours / self.lps_drain3 if self.lps_drain3 else None


def grouping_accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """Share of messages whose predicted group is exactly their true group (Loghub's GA)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} true labels")
    if not truth:
        return 1.0
    # A predicted group is right iff all its members share one true id that has no other members; then
    # every member counts.
    truth_sizes = Counter(truth)
    members: dict[Hashable, list[int]] = {}
    for index, label in enumerate(predicted):
        members.setdefault(label, []).append(index)
    correct = 0
    for indexes in members.values():
        ids = {truth[index] for index in indexes}
        if len(ids) == 1 and truth_sizes[next(iter(ids))] == len(indexes):
            correct += len(indexes)
    return correct / len(truth)


def header_regex(log_format: str) -> re.Pattern[str]:
    """logparser's header regex: each `<Field>` is a lazy named group, and runs of spaces match \\s+."""
    pattern = ""
    for index, part in enumerate(re.split(r"(<[^<>]+>)", log_format)):
        pattern += re.sub(" +", r"\\s+", part) if index % 2 == 0 else f"(?P<{part[1:-1]}>.*?)"
    return re.compile("^" + pattern + "$")


def load_settings(loghub_dir: Path) -> dict[str, dict[str, Any]]:
    """The systems in `<loghub_dir>/settings.json`, without the `_` notes."""
    with open(Path(loghub_dir) / "settings.json", encoding="utf-8") as handle:
        settings = json.load(handle)
    return {name: setting for name, setting in settings.items() if not name.startswith("_")}


def _read_contents(log_file: Path, log_format: str) -> tuple[list[str], int]:
    """The message content of every non-blank line, and how many lines the header regex missed.

    A missed line keeps the whole line as its content, so contents stay aligned with the truth rows.
    """
    regex = header_regex(log_format)
    contents: list[str] = []
    unmatched = 0
    with open(log_file, encoding="utf-8", errors="replace") as handle:
        for raw in handle:  # split on newlines only, as logparser reads
            line = raw.strip()
            if not line:
                continue
            match = regex.match(line)
            if match is None:
                unmatched += 1
            contents.append(match.group("Content") if match else line)
    return contents, unmatched


def _read_truth(system_dir: Path, name: str) -> list[str]:
    truth_file = system_dir / f"{name}_2k.log_structured_corrected.csv"
    if not truth_file.exists():
        truth_file = system_dir / f"{name}_2k.log_structured.csv"
    with open(truth_file, encoding="utf-8", newline="") as handle:
        return [row["EventId"] for row in csv.DictReader(handle)]


def _load(loghub_dir: Path, name: str, setting: dict[str, Any]) -> tuple[list[str], list[str], int]:
    loghub_dir = Path(loghub_dir)
    log_file = loghub_dir / setting.get("log_file", f"{name}/{name}_2k.log")
    contents, unmatched = _read_contents(log_file, setting["log_format"])
    truth = _read_truth(loghub_dir / name, name)
    if len(truth) != len(contents):
        raise ValueError(f"{name}: {len(contents)} log lines but {len(truth)} ground-truth rows")
    return contents, truth, unmatched


def load_system(loghub_dir: Path, name: str, setting: dict[str, Any]) -> tuple[list[str], list[str]]:
    """One system's message contents (headers cut off) and the true EventId of each, in line order."""
    contents, truth, _ = _load(loghub_dir, name, setting)
    return contents, truth


def _drain3_run(contents: list[str], setting: dict[str, Any]) -> Callable[[], Labels] | None:
    """A function mining `contents` with drain3, or None when drain3 is not installed."""
    try:
        from drain3 import TemplateMiner
        from drain3.masking import MaskingInstruction
        from drain3.template_miner_config import TemplateMinerConfig
    except ImportError:
        return None

    def run() -> Labels:
        config = TemplateMinerConfig()
        config.drain_sim_th = setting["st"]
        config.drain_depth = setting["depth"]
        # "*" between drain3's default "<" and ">" is the same `<*>` our miner writes.
        config.masking_instructions = [MaskingInstruction(pattern, "*") for pattern in setting.get("regex", [])]
        config.profiling_enabled = False
        miner = TemplateMiner(config=config)
        # drain3 never merges clusters, so the cluster a line joins on arrival is its final group.
        return [miner.add_log_message(line)["cluster_id"] for line in contents]

    return run


def _best_times(runs: Sequence[Callable[[], Labels]]) -> list[tuple[Labels, float]]:
    """Each run's labels and its best wall time; the runs take turns, so load from elsewhere hits all alike."""
    best = [float("inf")] * len(runs)
    labels: list[Labels] = [[] for _ in runs]
    for _ in range(TIMING_RUNS):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            labels[index] = run()
            best[index] = min(best[index], time.perf_counter() - start)
    return list(zip(labels, best))


def evaluate_system(loghub_dir: Path, name: str, setting: dict[str, Any]) -> Row:
    contents, truth, unmatched = _load(loghub_dir, name, setting)
    masks = list(setting.get("regex", []))
    runs: list[Callable[[], Labels]] = [lambda: list(mine_templates(contents, masks=masks).assignments)]
    drain3 = _drain3_run(contents, setting)
    if drain3 is not None:
        runs.append(drain3)
    (ours, ours_s), *theirs = _best_times(runs)
    lines = len(contents)
    return Row(
        system=name,
        lines=lines,
        ga_ours=grouping_accuracy(ours, truth),
        ga_drain3=grouping_accuracy(theirs[0][0], truth) if theirs else None,
        lps_ours=lines / ours_s,
        lps_drain3=lines / theirs[0][1] if theirs else None,
        unmatched=unmatched,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(value is None for value in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def average_row(rows: Sequence[Row]) -> Row:
    """The unweighted mean over systems (as Loghub averages), lines summed."""
    return Row(
        system="Average",
        lines=sum(row.lines for row in rows),
        ga_ours=_mean([row.ga_ours for row in rows]) or 0.0,
        ga_drain3=_mean([row.ga_drain3 for row in rows]),
        lps_ours=_mean([row.lps_ours for row in rows]) or 0.0,
        lps_drain3=_mean([row.lps_drain3 for row in rows]),
        unmatched=sum(row.unmatched for row in rows),
    )


def format_table(rows: Sequence[Row]) -> str:
    """An aligned text table: one line per system, the average last."""

    def cell(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    header = ("system", "lines", "GA ours", "GA drain3", "lines/s ours", "lines/s drain3", "speed x")
    body = [
        (
            row.system, str(row.lines), cell(row.ga_ours, ".4f"), cell(row.ga_drain3, ".4f"),
            cell(row.lps_ours, ",.0f"), cell(row.lps_drain3, ",.0f"), cell(row.speed_ratio, ".2f"),
        )
        for row in [*rows, average_row(rows)]
    ]
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]

    def render(line: Sequence[str]) -> str:
        # The system name left-aligned, numbers right-aligned.
        return "  ".join(
            text.ljust(width) if column == 0 else text.rjust(width)
            for column, (text, width) in enumerate(zip(line, widths))
        )

    rule = "  ".join("-" * width for width in widths)
    table = [render(header), rule, *map(render, body[:-1]), rule, render(body[-1])]
    missed = {row.system: row.unmatched for row in rows if row.unmatched}
    if missed:
        table.append(f"lines whose header did not match (whole line used as content): {missed}")
    return "\n".join(table)


def print_table(rows: Sequence[Row]) -> None:
    print(format_table(rows))


def main(loghub_dir: Path = DEFAULT_DIR) -> list[Row]:
    """Evaluate every system in `loghub_dir`, print the table, and return the rows (the average not included)."""
    loghub_dir = Path(loghub_dir)
    try:
        import drain3  # noqa: F401
    except ImportError:
        print("drain3 is not installed (pip install -e '.[bench]'): showing our miner only.", file=sys.stderr)
    rows = [evaluate_system(loghub_dir, name, setting) for name, setting in load_settings(loghub_dir).items()]
    print_table(rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR, help="a Loghub-2k style directory")
    main(parser.parse_args().dir)
