"""Memory over consecutive trials: the sweep's resident set size after each of 20 trials run
by the real study code, plus the peak of the trial's own process.

    python benchmarks/memory.py [--output runs] [--trials 20] [--train-size 2000] [--in-process]

Trains the default autoencoder (filters [32, 64, 128]) for 2 epochs per trial on a subset of
Fashion-MNIST, each trial a different learning rate; stores go to <output>/benchmarks/memory/.
Each trial trains in a process of its own, as sweeps do (sweep.worker); `--in-process` trains
them in the sweep's process instead (`sweep run --in-process`), where the sweep's RSS is the
whole story. The figure is the memory a sweep holds while a trial runs: the sweep's RSS plus
the trial process's peak. Prints a table, writes <output>/benchmarks/memory.csv, and ends with
the key figure. Target: its growth from trial 2 to the last trial at most 10%.
"""

from __future__ import annotations

import argparse
import csv
import resource
import shutil
import sys
from pathlib import Path

TARGET_GROWTH = 0.10


def rss_mb() -> float:
    """Current resident set size (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--in-process", action="store_true", help="no process per trial")
    args = parser.parse_args()
    folder = Path(args.output) / "benchmarks"
    stores = folder / "memory"
    shutil.rmtree(stores, ignore_errors=True)
    stores.mkdir(parents=True)
    space_file = stores / "memory.yaml"
    space_file.write_text(
        "study: memory\n"
        f"base: {{epochs: 2, train_size: {args.train_size}, val_size: 500}}\n"
        "params:\n  learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        f"sampler: {{name: random, seed: 0}}\nn_trials: {args.trials}\n"
    )

    from sweep.data import find_source
    from sweep.profiles import get_profile
    from sweep.run import run_sweep
    from sweep.space_file import load_space
    from sweep.storage import default_storage
    from sweep.tracking import Tracker, default_tracking_uri

    rows: list[dict] = []

    def measure(study, trial) -> None:
        """After the trial's own clean-up (keras clear_session, gc)."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child = trial.user_attrs.get("peak_rss_mib", 0.0)
        rss = round(rss_mb(), 1)
        rows.append(
            {
                "trial": len(rows) + 1,
                "rss_mib": rss,
                "peak_rss_mib": round(peak, 1),
                "trial_process_peak_mib": child,
                "total_mib": round(rss + child, 1),
            }
        )
        print(
            f"trial {len(rows):>3}: sweep RSS {rss:8.1f} MiB (peak {peak:8.1f}), trial process "
            f"peak {child:8.1f} MiB, total {rows[-1]['total_mib']:8.1f} MiB",
            flush=True,
        )

    run_sweep(
        load_space(space_file),
        get_profile("quick"),
        find_source("fashion-mnist"),
        default_storage(stores),
        Tracker(default_tracking_uri(stores), artifact_root=stores / "mlartifacts"),
        isolate=not args.in_process,
        callbacks=[measure],
    )
    with open(folder / "memory.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    second, last = rows[1]["total_mib"], rows[-1]["total_mib"]
    growth = (last - second) / second
    mode = "in the sweep's process" if args.in_process else "one process per trial"
    print(f"Wrote {folder / 'memory.csv'}")
    print(
        f"memory ({mode}): sweep RSS + trial process peak after trial 2 {second:.1f} MiB, "
        f"after trial {len(rows)} {last:.1f} MiB: growth {growth:+.1%} "
        f"(target at most +{TARGET_GROWTH:.0%})"
    )
    return 0 if growth <= TARGET_GROWTH else 1


if __name__ == "__main__":
    sys.exit(main())
