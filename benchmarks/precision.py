"""float32 against mixed precision on the four filter configurations: training images per
second in a steady-state epoch and best val_loss after the same epochs.

    python benchmarks/precision.py [--output runs] [--epochs 6] [--subset 12000]
        [--precisions float32,mixed_bfloat16[,mixed_float16]]

Same data (the quick profile's split of Fashion-MNIST), seed, and epochs for every run; no
early stopping. Prints a table, writes <output>/benchmarks/precision.csv, and ends with the key
figure. Target: the default precision ("auto" on this machine) is the fastest one whose
val_loss is within 2% of float32's on every configuration.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

from common import EpochTimer, filter_configs, quick_split, write_csv

TOLERANCE = 0.02


def measure(filters, precision: str, split, epochs: int, xla: bool) -> dict:
    from models.autoencoder import build_autoencoder
    from models.config import AutoencoderConfig
    from sweep.training import fit_autoencoder, live_graphs, release, seed_everything

    config = AutoencoderConfig(filters=filters, precision=precision, epochs=epochs, patience=epochs)
    graphs = live_graphs()
    seed_everything(0)
    model = build_autoencoder(config, jit_compile=xla)
    timer = EpochTimer()
    start = time.perf_counter()
    timer.start()
    fit = fit_autoencoder(model, split, config, timer)
    wall = time.perf_counter() - start
    del model
    release(graphs)
    return {
        "filters": "-".join(map(str, filters)),
        "precision": precision,
        "xla": xla,
        "images_per_s": round(len(split.x_train) / timer.steady(), 1),
        "best_val_loss": round(fit.best_val_loss, 6),
        "epochs": len(fit.val_loss),
        "wall_s": round(wall, 1),
    }


def label(precision: str, xla: bool) -> str:
    return precision + (" +XLA" if xla else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument(
        "--precisions",
        default=None,
        help="comma-separated; default: all three on a GPU, float32,mixed_bfloat16 on a CPU "
        "(float16 has no CPU kernels worth the name: 74 against 1,847 images/s for 8-16-32 in "
        "`--subset 2000 --epochs 2` on the README's CPU)",
    )
    parser.add_argument(
        "--xla",
        choices=["auto", "on", "off", "both"],
        default="auto",
        help="XLA compilation: auto (what sweeps use here), on, off, or both, to compare",
    )
    args = parser.parse_args()

    from sweep.tf_env import default_precision, has_gpu, use_xla

    default = label(default_precision(), use_xla())
    precisions = (
        args.precisions
        or ("float32,mixed_bfloat16,mixed_float16" if has_gpu() else "float32,mixed_bfloat16")
    ).split(",")
    if "float32" not in precisions:
        parser.error("--precisions must include float32, the reference")
    xlas = {"auto": [use_xla()], "on": [True], "off": [False], "both": [False, True]}[args.xla]
    variants = [(p, x) for x in xlas for p in precisions]
    reference = label("float32", use_xla() if use_xla() in xlas else xlas[0])
    split = quick_split(args.subset)
    print(
        f"{len(split.x_train):,} training / {len(split.x_val):,} validation images, "
        f"{args.epochs} epochs; sweeps here use {default}",
        flush=True,
    )
    print(
        f"{'filters':<14}{'precision':<22}{'images/s':>10}{'best val_loss':>15}"
        f"{'vs ' + reference:>24}{'wall s':>8}",
        flush=True,
    )
    rows = []
    for filters in filter_configs():
        mine = [measure(filters, p, split, args.epochs, x) for p, x in variants]
        for row in mine:
            row["variant"] = label(row["precision"], row["xla"])
        ref = next(r for r in mine if r["variant"] == reference)
        for row in mine:
            row["speedup"] = round(row["images_per_s"] / ref["images_per_s"], 3)
            row["val_loss_vs_ref"] = round(row["best_val_loss"] / ref["best_val_loss"] - 1, 4)
            print(
                f"{row['filters']:<14}{row['variant']:<22}{row['images_per_s']:>10.0f}"
                f"{row['best_val_loss']:>15.5f}{row['val_loss_vs_ref']:>+24.1%}"
                f"{row['wall_s']:>8.1f}",
                flush=True,
            )
        rows += mine
    write_csv(Path(args.output) / "benchmarks" / "precision.csv", rows)

    summary = {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        summary[name] = {
            "speedup": math.exp(statistics.mean(math.log(r["speedup"]) for r in mine)),
            "worst": max(r["val_loss_vs_ref"] for r in mine),
        }
        print(
            f"{name:<22} speed-up (geometric mean) {summary[name]['speedup']:.2f}x, "
            f"worst val_loss vs {reference} {summary[name]['worst']:+.1%}"
        )
    eligible = [v for v in summary if summary[v]["worst"] <= TOLERANCE]
    best = max(eligible, key=lambda v: summary[v]["speedup"])
    if default not in summary:
        print(f"precision: sweeps here use {default}, not measured in this run")
        return 1
    verdict = "met" if best == default else f"NOT met: the fastest within 2% is {best}"
    print(
        f"precision: sweeps here use {default} at {summary[default]['speedup']:.2f}x "
        f"{reference}'s images/s, worst val_loss {summary[default]['worst']:+.1%}; target "
        f"{verdict}"
    )
    return 0 if best == default else 1


if __name__ == "__main__":
    sys.exit(main())
