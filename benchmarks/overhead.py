"""What a sweep adds to training: images per second of a sweep trial (MLflow tracking, Optuna
pruning checks, callbacks, model logging and the clean-up after it) against a bare
`model.fit` of the same model on the same data, interleaved in one process.

    python benchmarks/overhead.py [--output runs] [--repeats 3] [--epochs 6] [--subset N]

Both sides train the default autoencoder on the quick profile's split for the same epochs, with
the same seed and precision; the bare side times build + `model.fit` alone, the sweep side the
whole trial (its own process included: sweeps train each trial in one). The last column is the
trial's wall time outside its `model.fit`. Each repeat runs both, alternating which goes
first. Prints a table, writes <output>/benchmarks/overhead.csv, and ends with the key figure.
Target: ratio at least 0.97.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
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

    from sweep.data import find_source
    from sweep.profiles import get_profile
    from sweep.space import load_space
    from sweep.storage import default_storage
    from sweep.study import make_objective, run_sweep
    from sweep.tf_env import use_xla
    from sweep.tracking import Tracker, default_tracking_uri
    from sweep.training import live_graphs, release, seed_everything

    space = load_space(space_file)
    profile = get_profile("quick")
    if args.subset:
        profile = dataclasses.replace(profile, subset=args.subset)
    rows: list[dict] = []

    def bare(split, seed: int) -> float:
        from models.autoencoder import build_autoencoder

        config = profile.apply(space.base)
        data = split.take(config.train_size, config.val_size)
        graphs = live_graphs()
        seed_everything(seed)
        start = time.perf_counter()
        model = build_autoencoder(config, data.input_shape, jit_compile=use_xla())
        model.fit(data.x_train, data.x_train, validation_data=(data.x_val, data.x_val),
                  batch_size=config.batch_size, epochs=config.epochs, verbose=0)  # fmt: skip
        seconds = time.perf_counter() - start
        del model
        release(graphs)
        return seconds

    def measured(space_, profile_, split, tracker, parent, run_params, progress):
        objective = make_objective(space_, profile_, split, tracker, parent, run_params, progress)
        images = len(split.take(space.base.train_size, space.base.val_size).x_train)
        per_run = images * args.epochs

        value = 0.0

        def trial_seconds(trial) -> float:
            nonlocal value
            start = time.perf_counter()
            value = objective(trial)
            return time.perf_counter() - start

        def wrapped(trial):
            if trial.number % 2 == 0:
                bare_s, sweep_s = bare(split, run_params["seed"]), trial_seconds(trial)
            else:
                sweep_s, bare_s = trial_seconds(trial), bare(split, run_params["seed"])
            rows.append({
                "repeat": trial.number + 1, "first": "bare" if trial.number % 2 == 0 else "sweep",
                "bare_images_per_s": round(per_run / bare_s, 1),
                "sweep_images_per_s": round(per_run / sweep_s, 1),
                "bare_s": round(bare_s, 2), "sweep_s": round(sweep_s, 2),
                "ratio": round(bare_s / sweep_s, 4),
                "sweep_fit_s": round(trial.user_attrs["train_seconds"], 2),
                "outside_fit_s": round(sweep_s - trial.user_attrs["train_seconds"], 2),
            })  # fmt: skip
            r = rows[-1]
            print(f"{r['repeat']:>6} {r['first']:>6}{r['bare_images_per_s']:>12.0f}"
                  f"{r['sweep_images_per_s']:>12.0f}{r['ratio']:>8.3f}"
                  f"{r['outside_fit_s']:>14.2f}", flush=True)  # fmt: skip
            return value

        return wrapped

    print(f"{'repeat':>6} {'first':>6}{'bare img/s':>12}{'sweep img/s':>12}{'ratio':>8}"
          f"{'outside fit s':>14}")  # fmt: skip
    run_sweep(
        space,
        profile,
        find_source("fashion-mnist"),
        default_storage(stores),
        Tracker(default_tracking_uri(stores), artifact_root=stores / "mlartifacts"),
        progress_stream=io.StringIO(),
        objective_factory=measured,
        heartbeat_seconds=None,
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
