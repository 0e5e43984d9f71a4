"""Search efficiency on the joint space: best val_loss reached against epochs spent, for Optuna
TPE with median pruning, keras-tuner Hyperband, random search (Optuna, no pruning) and the grid
of the one-factor studies' values (filters, kernel, batch, lr, depth: each factor varied alone
around the defaults).

    python benchmarks/efficiency.py [--output runs] [--seeds 3] [--first-seed 0] [--subset N]
        [--precision P] [--pruner NAME] [--pruner-options JSON] [--sampler-options JSON]
        [--baseline CSV] [--summary CSV [CSV ...]]

The quick profile (6 epochs, early stopping after 2) on its Fashion-MNIST split, the same data
and weight seed everywhere; the seeds vary the searches' own choices. Optuna and random search
run trial by trial until they have spent at least the larger of 30% of the grid's epochs and
Hyperband's epochs. The order is the grid, then seed by seed Hyperband and Optuna, then random
search. Prints a table, writes <output>/benchmarks/efficiency.csv (every trial,
rewritten after each search, so an interrupted run keeps what it finished), efficiency.png (the
curves) and ends with the key figure. `--precision` trains every search in that precision
instead of the machine's default (the same for all, so the comparison stays fair).
Targets: Optuna with pruning within 2% of the grid's best val_loss using at most 30% of the
grid's epochs; its median best val_loss no worse than Hyperband's at Hyperband's budget.

The Optuna search uses joint.yaml's sampler and pruner unless `--pruner`, `--pruner-options`
or `--sampler-options` (JSON, merged into the file's) say otherwise. `--baseline` takes the
grid, Hyperband and random-search rows it holds from an earlier run's efficiency.csv (same
data size) instead of training them again, to compare Optuna settings at a third of the cost;
`--first-seed` moves the seeds, to check a setting on seeds it was not chosen on. `--summary CSV`
trains nothing and prints the table and key figure of a CSV, an interrupted run's included;
given several (runs of other seeds on the same grid), it joins their searches, the first CSV's
row of a search winning, and draws the plot beside the first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

from common import ROOT, write_csv

GRID_STUDIES = ("filters", "kernel", "batch", "lr", "depth")
SHARE = 0.30
TOLERANCE = 0.02


class Trial(NamedTuple):
    """One finished trial of a search: epochs it trained, its best val_loss, how it ended."""

    epochs: int
    best: float | None
    state: str  # complete, pruned or fail ("" in CSVs written before states were kept)


def optuna_trials(study) -> list[Trial]:
    """Each finished trial, in order."""
    import optuna

    finished = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state not in finished:
            continue
        values = list(trial.intermediate_values.values())
        rows.append(Trial(len(values), min(values) if values else None, trial.state.name.lower()))
    return rows


def stores(folder: Path):
    from sweep.storage import default_storage
    from sweep.tracking import Tracker, default_tracking_uri

    folder.mkdir(parents=True, exist_ok=True)
    return default_storage(folder), Tracker(
        default_tracking_uri(folder), artifact_root=folder / "mlartifacts"
    )


def run_grid(profile, source, folder: Path) -> list[Trial]:
    from sweep.run import run_sweep
    from sweep.space_file import load_space

    rows = []
    for name in GRID_STUDIES:
        space = load_space(ROOT / "search_spaces" / f"{name}.yaml")
        storage, tracker = stores(folder / "grid")
        study = run_sweep(space, profile, source, storage, tracker, heartbeat_seconds=None)
        rows += optuna_trials(study)
        print(f"  grid {name}: {len(rows)} trials so far", flush=True)
    return rows


def run_optuna(space, profile, source, folder: Path, budget: int) -> list[Trial]:
    """One study (one sampler, so TPE learns from every trial) stopped once `budget` epochs
    are spent."""
    from sweep.run import run_sweep

    storage, tracker = stores(folder)
    spent = 0

    def limit(study, trial) -> None:
        nonlocal spent
        spent += len(trial.intermediate_values)
        if spent >= budget:
            study.stop()

    study = run_sweep(
        space,
        profile,
        source,
        storage,
        tracker,
        n_trials=10_000,
        heartbeat_seconds=None,
        callbacks=[limit],
    )
    return optuna_trials(study)


def run_hyperband(space, profile, source, folder: Path, seed: int) -> list[Trial]:
    from sweep.search import run_search

    _, tracker = stores(folder)
    records = run_search(
        space, profile, source, tracker, folder, tuner="hyperband", search_seed=seed
    )
    return [
        Trial(r.epochs_trained, r.best_val_loss, r.state)
        for r in sorted(records, key=lambda r: r.number)
    ]


def load_baseline(path: Path, optuna: bool = False) -> dict[str, list[Trial]]:
    """The grid, Hyperband and random rows of an earlier efficiency.csv (and the Optuna rows
    with `optuna`), by search label."""
    import csv

    rows: dict[str, list[Trial]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["search"].startswith("optuna") and not optuna:
                continue
            value = float(row["best_val_loss"]) if row["best_val_loss"] else None
            trial = Trial(int(row["epochs"]), value, row.get("state", ""))
            rows.setdefault(row["search"], []).append(trial)
    return rows


def load_runs(paths: list[Path]) -> dict[str, list[Trial]]:
    """Every search of these efficiency.csv files; a search in several comes from the first.
    ValueError, with what to pass instead, when a file is missing, not one of the benchmark's,
    or no file holds the grid."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(
            f"no such CSV {', '.join(missing)}; pass an efficiency.csv that an earlier run wrote"
        )
    curves: dict[str, list[Trial]] = {}
    for path in paths:
        try:
            runs = load_baseline(path, optuna=True)
        except (KeyError, ValueError) as exc:  # a column missing, a value not a number
            raise ValueError(
                f"{exc} is not what an efficiency.csv holds; pass one that an earlier run wrote"
            ) from exc
        for label, trials in runs.items():
            curves.setdefault(label, trials)
    if "grid" not in curves:
        raise ValueError("no grid rows in these CSVs; pass the run that trained the grid first")
    return curves


def best_within(rows: list[Trial], budget: float) -> float:
    """Best val_loss among the trials finished within `budget` epochs (inf if none)."""
    spent, best = 0, math.inf
    for epochs, value, _ in rows:
        spent += epochs
        if spent > budget:
            break
        if value is not None:
            best = min(best, value)
    return best


def save(curves: dict[str, list[Trial]], path: Path) -> None:
    """Every trial of every search so far, one CSV row each."""
    rows = [
        {"search": label, "trial": i, "epochs": t.epochs, "best_val_loss": t.best, "state": t.state}
        for label, trials in curves.items()
        for i, t in enumerate(trials)
    ]
    write_csv(path, rows)


def plot(curves: dict[str, list[Trial]], grid_best: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {
        "optuna-tpe-pruned": "C0",
        "keras-tuner-hyperband": "C1",
        "random": "C2",
        "grid": "C3",
    }
    labelled: set[str] = set()
    for label, rows in curves.items():
        xs, ys, spent, best = [], [], 0, math.inf
        for epochs, value, _ in rows:
            spent += epochs
            if value is not None:
                best = min(best, value)
            if math.isfinite(best):
                xs.append(spent)
                ys.append(best)
        method = label.split(" seed")[0]
        ax.step(
            xs,
            ys,
            where="post",
            color=colours.get(method, "k"),
            alpha=0.8,
            label=None if method in labelled else method,
        )
        labelled.add(method)
    ax.axhline(grid_best * (1 + TOLERANCE), color="C3", ls=":", label="grid best + 2%")
    ax.set_xlabel("epochs spent")
    ax.set_ylabel("best val_loss so far")
    ax.set_title("Search efficiency on the joint space")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"Wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument(
        "--subset",
        type=int,
        default=None,
        help="training-file images (default: the quick profile's)",
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "mixed_bfloat16", "mixed_float16"),
        help="train every search in this precision (default: the machine's)",
    )
    parser.add_argument("--pruner", help="the Optuna search's pruner (default: joint.yaml's)")
    parser.add_argument("--pruner-options", type=json.loads, default=None, metavar="JSON")
    parser.add_argument("--sampler-options", type=json.loads, default={}, metavar="JSON")
    parser.add_argument(
        "--baseline", type=Path, metavar="CSV", help="reuse the other searches' rows of this CSV"
    )
    parser.add_argument(
        "--summary",
        type=Path,
        nargs="+",
        metavar="CSV",
        help="train nothing: print the table and key figure of these CSVs (e.g. an interrupted "
        "run, or runs of other seeds on the same grid)",
    )
    args = parser.parse_args()
    if args.summary:
        try:
            curves = load_runs(args.summary)
        except ValueError as exc:
            print(f"efficiency: {exc}", file=sys.stderr)
            return 2
        return report(curves, args.summary[0].with_suffix(".png"))

    from sweep.data import find_source
    from sweep.profiles import get_profile
    from sweep.space_file import load_space

    profile = get_profile("quick")
    if args.subset:
        profile = dataclasses.replace(profile, subset=args.subset)
    if args.precision:
        profile = dataclasses.replace(profile, precision=args.precision)
    source = find_source("fashion-mnist")
    folder = Path(args.output) / "benchmarks" / "efficiency"
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    joint = load_space(ROOT / "search_spaces" / "joint.yaml")
    print(
        f"profile {profile.name}, {profile.subset} images, {profile.epochs} epochs, precision "
        f"{profile.precision}",
        flush=True,
    )
    csv_path = folder.parent / "efficiency.csv"

    tpe = dataclasses.replace(
        joint,
        sampler_options={**joint.sampler_options, **args.sampler_options},
        pruner=args.pruner or joint.pruner,
        pruner_options=joint.pruner_options if args.pruner_options is None else args.pruner_options,
        confirm=0,  # the search alone: its epochs against Hyperband's
    )
    tpe.make_pruner()  # a wrong option fails now
    print(f"Optuna: {tpe.sampler} {tpe.sampler_options}, pruner {tpe.pruner} {tpe.pruner_options}")
    baseline = load_baseline(args.baseline) if args.baseline else {}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    curves: dict[str, list[Trial]] = {}
    if "grid" in baseline:
        curves["grid"] = baseline["grid"]
    else:
        curves["grid"] = run_grid(profile, source, folder)
        save(curves, csv_path)
    grid_epochs = sum(t.epochs for t in curves["grid"])
    grid_best = min(t.best for t in curves["grid"] if t.best is not None)
    print(
        f"grid: {len(curves['grid'])} trials, {grid_epochs} epochs, best {grid_best:.5f}",
        flush=True,
    )
    hb_epochs: list[int] = []
    for seed in seeds:  # Hyperband, then Optuna with at least Hyperband's epochs, seed by seed
        label = f"keras-tuner-hyperband seed {seed}"
        rows = (
            baseline[label]
            if label in baseline
            else run_hyperband(joint, profile, source, folder / f"hyperband-{seed}", seed)
        )
        curves[label] = rows
        save(curves, csv_path)
        hb_epochs.append(sum(t.epochs for t in rows))
        print(f"hyperband seed {seed}: {hb_epochs[-1]} epochs", flush=True)
        budget = max(math.ceil(SHARE * grid_epochs), *hb_epochs)
        seeded = dataclasses.replace(tpe, sampler_options={**tpe.sampler_options, "seed": seed})
        curves[f"optuna-tpe-pruned seed {seed}"] = run_optuna(
            seeded, profile, source, folder / f"tpe-{seed}", budget
        )
        save(curves, csv_path)
        print(f"tpe seed {seed} done", flush=True)
    budget = max(math.ceil(SHARE * grid_epochs), *hb_epochs)
    for seed in seeds:  # last: the targets need only the grid, Hyperband and Optuna
        label = f"random seed {seed}"
        if label in baseline:
            curves[label] = baseline[label]
            continue
        random = dataclasses.replace(
            joint,
            sampler="random",
            sampler_options={"seed": seed},
            pruner="none",
            pruner_options={},
        )
        curves[label] = run_optuna(random, profile, source, folder / f"random-{seed}", budget)
        save(curves, csv_path)
        print(f"random seed {seed} done", flush=True)
    return report(curves, folder.parent / "efficiency.png")


def report(curves: dict[str, list[Trial]], png: Path) -> int:
    """Print the table and the key figure, draw the plot; 0 when both targets hold."""
    grid_epochs = sum(t.epochs for t in curves["grid"])
    grid_best = min(t.best for t in curves["grid"] if t.best is not None)
    hb_budget = max(
        (sum(t.epochs for t in r) for k, r in curves.items() if "hyperband" in k), default=0
    )
    share_budget = SHARE * grid_epochs
    summary = []
    print(
        f"\n{'search':<32}{'trials':>7}{'complete':>9}{'epochs':>8}{'best':>10}"
        f"{f'best@{share_budget:.0f}':>12}{f'best@{hb_budget}':>12}"
    )
    for label, trials in curves.items():
        spent = sum(t.epochs for t in trials)
        complete = sum(t.state == "complete" for t in trials)
        final = min((t.best for t in trials if t.best is not None), default=math.inf)
        at_share, at_hb = best_within(trials, share_budget), best_within(trials, hb_budget)
        summary.append((label, at_share, at_hb))
        print(
            f"{label:<32}{len(trials):>7}{complete:>9}{spent:>8}{final:>10.5f}"
            f"{at_share:>12.5f}{at_hb:>12.5f}"
        )
    plot(curves, grid_best, png)

    missing = [m for m in ("optuna", "hyperband") if not any(m in label for label, _, _ in summary)]
    if missing:
        print(f"efficiency: no {' or '.join(missing)} search in these rows yet; no key figure")
        return 1
    tpe_share = statistics.median(s for label, s, _ in summary if label.startswith("optuna"))
    tpe_hb = statistics.median(h for label, _, h in summary if label.startswith("optuna"))
    hb = statistics.median(h for label, _, h in summary if "hyperband" in label)
    gap = tpe_share / grid_best - 1
    first, second = gap <= TOLERANCE, tpe_hb <= hb
    print(
        f"efficiency: Optuna TPE+pruning median best {tpe_share:.5f} within {share_budget:.0f} "
        f"epochs (30% of the grid's {grid_epochs}) vs grid best {grid_best:.5f}: {gap:+.1%} "
        f"(target <= +2%: {'met' if first else 'NOT met'}); at Hyperband's {hb_budget} epochs "
        f"median {tpe_hb:.5f} vs Hyperband {hb:.5f} ({'met' if second else 'NOT met'})"
    )
    return 0 if first and second else 1


if __name__ == "__main__":
    sys.exit(main())
