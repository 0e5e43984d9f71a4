"""The Optuna study of a space: created or continued, its recorded choices aligned with an
edited grid, which of its trials are points the space lists, and its summary."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.errors import SweepError
from sweep.outcomes import Outcome, describe, summarise
from sweep.points import is_listed
from sweep.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.ERROR)

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
BUSY_STATES = (TrialState.RUNNING, TrialState.WAITING)
STATE_NAMES = {TrialState.FAIL: "failed"}


def open_study(space: SearchSpace, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the space's study, or load it to continue where it stopped."""
    # Grid points are queued one at a time by the workers (next_step), never drawn by a
    # GridSampler, whose choice races between workers; the queued trials fix every parameter.
    sampler = optuna.samplers.RandomSampler() if space.sampler == "grid" else space.make_sampler()
    study = optuna.create_study(
        study_name=space.study,
        storage=storage,
        sampler=sampler,
        pruner=space.make_pruner(),
        direction=space.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != space.direction:
        raise SweepError(
            f"study {space.study!r} in the storage optimises in the other direction; "
            f"give {space.path} another study name"
        )
    if study.user_attrs.get("confirm", 0) != space.confirm:  # what a report expects
        study.set_user_attr("confirm", space.confirm)
    if study.user_attrs.get("kind") != space.kind:
        study.set_user_attr("kind", space.kind)
        study.set_user_attr("metric", space.metric)
    # What the space lists now, so that readers can tell the trials of points it dropped.
    listed = space.listed()
    if study.user_attrs.get("space") != listed:
        study.set_user_attr("space", listed)
    return study


def in_space(trial: optuna.trial.FrozenTrial, space: SearchSpace) -> bool:
    """Whether the trial's point is one the space lists now. A space edited since its study
    began leaves trials of other points behind: kept in both stores, not counted."""
    return is_listed(point(trial), space.listed())


def not_in_space(study: optuna.Study | None, space: SearchSpace) -> int:
    """How many finished trials are of points the space no longer lists."""
    if study is None:
        return 0
    trials = study.get_trials(deepcopy=False, states=(*DONE_STATES, TrialState.FAIL))
    return sum(not in_space(t, space) for t in trials)


def align_choices(study: optuna.Study, space: SearchSpace, storage: Any) -> SearchSpace:
    """The space with Optuna choices its study accepts. Optuna refuses a categorical parameter
    whose choices differ from those recorded: an edited grid keeps the recorded choices and
    appends its new labels, and the recorded distributions are widened to match in the
    storage (values are stored as indices into the choices, so appending keeps every old
    trial's value). Other samplers model their choices, so theirs cannot change."""
    from optuna.distributions import CategoricalDistribution, check_distribution_compatibility

    recorded: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, distribution in trial.distributions.items():
            recorded.setdefault(name, distribution)
    params, widened = [], {}
    for p in space.params:
        old = recorded.get(p.name)
        try:
            if old is not None:
                check_distribution_compatibility(old, p.distribution())
            params.append(p)
            continue
        except ValueError:
            pass
        if p.is_range or not isinstance(old, CategoricalDistribution) or space.sampler != "grid":
            raise SweepError(
                f"{space.path}: params.{p.name} changed since study {space.study!r} began, and "
                f"a {space.sampler} study cannot change it; give the study a new name "
                "(study: NAME in the file) or restore the parameter"
            )
        choices = tuple(old.choices) + tuple(x for x in p.labels if x not in old.choices)
        if choices != tuple(old.choices):
            widened[p.name] = CategoricalDistribution(choices)
        params.append(dataclasses.replace(p, choices=choices))
    if widened:
        _widen_recorded(storage, study, widened)
    return dataclasses.replace(space, params=tuple(params))


def _widen_recorded(storage: Any, study: optuna.Study, widened: dict[str, Any]) -> None:
    """Write the widened distributions over every recorded value of those parameters."""
    from optuna.distributions import distribution_to_json
    from sqlalchemy import text

    update = text(
        "UPDATE trial_params SET distribution_json = :d WHERE param_name = :n AND trial_id IN "
        "(SELECT trial_id FROM trials WHERE study_id = :s)"
    )
    study_id = storage.get_study_id_from_name(study.study_name)
    with storage.engine.begin() as connection:
        for name, distribution in widened.items():
            connection.execute(
                update, {"d": distribution_to_json(distribution), "n": name, "s": study_id}
            )


def find_study(space: SearchSpace, storage: optuna.storages.BaseStorage) -> optuna.Study | None:
    """The space's study if the storage has it; None before its first run."""
    if space.study not in optuna.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=space.study, storage=storage)


def point(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's grid point: the parameters it was queued with, and those its objective has
    suggested so far (a trial in the middle of its suggestions has only some of them, and
    another slot deciding then must see its whole point, its repeat included)."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def outcomes(study: optuna.Study, space: SearchSpace) -> list[Outcome]:
    """The study's trials as a summary reads them."""
    return [
        Outcome(
            number=t.number,
            state=STATE_NAMES.get(t.state, t.state.name.lower()),
            value=t.value if t.state == TrialState.COMPLETE else None,
            params=t.params,
            run_id=t.user_attrs.get("mlflow_run_id"),
            in_space=in_space(t, space),
        )
        for t in study.get_trials(deepcopy=False)
    ]


def best_summary(study: optuna.Study, space: SearchSpace) -> dict[str, Any]:
    """The parent run's summary: counts by state and the best trial, if any."""
    return summarise(outcomes(study, space), space)


def describe_best(study: optuna.Study, space: SearchSpace) -> str:
    """One line: the study's trials by state and the best of them."""
    return describe(best_summary(study, space), space, space.study)
