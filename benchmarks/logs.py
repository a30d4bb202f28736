"""Log analysis speed and quality, side by side in one run.

1. Ingest: N generated realistic lines (access logs, JSON, logfmt, syslog, "timestamp level message",
   plain text; default 1,000,000) through the real path (parse, redact, batched FTS5 writes), lines/s.
2. Search on that index vs GNU grep and ripgrep over the same raw file, p50/p95 per query:
   selective queries (a handful of hits; goal >= 20x faster than ripgrep) and broad ones counting
   thousands of hits (goal: no slower than ripgrep). grep and rg are asked only to count (-c), the least
   they can do; the index also returns the newest 100 records and a histogram.
3. Template mining on every system of a Loghub-2k layout (`--loghub DIR`): grouping accuracy and lines/s
   vs drain3 0.9.11 with the same masks (benchmarks/loghub_eval.py).
4. Anomaly detection (`--hdfs DIR`): session detection on DeepLog's HDFS split vs n-gram novelty, and the
   false-positive rate of the volume/template detectors on a no-fault stream (benchmarks/anomaly_eval.py).

    python benchmarks/logs.py [--lines 1000000] [--loghub DIR] [--hdfs DIR] [--skip-search]

Needs `pip install -e ".[bench]"` for drain3, and grep/rg on PATH (Debian: ripgrep) for the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ops_agent.redact import Redactor  # noqa: E402
from ops_agent.tools.logs.index.query import parse_query  # noqa: E402
from ops_agent.tools.logs.index.sqlite_store import SqliteLogStore  # noqa: E402
from ops_agent.tools.logs.index.store import LogFilter  # noqa: E402
from ops_agent.tools.logs.ingest.collector import LogCollector  # noqa: E402

SERVICES = ["api", "web", "billing", "auth", "worker", "search"]
PATHS = ["/api/users", "/api/orders", "/api/items", "/login", "/health", "/static/app.js", "/api/cart"]
NEEDLE = "req-7f3a9c2e41"  # a request id that occurs a few times: the typical "find this request" search


def generate(path: Path, lines: int, seed: int = 1) -> dict[str, int]:
    """Write `lines` realistic lines over the last 24 h; returns how often the planted tokens occur."""
    rng = random.Random(seed)
    start = time.time() - 86400
    counts = {"needle": 0, "disk quota exceeded": 0, "timeout": 0}
    with open(path, "w") as out:
        for i in range(lines):
            t = start + 86400 * i / lines
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
            service = rng.choice(SERVICES)
            roll = rng.random()
            request = NEEDLE if rng.random() < 12 / lines else f"req-{rng.getrandbits(40):010x}"
            counts["needle"] += request == NEEDLE
            if roll < 0.35:
                status = rng.choices([200, 201, 304, 404, 500, 503], [80, 5, 8, 4, 2, 1])[0]
                stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t))
                line = (
                    f'10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)} - - [{stamp}] '
                    f'"GET {rng.choice(PATHS)}?page={rng.randrange(50)} HTTP/1.1" {status} {rng.randrange(100, 90000)} '
                    f'"-" "Mozilla/5.0 (X11; Linux x86_64)" {rng.random() * 0.8:.3f}'
                )
            elif roll < 0.60:
                level = rng.choices(["info", "debug", "warn", "error"], [70, 15, 10, 5])[0]
                message = rng.choice([
                    f"request {request} completed in {rng.randrange(2, 900)}ms",
                    f"user {rng.randrange(10**6)} logged in from 10.0.{rng.randrange(256)}.{rng.randrange(256)}",
                    f"cache miss for key item:{rng.randrange(10**5)}",
                    f"upstream timeout after {rng.randrange(1, 30)}s calling payments ({request})",
                ])
                counts["timeout"] += "timeout" in message
                line = json.dumps({"time": iso, "level": level, "service": service, "msg": message, "request_id": request})
            elif roll < 0.75:
                level = rng.choices(["info", "warn", "error"], [85, 10, 5])[0]
                line = (
                    f"ts={iso} level={level} service={service} msg=\"job {rng.randrange(10**6)} finished\" "
                    f"duration_ms={rng.randrange(5, 5000)} queue=q{rng.randrange(8)}"
                )
            elif roll < 0.85:
                stamp = time.strftime("%b %d %H:%M:%S", time.gmtime(t))
                message = rng.choice([
                    f"Accepted publickey for deploy from 10.1.{rng.randrange(256)}.{rng.randrange(256)} port {rng.randrange(1024, 65535)} ssh2",
                    "pam_unix(cron:session): session opened for user root by (uid=0)",
                ])
                if rng.random() < 0.0005:
                    message = "write failed: disk quota exceeded on /var/lib/data"
                counts["disk quota exceeded"] += "disk quota exceeded" in message
                line = f"<{rng.choice([30, 38, 86])}>{stamp} host-{rng.randrange(20)} {service}[{rng.randrange(100, 9999)}]: {message}"
            elif roll < 0.97:
                level = rng.choices(["INFO", "WARN", "ERROR"], [85, 10, 5])[0]
                message = rng.choice([
                    f"Processed batch {rng.randrange(10**5)} with {rng.randrange(1, 500)} records",
                    f"Connection pool size {rng.randrange(1, 64)} of 64",
                    f"Timeout while waiting for lock on table orders after {rng.randrange(1, 60)}s",
                ])
                counts["timeout"] += "Timeout" in message
                line = f"{iso[:10]} {iso[11:23].replace('.', ',')} {level} [{service}] {message}"
            else:
                line = f"plain text line {rng.randrange(10**6)} from {service} without structure"
            out.write(line + "\n")
    return counts


async def ingest(path: Path, db: Path, batch: int = 5000) -> tuple[SqliteLogStore, float, int]:
    """The `ops-agent logs ingest FILE` path: chunks read off the loop, parse and redact, batched writes."""
    store = SqliteLogStore(db)
    await store.open()
    collector = LogCollector(store, Redactor(), batch_size=batch)

    async def chunks():
        with open(path, "rb") as source:
            while chunk := await asyncio.to_thread(source.read1, 1 << 20):
                yield chunk

    started = time.perf_counter()
    total = await collector.ingest_chunks(chunks())
    return store, time.perf_counter() - started, total


QUERIES = [
    # (label, kind, our query, fixed string for grep/rg)
    ("request id", "selective", NEEDLE, NEEDLE),
    ("rare phrase", "selective", '"disk quota exceeded"', "disk quota exceeded"),
    ("common term", "broad", "timeout", "timeout"),
    ("common phrase", "broad", '"logged in"', "logged in"),
]


async def search_figures(store: SqliteLogStore, raw: Path, runs: int) -> list[dict]:
    rows = []
    now = time.time() + 60
    for label, kind, query, needle in QUERIES:
        where = LogFilter(end=now, start=None, query=parse_query(query))
        ours, total = [], 0
        for _ in range(runs):
            started = time.perf_counter()
            page = await store.search(where, limit=100)
            ours.append(time.perf_counter() - started)
            total = page.total
        row = {"query": label, "kind": kind, "hits": total, "ours": _p(ours)}
        for tool in ("rg", "grep"):
            if shutil.which(tool) is None:
                continue
            command = [tool, "-c", "-i", "-F", needle, str(raw)]
            timings, count = [], ""
            for _ in range(max(3, runs // 4)):
                started = time.perf_counter()
                count = subprocess.run(command, capture_output=True, text=True).stdout.strip()
                timings.append(time.perf_counter() - started)
            row[tool] = _p(timings)
            row[f"{tool}_hits"] = int(count or 0)
        rows.append(row)
    return rows


def _p(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000,
    }


def print_search(rows: list[dict]) -> None:
    print(f"{'query':<14} {'kind':<9} {'hits':>7} {'ours p50/p95 ms':>17} {'rg p50/p95 ms':>15} {'grep p50/p95 ms':>16} "
          f"{'vs rg':>7} {'vs grep':>8}")
    for r in rows:
        ours = r["ours"]
        cells = []
        for tool in ("rg", "grep"):
            cells.append(f"{r[tool]['p50_ms']:7.1f}/{r[tool]['p95_ms']:<7.1f}" if tool in r else "   n/a  ")
        ratios = [f"{r[tool]['p50_ms'] / ours['p50_ms']:6.1f}x" if tool in r else "   n/a" for tool in ("rg", "grep")]
        print(f"{r['query']:<14} {r['kind']:<9} {r['hits']:>7} {ours['p50_ms']:8.2f}/{ours['p95_ms']:<8.2f} "
              f"{cells[0]:>15} {cells[1]:>16} {ratios[0]:>7} {ratios[1]:>8}")
    mismatched = [r["query"] for r in rows if "rg_hits" in r and r["rg_hits"] != r["hits"]]
    if mismatched:
        print(f"  note: line counts differ from rg for {', '.join(mismatched)} (rg counts lines with the string "
              "anywhere, e.g. inside longer words; the index matches whole words)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=40, help="Timed runs per query.")
    parser.add_argument("--loghub", type=Path, default=ROOT.parent / "shared/data/loghub-2k")
    parser.add_argument("--hdfs", type=Path, default=ROOT.parent / "shared/data/hdfs-anomaly")
    parser.add_argument("--skip-search", action="store_true", help="Only the mining and anomaly sections.")
    args = parser.parse_args()

    if not args.skip_search:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "generated.log"
            started = time.perf_counter()
            planted = generate(raw, args.lines)
            size_mb = raw.stat().st_size / 1e6
            print(f"## Ingest and search ({args.lines:,} lines, {size_mb:.0f} MB, generated in "
                  f"{time.perf_counter() - started:.1f} s; planted: {planted})")
            store, seconds, total = await ingest(raw, Path(tmp) / "logs.db")
            print(f"ingest: {total:,} lines in {seconds:.1f} s = {total / seconds:,.0f} lines/s "
                  "(parse + redact + FTS5 batches of 5000)")
            subprocess.run(["cat", str(raw)], stdout=subprocess.DEVNULL)  # the raw file in the page cache too
            print_search(await search_figures(store, raw, args.runs))
            await store.close()
        print()

    import anomaly_eval
    import loghub_eval

    if (args.loghub / "settings.json").is_file():
        print(f"## Template mining on {args.loghub}")
        loghub_eval.main(args.loghub)
        print()
    else:
        print(f"(no Loghub layout at {args.loghub}: skipped template mining)")
    if args.hdfs.is_dir():
        print(f"## Anomaly detection ({args.hdfs})")
        anomaly_eval.main(args.hdfs)
    else:
        print(f"(no HDFS split at {args.hdfs}: skipped session detection)")


if __name__ == "__main__":
    asyncio.run(main())
