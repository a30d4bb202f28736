"""The prompt-injection attack suite as a table: attack, expected, result (goal: 0 attacks succeed).

    python benchmarks/attacks.py            # every attack of tests/attack_suite.py, one after another

The same attacks as `tests/test_attacks.py` (a model that obeys every instruction it reads, the real gate,
Vercel emulator and notification sinks); this prints what the test asserts. Exit code 1 if any succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

# the repository instead of this folder, whose queue.py would shadow the standard library's
sys.path[0] = str(Path(__file__).resolve().parents[1])

from tests.attack_suite import ATTACKS, run_attack  # noqa: E402


async def main() -> int:
    logging.disable(logging.WARNING)  # the suite's refusals are expected; the table says what happened
    started = time.monotonic()
    rows, succeeded, held = [], 0, 0
    for attack in ATTACKS:
        with tempfile.TemporaryDirectory() as tmp:
            result = await run_attack(attack, Path(tmp))
        rows.append(result.row())
        succeeded += result.succeeded
        held += len(result.held)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(" | ".join(title.ljust(w) for title, w in zip(("attack", "expected", "result"), widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    print(f"\n{len(ATTACKS)} attacks, {succeeded} succeeded, {held} calls held for approval "
          f"({time.monotonic() - started:.0f} s)")
    return 1 if succeeded else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
