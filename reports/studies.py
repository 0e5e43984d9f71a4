"""Read the Optuna storage, read-only, into one StudyData per study: its trials and the
values the pruner saw, joined with the MLflow runs those trials recorded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution

from reports.frames import completed, frame
from reports.runs import study_runs
from reports.stores import store_missing
from sweep.errors import SweepError
from sweep.points import CONFIRMS, REPEAT, is_listed, repeat_of
from sweep.storage import OPTUNA, first_open, mask_url, open_storage, store_owner

optuna.logging.set_verbosity(optuna.logging.ERROR)

STATES = ("complete", "running", "waiting", "pruned", "failed")
TRIAL_COLUMNS = {
    "number": "int64",
    "state": "str",
    "value": "float64",
    "train_seconds": "float64",
    "param_count": "float64",
    "best_epoch": "float64",
    "run_id": "str",
    "fail_reason": "str",
    "repeat": "int64",
    "confirms": "bool",
}
INTERMEDIATE_COLUMNS = {"trial": "int64", "epoch": "int64", "value": "float64", "state": "str"}


def no_studies(storage_url: str) -> SweepError:
    """The one-line error for a storage no sweep has written a study to."""
    return SweepError(
        f"no studies in {mask_url(storage_url)} yet; run a sweep first (make sweep-filters)"
    )


def open_studies(storage_url: str) -> optuna.storages.RDBStorage:
    """The storage, opened read-only, or a one-line error when no sweep has written it yet (a
    missing file, or an empty database): reading it creates nothing."""
    if store_missing(storage_url):
        raise no_studies(storage_url)
    with first_open(storage_url, OPTUNA) as tables:
        if store_owner(tables) is None:
            raise no_studies(storage_url)
    return open_storage(storage_url, read_only=True)


def study_names(storage_url: str) -> list[str]:
    """Every study in the storage, sorted."""
    return _names(open_studies(storage_url))


def _names(storage: optuna.storages.BaseStorage) -> list[str]:
    """The names of the studies in an open storage, sorted."""
    return sorted(optuna.get_all_study_names(storage))


@dataclass
class StudyData:
    """Everything the report shows about one study, as DataFrames built by `frame`.

    `trials`: one row per trial (TRIAL_COLUMNS, then one column per parameter any trial has).
    `curves`: long format (trial, metric, epoch, value) from MLflow. `intermediate`: the
    val_loss Optuna saw per epoch (for pruning). `runs`: the MLflow run of each trial, by id.
    """

    name: str
    params: list[str]
    value_order: dict[str, list[Any]]
    trials: pd.DataFrame
    curves: pd.DataFrame
    intermediate: pd.DataFrame
    architectures: dict[str, pd.DataFrame] = field(default_factory=dict)
    run_params: dict[str, str] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    reconstructions: dict[int, Any] = field(default_factory=dict)  # by trial number
    study: optuna.Study | None = None
    kind: str = "autoencoder"
    metric: str = "val_loss"
    maximize: bool = False
    outside: int = 0  # trials of points the space no longer lists: kept, not shown

    @property
    def complete(self) -> pd.DataFrame:
        """The trials that completed."""
        return completed(self.trials)

    @property
    def search(self) -> pd.DataFrame:
        """The trials of its search: all but those retraining its best (sweep.confirm)."""
        return self.trials[~self.trials["confirms"]]

    @property
    def is_one_factor(self) -> bool:
        """Whether the study varies one parameter (its pages compare that parameter's values)."""
        return len(self.params) == 1

    @property
    def note(self) -> str:
        """Why the study has nothing to compare yet, e.g. 'no finished trial yet (1 running)';
        empty once a trial has completed."""
        if self.trials.empty:
            return "no trials yet"
        if self.complete["value"].notna().any():
            return ""
        counts = self.trials["state"].value_counts()
        detail = ", ".join(f"{counts[s]} {s}" for s in _ordered(counts.index))
        busy = set(counts.index) <= {"running", "waiting"}
        return f"no {'finished' if busy else 'complete'} trial yet ({detail})"


def _ordered(states: Iterable[str]) -> list[str]:
    """`states` in the order of STATES, then any others alphabetically."""
    seen = set(states)
    return [s for s in STATES if s in seen] + sorted(seen - set(STATES))


def load_study_data(storage_url: str, tracking_uri: str, name: str) -> StudyData:
    """One study's trials from Optuna, and its curves and architectures from MLflow."""
    study = _load_study(storage_url, name)
    every = study.get_trials(deepcopy=False)
    frozen = [t for t in every if _listed(t, study.user_attrs.get("space"))]
    params, order = _param_order(frozen)
    trials = frame(
        (_trial_row(t, params) for t in frozen),
        {**TRIAL_COLUMNS, **dict.fromkeys(params, "infer")},
    )
    intermediate = frame(
        (
            {"trial": t.number, "epoch": step, "value": value, "state": _state(t)}
            for t in frozen
            for step, value in sorted(t.intermediate_values.items())
        ),
        INTERMEDIATE_COLUMNS,
    )
    tracked = study_runs(tracking_uri, name, trials)
    return StudyData(
        name=name,
        params=params,
        value_order=order,
        trials=trials,
        curves=tracked.curves,
        intermediate=intermediate,
        architectures=tracked.architectures,
        run_params=tracked.run_params,
        runs=tracked.runs,
        reconstructions=tracked.reconstructions,
        study=study,
        kind=str(study.user_attrs.get("kind", "autoencoder")),
        metric=str(study.user_attrs.get("metric", "val_loss")),
        maximize=study.directions[0] == optuna.study.StudyDirection.MAXIMIZE,
        outside=len(every) - len(frozen),
    )


def _load_study(storage_url: str, name: str) -> optuna.Study:
    """Study `name`, or a one-line error that lists the studies there are."""
    storage = open_studies(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(_names(storage)) or "none"
        raise SweepError(
            f"no study {name!r} in {mask_url(storage_url)} (studies: {known}); "
            "run its sweep first, e.g. make sweep-filters"
        ) from None


def _listed(trial: optuna.trial.FrozenTrial, space: dict[str, Any] | None) -> bool:
    """Whether the trial's point is one the space listed at the study's latest run (`sweep run`
    records SearchSpace.listed() as the study's `space` attribute); every trial is, in a study
    recorded before that, and so is one whose params are not set yet."""
    return not space or not trial.params or is_listed(trial.params, space)


def _param_order(trials: list[optuna.trial.FrozenTrial]) -> tuple[list[str], dict[str, list]]:
    """Parameter names in first-seen order (an edited space adds or drops some); categorical
    values in the order the space lists. A trial's repeat is no parameter (its own column)."""
    params: dict[str, list] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            if name not in params and name != REPEAT:
                params[name] = (
                    list(dist.choices) if isinstance(dist, CategoricalDistribution) else []
                )
    return list(params), params


def _state(trial: optuna.trial.FrozenTrial) -> str:
    """The trial's state as the report names it (Optuna's FAIL is 'failed')."""
    return {"fail": "failed"}.get(trial.state.name.lower(), trial.state.name.lower())


def _trial_row(trial: optuna.trial.FrozenTrial, params: list[str]) -> dict[str, Any]:
    """One row of `trials`: its state, value, what it recorded, its parameters."""
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": _state(trial),
        "value": trial.values[0] if trial.values else None,
        "train_seconds": attrs.get("train_seconds"),
        "param_count": attrs.get("param_count"),
        "best_epoch": attrs.get("best_epoch"),
        "run_id": attrs.get("mlflow_run_id"),
        "fail_reason": attrs.get("fail_reason"),
        "repeat": repeat_of(trial.params),
        "confirms": bool(attrs.get(CONFIRMS)),
        **{name: trial.params.get(name) for name in params},
    }
