"""Several trials at once: the filters sweep (search_spaces/filters.yaml, the quick profile) run
whole, as `make sweep-filters` runs it, once per arm (`--jobs 1`, `--jobs auto`, ...), each in
fresh stores of its own, interleaved over rounds (the arms' order reversed every round).

    python benchmarks/slots.py [--output runs] [--rounds 1] [--arm "--jobs 1" --arm "--jobs auto"]
                               [--profile quick] [--set KEY=VALUE ...]

An arm is `sweep run` options, after any VAR=VALUE words for its environment (e.g.
"TF_ENABLE_ONEDNN_OPTS=0 --jobs 1": the sweep as it ran before slots and oneDNN).

Per arm: the sweep's wall time (the `sweep run` command from start to exit), how it shared the
machine (the "Slots:" line it printed), and per configuration the trial's images/s and best
val_loss, so that slots can be seen not to change results beyond run-to-run noise. On a GPU
machine, `--profile full --arm "--jobs 1 --gpus 0" --arm "--jobs 2 --gpus 0" --arm "--jobs 4
--gpus 0"` measures k trials per GPU. Prints as it goes, writes <output>/benchmarks/slots.csv
and ends with each arm's speed-up over the first. Target: `--jobs auto` at least 1.4x `--jobs 1`
on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, write_csv

TARGET = 1.4


def run_arm(arm: str, folder: Path, args: argparse.Namespace) -> dict:
    """One whole sweep in fresh stores under `folder`; its wall time and printed slots line."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    words = shlex.split(arm)
    env = dict(os.environ)
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=VALUE first
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    command = [
        sys.executable,
        "-m",
        "sweep",
        "--output",
        str(folder),
        "run",
        str(ROOT / "search_spaces" / "filters.yaml"),
        "--profile",
        args.profile,
        *words,
    ]
    if args.set:
        command += ["--set", *args.set]
    started = time.perf_counter()
    with open(folder / "sweep.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    seconds = time.perf_counter() - started
    printed = (folder / "sweep.log").read_text()
    if done.returncode != 0:
        sys.exit(f"{arm}: sweep exited {done.returncode}; see {folder / 'sweep.log'}")
    slots = next((line[7:] for line in printed.splitlines() if line.startswith("Slots: ")), "?")
    return {"seconds": seconds, "slots": slots}


def trials(folder: Path) -> list[dict]:
    """Each trial's configuration, images/s, training seconds and best val_loss."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="filters", storage=f"sqlite:///{folder / 'optuna.db'}")
    rows = []
    for t in study.trials:
        rows.append(
            {
                "filters": t.params.get("filters"),
                "state": t.state.name,
                "best_val_loss": t.value,
                "train_seconds": t.user_attrs.get("train_seconds"),
                "epochs": t.user_attrs.get("epochs_run"),
                "threads": t.user_attrs.get("intra_op_threads"),
                "peak_rss_mib": t.user_attrs.get("peak_rss_mib"),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--arm", action="append", help='sweep run options, e.g. "--jobs 2"')
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    arms = args.arm or ["--jobs 1", "--jobs auto"]
    out = Path(args.output).resolve() / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    print(f"filters sweep, profile {args.profile}, {cores} cores; arms: {arms}", flush=True)
    rows: list[dict] = []
    for round_ in range(args.rounds):
        order = arms if round_ % 2 == 0 else arms[::-1]
        for arm in order:
            folder = out / "slots" / f"round{round_}-{arms.index(arm)}"
            result = run_arm(arm, folder, args)
            print(
                f"round {round_}  {arm:<24} {result['seconds']:8.1f} s  slots: {result['slots']}",
                flush=True,
            )
            for t in trials(folder):
                images = t["epochs"] and t["train_seconds"] and _images(folder, t)
                print(
                    f"    filters {str(t['filters']):<16} {t['state']:<8} best val_loss "
                    f"{t['best_val_loss']:.5f}  {t['train_seconds']:7.1f} s  "
                    f"{images:7.1f} images/s  threads {t['threads']}  "
                    f"peak {t['peak_rss_mib']} MiB",
                    flush=True,
                )
                rows.append(
                    {"round": round_, "arm": arm, **result, **t, "images_per_second": images}
                )
    write_csv(out / "slots.csv", rows)
    walls: dict[str, list[float]] = {}
    for row in rows:
        walls.setdefault(row["arm"], [])
        if row["seconds"] not in walls[row["arm"]]:
            walls[row["arm"]].append(row["seconds"])
    base = sum(walls[arms[0]]) / len(walls[arms[0]])
    for arm in arms:
        mean = sum(walls[arm]) / len(walls[arm])
        print(f"{arm:<24} mean wall {mean:8.1f} s  speed-up over {arms[0]!r}: {base / mean:.2f}x")
    print(f"target: --jobs auto at least {TARGET}x --jobs 1 on a 2-core CPU")
    return 0


def _images(folder: Path, trial: dict) -> float:
    """Training images/s of a trial, from its MLflow run (images x epochs / train seconds)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("filters")
    for run in client.search_runs([experiment.experiment_id], "tags.`sweep.role` = 'trial'"):
        if run.data.params.get("filters") == str(trial["filters"]):
            return float(run.data.metrics.get("images_per_second", float("nan")))
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
