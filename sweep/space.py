"""Search spaces: YAML file -> validated SearchSpace -> Optuna suggestions.

This is the one module that translates the YAML into Optuna. Values Optuna cannot store
(lists of filters, groups of keys) are stored as readable labels and decoded here only.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from models.config import AutoencoderConfig, ClassifierConfig, Config, ConfigError
from sweep.errors import SweepError

if TYPE_CHECKING:
    import optuna

TOP_LEVEL_KEYS = (
    "study", "kind", "description", "base", "params", "sampler", "pruner", "n_trials",
)  # fmt: skip
# What a space trains, the config its keys belong to, and the metric its study optimises.
KINDS: dict[str, tuple[type[Config], str, str]] = {
    "autoencoder": (AutoencoderConfig, "val_loss", "minimize"),
    "classifier": (ClassifierConfig, "val_accuracy", "maximize"),
}
SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
_RANGE_KEYS = {"low", "high", "log", "step"}


class YamlLoader(yaml.SafeLoader):
    """Safe YAML that reads 1e-3 as a number (YAML 1.1 wants 1.0e-3 and gives a string)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass


class SpaceError(SweepError):
    """A search-space file is malformed; the message names the file and the key."""


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

    @property
    def is_range(self) -> bool:
        return self.low is not None

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
                f"parameter {self.name}={stored!r} in the study is not one of the space's "
                f"values {list(self.labels)}; the space file changed since the study began: "
                "give the study a new name"
            ) from None

    def suggest(self, trial: optuna.Trial) -> Any:
        if not self.is_range:
            return self.decode(trial.suggest_categorical(self.name, list(self.labels)))
        if (
            isinstance(self.low, int)
            and isinstance(self.high, int)
            and not isinstance(self.step, float)
        ):
            return trial.suggest_int(
                self.name, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_float(
            self.name, float(self.low), float(self.high), step=self.step, log=self.log
        )

    @property
    def keys(self) -> tuple[str, ...]:
        """The config keys this parameter sets."""
        if self.is_group:
            return tuple(dict.fromkeys(k for v in self.values for k in v))
        return (self.name,)

    def candidates(self) -> tuple[Any, ...]:
        """Values that together exercise the whole parameter: all values, or both ends."""
        return (self.low, self.high) if self.is_range else self.values


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
        names = [p.name for p in self.params]
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*self.grid().values())
        ]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask the trial for every parameter; return the config overrides."""
        overrides: dict[str, Any] = {}
        for p in self.params:
            overrides.update(p.overrides(p.suggest(trial)))
        return overrides

    def decode(self, stored_params: dict[str, Any]) -> dict[str, Any]:
        """A finished trial's stored params -> the config overrides they stand for."""
        overrides: dict[str, Any] = {}
        for p in self.params:
            if p.name in stored_params:
                overrides.update(p.overrides(p.decode(stored_params[p.name])))
        return overrides

    def config_for(self, overrides: dict[str, Any]) -> Any:
        return self.base.replace(**overrides)

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

    def describe(self) -> str:
        parts = []
        for p in self.params:
            if p.is_range:
                parts.append(f"{p.name} in [{p.low}, {p.high}]{' (log)' if p.log else ''}")
            else:
                parts.append(f"{p.name} ({len(p.values)} values)")
        return f"{self.sampler} over {', '.join(parts)}"


def format_value(value: Any) -> Any:
    """Readable label for a value Optuna cannot store; scalars are stored as they are."""
    if isinstance(value, dict):
        return " ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return json.dumps(_plain(value))
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file; every error names the file and the key."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text())
    except FileNotFoundError:
        raise SpaceError(
            f"{path}: file not found; the shipped spaces are in search_spaces/"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    try:
        return _parse(path, data)
    except ConfigError as exc:
        raise SpaceError(f"{path}: {exc}") from None


def _fail(path: Path, key: str, message: str) -> SpaceError:
    return SpaceError(f"{path}: {key}: {message}")


def _parse(path: Path, data: Any) -> SearchSpace:
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise _fail(path, unknown[0], f"unknown key; valid keys: {', '.join(TOP_LEVEL_KEYS)}")
    study = data.get("study", path.stem)
    if not isinstance(study, str) or not study.strip():
        raise _fail(path, "study", "must be a non-empty name")
    kind = data.get("kind", "autoencoder")
    if kind not in KINDS:
        raise _fail(path, "kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    config_class = KINDS[kind][0]
    base_values = data.get("base") or {}
    if not isinstance(base_values, dict):
        raise _fail(path, "base", "must be a mapping of config keys")
    try:
        base = config_class.from_dict(base_values)
    except ConfigError as exc:
        raise _fail(path, "base", str(exc)) from None
    raw_params = data.get("params")
    if not isinstance(raw_params, dict) or not raw_params:
        raise _fail(path, "params", "must map at least one parameter to its values or range")
    params = tuple(_parse_param(path, name, spec, base) for name, spec in raw_params.items())
    _check_combinations(path, base, params)
    sampler, sampler_options = _parse_choice(path, "sampler", data.get("sampler", "grid"), SAMPLERS)
    pruner, pruner_options = _parse_choice(path, "pruner", data.get("pruner", "none"), PRUNERS)
    if sampler == "grid":
        ranged = [p.name for p in params if p.is_range]
        if ranged:
            raise _fail(
                path, f"params.{ranged[0]}", "a grid sampler needs a list of values, not a range"
            )
    n_trials = _parse_n_trials(path, data.get("n_trials"), sampler, params)
    space = SearchSpace(
        path=path,
        study=study.strip(),
        base=base,
        params=params,
        sampler=sampler,
        sampler_options=sampler_options,
        pruner=pruner,
        pruner_options=pruner_options,
        n_trials=n_trials,
        description=str(data.get("description", "")).strip(),
        kind=kind,
    )
    _check_options(path, space)
    return space


def _parse_param(path: Path, name: Any, spec: Any, base: Config) -> Param:
    key = f"params.{name}"
    fields = base.field_names()
    if not isinstance(spec, dict):
        raise _fail(path, key, "must be a mapping with 'values' or 'low'/'high'")
    unknown = sorted(set(spec) - _RANGE_KEYS - {"values"})
    if unknown:
        raise _fail(
            path,
            f"{key}.{unknown[0]}",
            "unknown key; use 'values', or 'low', 'high', 'log', 'step'",
        )
    if "values" in spec:
        if set(spec) & _RANGE_KEYS:
            raise _fail(path, key, "give either 'values' or a 'low'/'high' range, not both")
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise _fail(path, f"{key}.values", "must be a non-empty list")
        is_group = all(isinstance(v, dict) for v in values)
        if is_group:
            if name in fields:
                raise _fail(
                    path, key, "values that are mappings need a group name that is not a config key"
                )
            for v in values:
                bad = sorted(set(v) - set(fields))
                if bad or not v:
                    raise _fail(
                        path,
                        f"{key}.values",
                        f"unknown config key {bad[0] if bad else '(none given)'}; "
                        f"valid: {', '.join(fields)}",
                    )
        elif name not in fields:
            raise _fail(path, key, f"unknown config key; valid: {', '.join(fields)}")
        decoded = []
        for v in values:
            overrides = dict(v) if is_group else {name: v}
            try:
                config = base.replace(**overrides)
            except ConfigError as exc:
                raise _fail(path, f"{key}.values", str(exc)) from None
            decoded.append(
                {k: getattr(config, k) for k in overrides} if is_group else getattr(config, name)
            )
        labels = tuple(format_value(v if is_group else _plain(v)) for v in values)
        if len(set(labels)) != len(labels):
            raise _fail(path, f"{key}.values", "lists the same value twice")
        return Param(name=str(name), values=tuple(decoded), labels=labels)
    if name not in fields:
        raise _fail(path, key, f"unknown config key; valid: {', '.join(fields)}")
    if "low" not in spec or "high" not in spec:
        raise _fail(path, key, "a range needs both 'low' and 'high' (or give 'values')")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for sub, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _fail(path, f"{key}.{sub}", f"must be a number, got {v!r}")
    if low >= high:
        raise _fail(path, key, f"low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise _fail(path, f"{key}.log", f"must be true or false, got {log!r}")
    if log and low <= 0:
        raise _fail(path, f"{key}.low", "must be above 0 for a log scale")
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or log
    ):
        raise _fail(path, f"{key}.step", "must be a positive number, and cannot be used with log")
    for v in (low, high):
        try:
            base.replace(**{name: v})
        except ConfigError as exc:
            raise _fail(path, key, str(exc)) from None
    return Param(name=str(name), low=low, high=high, log=log, step=step)


def _check_combinations(path: Path, base: Config, params: tuple[Param, ...]) -> None:
    """Every combination of values (and range ends) must make a valid config, e.g. a depth
    the image size can take."""
    for combo in itertools.product(*(p.candidates() for p in params)):
        overrides: dict[str, Any] = {}
        for p, value in zip(params, combo, strict=True):
            overrides.update(p.overrides(value))
        try:
            base.replace(**overrides)
        except ConfigError as exc:
            names = ", ".join(f"params.{p.name}" for p in params)
            raise _fail(
                path, names, f"the combination {format_value(overrides)} is invalid: {exc}"
            ) from None


def _parse_choice(
    path: Path, key: str, raw: Any, allowed: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    """`sampler: tpe` or `sampler: {name: tpe, seed: 1, ...}` -> name, options."""
    if raw is None:
        raw = allowed[0] if key == "sampler" else "none"
    options: dict[str, Any] = {}
    if isinstance(raw, dict):
        options = dict(raw)
        raw = options.pop("name", None)
    if raw not in allowed:
        raise _fail(path, key, f"must be one of {', '.join(allowed)}, got {raw!r}")
    if raw == "none" and options:
        raise _fail(path, f"{key}.{next(iter(options))}", "the 'none' pruner takes no options")
    return raw, options


def _parse_n_trials(path: Path, raw: Any, sampler: str, params: tuple[Param, ...]) -> int:
    grid_size = math.prod(len(p.values) for p in params) if sampler == "grid" else None
    if raw is None:
        if grid_size is None:
            raise _fail(path, "n_trials", f"required for the {sampler} sampler (the trial budget)")
        return grid_size
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise _fail(path, "n_trials", f"must be a positive integer, got {raw!r}")
    if grid_size is not None and raw > grid_size:
        raise _fail(path, "n_trials", f"{raw} is more than the grid's {grid_size} points")
    return raw


def _check_options(path: Path, space: SearchSpace) -> None:
    """Build the sampler and pruner once so a wrong option fails now, not mid-study."""
    for key, make in (("sampler", space.make_sampler), ("pruner", space.make_pruner)):
        try:
            make()
        except (TypeError, ValueError) as exc:
            raise _fail(path, key, f"invalid options: {exc}") from None


def parse_overrides(
    assignments: list[str], config_class: type = AutoencoderConfig
) -> dict[str, Any]:
    """`--set key=value` strings -> {key: value}, values parsed as YAML."""
    overrides: dict[str, Any] = {}
    fields = config_class.field_names()
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError(f"--set {item!r}: expected key=value, e.g. --set kernel_size=5")
        if key not in fields:
            raise SweepError(f"--set {key}: unknown config key; valid: {', '.join(fields)}")
        try:
            overrides[key] = load_yaml(text)
        except yaml.YAMLError:
            raise SweepError(
                f"--set {key}: cannot parse {text!r} as YAML; "
                "quote lists: --set 'filters=[8,16,32]'"
            ) from None
    return overrides


def apply_overrides(space: SearchSpace, overrides: dict[str, Any]) -> SearchSpace:
    """The space with `--set` values fixed in its base config (they win over the file)."""
    if not overrides:
        return space
    varying = {key for p in space.params for key in p.keys}
    clash = sorted(set(overrides) & varying)
    if clash:
        raise SweepError(
            f"--set {clash[0]}: {space.path} varies this key; drop the --set or edit the file"
        )
    try:
        base = space.base.replace(**overrides)
    except ConfigError as exc:
        raise SweepError(f"--set: {exc}") from None
    try:
        _check_combinations(space.path, base, space.params)
    except SpaceError as exc:
        raise SweepError(f"--set: {exc}") from None
    return dataclasses.replace(space, base=base)
