"""Start-up costs a user waits for: `sweep --help`, `sweep studies` (neither trains, so neither
may import TensorFlow) and reading the 60,000-image IDX training file.

    python benchmarks/startup.py [--output runs] [--repeats 5] [--storage URL]

`sweep studies` lists the output folder's store, or the one --storage names (a store with
studies in it is what a user waits for). Prints a table, writes
<output>/benchmarks/startup.csv, and ends with the key figure.
Targets: each command under 1 s, the IDX file under 0.5 s.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"sweep --help": 1.0, "sweep studies": 1.0, "read train IDX": 0.5}


def command_seconds(command: list[str], repeats: int) -> list[float]:
    """Wall time of a fresh process per repeat (Python start-up and imports included)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def idx_seconds(repeats: int) -> tuple[list[float], str]:
    from sweep.data import find_source

    source = find_source("fashion-mnist")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        images, _ = source.training()
        times.append(time.perf_counter() - start)
    return times, f"{source.location} ({len(images):,} images)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--storage", help="the store `sweep studies` lists (default: the output's)")
    args = parser.parse_args()
    out = Path(args.output)
    sweep = [sys.executable, "-m", "sweep", "--output", str(out)]
    storage = ["--storage", args.storage] if args.storage else []
    measured = {
        "sweep --help": command_seconds([*sweep, "--help"], args.repeats),
        "sweep studies": command_seconds([*sweep, "studies", *storage], args.repeats),
    }
    measured["read train IDX"], where = idx_seconds(args.repeats)

    rows = []
    print(f"{'what':<16}{'median s':>10}{'min s':>8}{'target s':>10}  ok")
    for name, times in measured.items():
        median, target = statistics.median(times), TARGETS[name]
        rows.append(
            {
                "what": name,
                "median_s": round(median, 4),
                "min_s": round(min(times), 4),
                "target_s": target,
                "ok": median < target,
                "repeats": len(times),
            }
        )
        print(f"{name:<16}{median:>10.3f}{min(times):>8.3f}{target:>10.1f}  {median < target}")
    print(f"IDX file: {where}")
    folder = out / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "startup.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"Wrote {folder / 'startup.csv'}")
    worst = max(rows, key=lambda r: r["median_s"] / r["target_s"])
    print(
        f"startup: --help {rows[0]['median_s']:.3f} s, studies {rows[1]['median_s']:.3f} s, "
        f"IDX {rows[2]['median_s']:.3f} s; worst vs target: {worst['what']}"
    )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
