"""Search spaces as data (SearchSpace, Param) and their translation into Optuna.

This is the one module that translates a space into Optuna (sweep.tuner does keras-tuner).
Values Optuna cannot store (lists of filters, groups of keys) are stored as readable labels and
decoded here only. Reading and checking a space file is sweep.space_file's job.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.config import (
    AutoencoderConfig,
    ClassifierConfig,
    Config,
    ConfigError,
    plain,
    short,
    short_text,
)
from sweep.errors import SweepError
from sweep.points import CONFIRM_SEEDS, REPEAT

if TYPE_CHECKING:
    import optuna

# What a space trains, the config its keys belong to, and the metric its study optimises.
KINDS: dict[str, tuple[type[Config], str, str]] = {
    "autoencoder": (AutoencoderConfig, "val_loss", "minimize"),
    "classifier": (ClassifierConfig, "val_accuracy", "maximize"),
}
SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median", "successive_halving", "hyperband")


# Far beyond any real grid (its trials, repeats included); past it a file is a mistake.
MAX_GRID_POINTS = 10_000


class SpaceError(SweepError):
    """A search-space file is malformed; the message names the file and the key."""


def space_error(path: Path, key: str, message: str) -> SpaceError:
    """The one-line error of a space file: `path: key: message`."""
    return SpaceError(f"{path}: {short_text(key)}: {message}")


@dataclass(frozen=True)
class Param:
    """One varying parameter: a finite set of `values`, or a `low`..`high` range.

    A value is a config value (e.g. a filter list) or, for a group parameter, a mapping of
    several config keys; `labels` are what Optuna stores for the values.
    """

    name: str
    values: tuple[Any, ...] = ()
    labels: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    # Optuna's choices when a study recorded other labels than the space lists now (an edited
    # grid): the recorded choices in their order (Optuna stores a value as its index), then the
    # space's new labels; labels only old trials have are never suggested.
    choices: tuple[Any, ...] = ()

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def ends(self) -> tuple[float | int, float | int]:
        """A range's ends as the type Optuna suggests: ints for an int range (both ends ints, no
        float step), else floats. The load checks these, so that every suggestion is valid."""
        ints = isinstance(self.low, int) and isinstance(self.high, int)
        if ints and not isinstance(self.step, float):
            return self.low, self.high
        return float(self.low), float(self.high)

    @property
    def is_group(self) -> bool:
        return bool(self.values) and isinstance(self.values[0], dict)

    def overrides(self, value: Any) -> dict[str, Any]:
        """The config keys a (decoded) value of this parameter sets."""
        return dict(value) if self.is_group else {self.name: value}

    def decode(self, stored: Any) -> Any:
        """Optuna's stored value -> the config value."""
        if self.is_range:
            return stored
        try:
            return self.values[self.labels.index(stored)]
        except ValueError:
            raise SweepError(
                f"parameter {self.name}={short(stored)} in the study is not one of the space's "
                f"values {short(list(self.labels))}; the space file changed since the study "
                "began: give the study a new name"
            ) from None

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """What Optuna records for this parameter: the labels' choices, or an int range (both
        ends ints, no float step) or a float range."""
        from optuna import distributions

        if not self.is_range:
            return distributions.CategoricalDistribution(self.choices or self.labels)
        low, high = self.ends
        if isinstance(low, int):
            return distributions.IntDistribution(low, high, log=self.log, step=self.step or 1)
        return distributions.FloatDistribution(low, high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial) -> Any:
        from optuna import distributions

        d = self.distribution()
        if isinstance(d, distributions.CategoricalDistribution):
            return self.decode(trial.suggest_categorical(self.name, list(d.choices)))
        if isinstance(d, distributions.IntDistribution):
            return trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
        return trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log)

    @property
    def keys(self) -> tuple[str, ...]:
        """The config keys this parameter sets."""
        if self.is_group:
            return tuple(dict.fromkeys(k for v in self.values for k in v))
        return (self.name,)

    def candidates(self) -> tuple[Any, ...]:
        """Values that together exercise the whole parameter: all values, or both ends."""
        return self.ends if self.is_range else self.values


@dataclass(frozen=True)
class SearchSpace:
    """A validated search-space file."""

    path: Path
    study: str
    base: Config
    params: tuple[Param, ...]
    sampler: str = "grid"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"
    pruner_options: dict[str, Any] = field(default_factory=dict)
    n_trials: int = 1
    description: str = ""
    kind: str = "autoencoder"
    repeats: int = 1
    confirm: int = 0

    @property
    def metric(self) -> str:
        """The per-epoch validation metric the study reports, prunes on and optimises."""
        return KINDS[self.kind][1]

    @property
    def direction(self) -> str:
        return KINDS[self.kind][2]

    @property
    def config_class(self) -> type[Config]:
        return KINDS[self.kind][0]

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def grid(self) -> dict[str, list[Any]]:
        """Optuna's grid: each parameter's stored labels."""
        return {p.name: list(p.labels) for p in self.params}

    def grid_points(self) -> list[dict[str, Any]]:
        """Every trial of the grid: each combination of values, `repeats` times (every point's
        repeat 0 first, then every repeat 1, ...; with one run per point no repeat is
        recorded), so a run cut short has one run of each point before a second of any."""
        names = [p.name for p in self.params]
        points = [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*self.grid().values())
        ]
        if self.repeats == 1:
            return points
        return [{**point, REPEAT: r} for r in range(self.repeats) for point in points]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask the trial for every parameter (and its repeat, with repeats); return the config
        overrides."""
        overrides: dict[str, Any] = {}
        for p in self.params:
            overrides.update(p.overrides(p.suggest(trial)))
        # A queued trial's repeat is fixed (Optuna keeps a queued trial's params in
        # `_fixed_params`); one queued without a repeat (a run with one run per point queued it)
        # is repeat 0. The repeat is never sampled.
        fixed = getattr(trial, "_fixed_params", None) or {}
        if REPEAT in fixed:
            trial.suggest_int(REPEAT, 0, max(self.repeats - 1, int(fixed[REPEAT])))
        elif self.repeats > 1:
            trial.suggest_int(REPEAT, 0, 0 if fixed else self.repeats - 1)
        return overrides

    def decode(self, stored_params: dict[str, Any]) -> dict[str, Any]:
        """A finished trial's stored params -> the config overrides they stand for (its repeat
        is none of them)."""
        overrides: dict[str, Any] = {}
        for p in self.params:
            if p.name in stored_params:
                overrides.update(p.overrides(p.decode(stored_params[p.name])))
        return overrides

    def config_for(self, overrides: dict[str, Any]) -> Any:
        """The base config with a point's overrides. Their values were checked at load (each
        listed value, each range's ends), so only the keys checked together are checked."""
        return self.base.with_normalised(**overrides)

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        import optuna

        options = dict(self.sampler_options)
        options.setdefault("seed", 0)
        if self.sampler == "grid":
            return optuna.samplers.GridSampler(self.grid(), **options)
        cls = optuna.samplers.TPESampler if self.sampler == "tpe" else optuna.samplers.RandomSampler
        return cls(**options)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        import optuna

        if self.pruner == "median":
            return optuna.pruners.MedianPruner(**self.pruner_options)
        if self.pruner == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**self.pruner_options)
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(**self.pruner_options)
        return optuna.pruners.NopPruner()

    def check_images(self, rows: int, cols: int) -> None:
        """Raise SpaceError unless every combination of values the study can try takes `rows`
        x `cols` images (e.g. each pooling keeps both sides even); call it once the data is
        loaded, before any trial. Only parameters of keys checked together are combined."""
        together = coupled(self.base, self.params)
        image_keys = self.base.image_keys
        seen: set[str] = set()
        for overrides in combinations(together):
            shown = repr([overrides.get(k, getattr(self.base, k)) for k in image_keys])
            if shown in seen:
                continue
            seen.add(shown)
            try:
                self.config_for(overrides).check_images(rows, cols)
            except ConfigError as exc:
                names = param_names(p for p in together if set(image_keys) & set(p.keys))
                raise space_error(self.path, names or "base", str(exc)) from None

    def listed(self) -> dict[str, Any]:
        """What the space lists, as plain data a study can record: each parameter's labels,
        or a range's ends."""
        return {
            p.name: {"low": p.low, "high": p.high} if p.is_range else list(p.labels)
            for p in self.params
        }

    def describe(self) -> str:
        parts = []
        for p in self.params:
            if p.is_range:
                ends = f"[{short(p.low)}, {short(p.high)}]"
                parts.append(f"{p.name} in {ends}{' (log)' if p.log else ''}")
            else:
                parts.append(f"{p.name} ({len(p.values)} values)")
        repeats = f", {self.repeats} runs each" if self.repeats > 1 else ""
        if self.confirm:
            best = "best" if self.confirm == 1 else f"{self.confirm} best"
            repeats += f", then its {best} retrained with {CONFIRM_SEEDS} new seeds each"
        return f"{self.sampler} over {', '.join(parts)}{repeats}"


def nothing_left(space: SearchSpace, budget: int) -> str:
    """What a run says when its study's budget is spent, with the way to extend it."""
    if space.sampler == "grid" and budget >= len(space.grid_points()):
        return "Nothing left to run: every point of the grid is done; add values to extend it."
    return "Nothing left to run; raise --n-trials to extend the study."


def param_names(params: Iterable[Param]) -> str:
    """`params.a, params.b`: the keys an error about these parameters names."""
    return ", ".join(f"params.{p.name}" for p in params)


def coupled(base: Config, params: tuple[Param, ...]) -> tuple[Param, ...]:
    """The parameters that set keys the config checks together (e.g. filters, pool_blocks)."""
    keys = set(base.coupled_keys)
    return tuple(p for p in params if keys & set(p.keys))


def combinations(params: tuple[Param, ...]) -> Iterator[dict[str, Any]]:
    """The overrides of every combination of the parameters' values (and range ends)."""
    for combo in itertools.product(*(p.candidates() for p in params)):
        overrides: dict[str, Any] = {}
        for p, value in zip(params, combo, strict=True):
            overrides.update(p.overrides(value))
        yield overrides


def format_value(value: Any) -> Any:
    """Readable label for a value Optuna cannot store; scalars are stored as they are."""
    if isinstance(value, dict):
        return " ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return json.dumps(plain(value))
    return value
