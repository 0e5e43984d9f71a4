"""What a sweep adds to training: images per second of a sweep trial (MLflow tracking, Optuna
pruning checks, callbacks, model logging and the clean-up after it) against a bare
`model.fit` of the same model on the same data, interleaved in one process.

    python benchmarks/overhead.py [--output runs] [--repeats 3] [--epochs 6] [--subset N]

Both sides train the default autoencoder on the quick profile's split for the same epochs, with
the same seed and precision; the bare side times build + `model.fit` alone, the sweep side the
whole trial (its own process included: sweeps train each trial in one). The last column is the
trial's wall time outside its `model.fit` (from the trial's start to its end in the study, as
Optuna records them). Each repeat runs both, alternating which goes first. Prints a table,
writes <output>/benchmarks/overhead.csv, and ends with the key figure. Target: ratio at least 0.97.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import write_csv

TARGET = 0.97


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--subset", type=int, default=None)
    args = parser.parse_args()
    folder = Path(args.output) / "benchmarks"
    stores = folder / "overhead"
    shutil.rmtree(stores, ignore_errors=True)
    stores.mkdir(parents=True)
    space_file = stores / "overhead.yaml"
    space_file.write_text(
        "study: overhead\n"
        f"base: {{epochs: {args.epochs}, patience: {args.epochs}}}\n"
        "params:\n  batch_size: {values: [256]}\n"
        f"sampler: {{name: random, seed: 0}}\npruner: median\nn_trials: {args.repeats}\n"
    )

    from sweep.context import load_split
    from sweep.data import find_source
    from sweep.profiles import get_profile
    from sweep.run import run_sweep
    from sweep.space_file import load_space
    from sweep.storage import default_storage
    from sweep.tf_env import use_xla
    from sweep.tracking import Tracker, default_tracking_uri
    from sweep.training import live_graphs, release, seed_everything

    space = load_space(space_file)
    profile = get_profile("quick")
    if args.subset:
        profile = dataclasses.replace(profile, subset=args.subset)
    source = find_source("fashion-mnist")
    split, _ = load_split(space, profile, source, seed=0)  # the sweep's own split (seed 0)
    config = profile.apply(space.base)
    data = split.take(config.train_size, config.val_size)
    per_run = len(data.x_train) * args.epochs
    rows: list[dict] = []

    def bare() -> float:
        from models.autoencoder import build_autoencoder

        graphs = live_graphs()
        seed_everything(0)
        start = time.perf_counter()
        model = build_autoencoder(config, data.input_shape, jit_compile=use_xla())
        model.fit(
            data.x_train,
            data.x_train,
            validation_data=(data.x_val, data.x_val),
            batch_size=config.batch_size,
            epochs=config.epochs,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        del model
        release(graphs)
        return seconds

    from sweep.worker import call_in_process, start_server

    start_server()  # the sweep's trial processes fork from it: warm before anything is timed
    call_in_process(id)
    # Repeat k times both sides: even repeats the bare fit first, odd ones the sweep trial.
    bare_seconds = {0: bare()}

    def measure(study, trial) -> None:
        k = trial.number
        if k % 2:
            bare_seconds[k] = bare()
        bare_s, sweep_s = bare_seconds[k], trial.duration.total_seconds()
        fit_s = trial.user_attrs["train_seconds"]
        rows.append(
            {
                "repeat": k + 1,
                "first": "sweep" if k % 2 else "bare",
                "bare_images_per_s": round(per_run / bare_s, 1),
                "sweep_images_per_s": round(per_run / sweep_s, 1),
                "bare_s": round(bare_s, 2),
                "sweep_s": round(sweep_s, 2),
                "ratio": round(bare_s / sweep_s, 4),
                "sweep_fit_s": round(fit_s, 2),
                "outside_fit_s": round(sweep_s - fit_s, 2),
            }
        )
        r = rows[-1]
        print(
            f"{r['repeat']:>6} {r['first']:>6}{r['bare_images_per_s']:>12.0f}"
            f"{r['sweep_images_per_s']:>12.0f}{r['ratio']:>8.3f}{r['outside_fit_s']:>14.2f}",
            flush=True,
        )
        if k % 2 and k + 1 < args.repeats:
            bare_seconds[k + 1] = bare()

    print(
        f"{'repeat':>6} {'first':>6}{'bare img/s':>12}{'sweep img/s':>12}{'ratio':>8}"
        f"{'outside fit s':>14}"
    )
    run_sweep(
        space,
        profile,
        source,
        default_storage(stores),
        Tracker(default_tracking_uri(stores), artifact_root=stores / "mlartifacts"),
        heartbeat_seconds=None,
        callbacks=[measure],
    )
    write_csv(folder / "overhead.csv", rows)
    ratio = statistics.median(r["ratio"] for r in rows)
    print(
        f"overhead: sweep trial at {ratio:.3f} of bare model.fit's images/s (median of "
        f"{len(rows)} interleaved repeats; target at least {TARGET})"
    )
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
