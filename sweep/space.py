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
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from models.config import (
    AutoencoderConfig,
    ClassifierConfig,
    Config,
    ConfigError,
    short,
    short_text,
)
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
_RANGE_KEYS = ("low", "high", "log", "step")
PARAM_KEYS = ("values", *_RANGE_KEYS)
# Far beyond any real space; past them a file is a mistake, and reading it would take long.
MAX_YAML_CHARS = 64 * 1024
MAX_YAML_DEPTH = 32
MAX_VALUES = 1000
MAX_COMBINATIONS = 1000
MAX_GRID_POINTS = 10_000
_GIVE_YAML = "give a search-space YAML file"


class UnsupportedYaml(yaml.MarkedYAMLError):
    """YAML that space files and `--set` values may not use; `problem` says what and the fix."""


class YamlLoader(yaml.SafeLoader):
    """Safe YAML that reads 1e-3 as a number (YAML 1.1 wants 1.0e-3 and gives a string).

    It refuses aliases and deep nesting as it composes, before an alias bomb can expand or a
    deep list exhaust the stack, and turns a scalar it cannot construct into a YAML error.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise UnsupportedYaml(
                problem=f"YAML aliases (*{short_text(event.anchor, 40)}) are not supported in "
                "space files or --set values; write the values out",
                problem_mark=event.start_mark,
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise _too_deep(event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        """The scanner reads ahead through nested `[`/`{` (slowly); stop it at the limit."""
        if self.flow_level >= MAX_YAML_DEPTH:
            raise _too_deep(self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError):
            kind = short_text(node.tag.rpartition(":")[2], 30)
            raise UnsupportedYaml(
                problem=f"cannot read {short(node.value)} as a YAML {kind}; write a plain value",
                problem_mark=node.start_mark,
            ) from None


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _too_deep(mark: yaml.Mark) -> UnsupportedYaml:
    return UnsupportedYaml(
        problem=f"values nested more than {MAX_YAML_DEPTH} levels deep are not supported; "
        "flatten the value",
        problem_mark=mark,
    )


def load_yaml(text: str) -> Any:
    """Parse YAML text with YamlLoader; errors are yaml.YAMLError (UnsupportedYaml among them)."""
    if len(text) > MAX_YAML_CHARS:
        raise UnsupportedYaml(
            problem=f"{len(text):,} characters of YAML are too many (at most {MAX_YAML_CHARS:,}); "
            "a search space is a few KB"
        )
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line saying where YAML went wrong and what was wrong."""
    mark = getattr(exc, "problem_mark", None)
    line = f"line {mark.line + 1}" if mark else ""
    if isinstance(exc, UnsupportedYaml):
        return f"{line}: {exc.problem}" if line else str(exc.problem)
    what = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    what = f"{context}: {what}" if context else what
    return f"not valid YAML{' at ' + line if line else ''}: {short_text(what, 160)}"


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
    # Optuna's choices when a study recorded other labels than the space lists now (an edited
    # grid): the recorded choices in their order (Optuna stores a value as its index), then the
    # space's new labels; labels only old trials have are never suggested.
    choices: tuple[Any, ...] = ()

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
        ints = isinstance(self.low, int) and isinstance(self.high, int)
        if ints and not isinstance(self.step, float):
            step = self.step or 1
            return distributions.IntDistribution(self.low, self.high, log=self.log, step=step)
        return distributions.FloatDistribution(
            float(self.low), float(self.high), log=self.log, step=self.step
        )

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

    def check_images(self, rows: int, cols: int) -> None:
        """Raise SpaceError unless every combination of values the study can try takes `rows`
        x `cols` images (e.g. each pooling keeps both sides even); call it once the data is
        loaded, before any trial. Only parameters of keys checked together are combined."""
        coupled = _coupled(self.base, self.params)
        image_keys = self.base.image_keys
        seen: set[str] = set()
        for overrides in _combinations(coupled):
            shown = repr([overrides.get(k, getattr(self.base, k)) for k in image_keys])
            if shown in seen:
                continue
            seen.add(shown)
            try:
                self.base.replace(**overrides).check_images(rows, cols)
            except ConfigError as exc:
                names = _names(p for p in coupled if set(image_keys) & set(p.keys)) or "base"
                raise _fail(self.path, names, str(exc)) from None

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
        return f"{self.sampler} over {', '.join(parts)}"


def nothing_left(space: SearchSpace, budget: int) -> str:
    """What a run says when its study's budget is spent, with the way to extend it."""
    if space.sampler == "grid" and budget >= len(space.grid_points()):
        return "Nothing left to run: every point of the grid is done; add values to extend it."
    return "Nothing left to run; raise --n-trials to extend the study."


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
        data = load_yaml(_read_text(path))
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: {yaml_problem(exc)}") from None
    try:
        return _parse(path, data)
    except ConfigError as exc:
        raise SpaceError(f"{path}: {exc}") from None


def _read_text(path: Path) -> str:
    """The text of a space file; a directory, a device, a huge or binary file is an error."""
    data = _read_bytes(path)
    nul = data.find(b"\0")
    if nul >= 0:
        raise SpaceError(f"{path}: not a text file (NUL byte at offset {nul}); {_GIVE_YAML}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpaceError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); {_GIVE_YAML}"
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise SpaceError(f"{path}: is a directory; {_GIVE_YAML}")
        if not stat.S_ISREG(mode):
            raise SpaceError(f"{path}: not a regular file (a device or pipe); {_GIVE_YAML}")
        with path.open("rb") as file:
            data = file.read(MAX_YAML_CHARS + 1)
    except FileNotFoundError:
        raise SpaceError(
            f"{path}: file not found; the shipped spaces are in search_spaces/"
        ) from None
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read it ({exc.strerror or exc}); {_GIVE_YAML}") from None
    if len(data) > MAX_YAML_CHARS:
        raise SpaceError(
            f"{path}: larger than {MAX_YAML_CHARS // 1024} KiB, too large for a search-space "
            "file (a few KB of YAML); check the path"
        )
    return data


def _fail(path: Path, key: str, message: str) -> SpaceError:
    return SpaceError(f"{path}: {short_text(key)}: {message}")


def _bad_keys(keys: Iterable[Any], valid: tuple[str, ...] | None = None) -> list[Any]:
    """The keys that are not text, or (given `valid`) not one of `valid`, in file order."""
    return [k for k in keys if not isinstance(k, str) or (valid is not None and k not in valid)]


def _check_keys(path: Path, where: str, mapping: dict[Any, Any], valid: tuple[str, ...]) -> None:
    bad = _bad_keys(mapping, valid)
    if bad:
        key = f"{where}.{bad[0]}" if where else str(bad[0])
        raise _fail(path, key, f"unknown key; valid keys: {', '.join(valid)}")


def _one_of(path: Path, key: str, raw: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(raw, str) or raw not in allowed:
        raise _fail(path, key, f"must be one of {', '.join(allowed)}, got {short(raw)}")
    return raw


def _parse(path: Path, data: Any) -> SearchSpace:
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    _check_keys(path, "", data, TOP_LEVEL_KEYS)
    study = _parse_study(path, data.get("study", path.stem))
    kind = _one_of(path, "kind", data.get("kind", "autoencoder"), tuple(KINDS))
    base = _parse_base(path, KINDS[kind][0], data.get("base"))
    raw_params = data.get("params")
    if not isinstance(raw_params, dict) or not raw_params:
        raise _fail(path, "params", "must map at least one parameter to its values or range")
    params = tuple(_parse_param(path, name, spec, base) for name, spec in raw_params.items())
    _check_disjoint(path, params)
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
        study=study,
        base=base,
        params=params,
        sampler=sampler,
        sampler_options=sampler_options,
        pruner=pruner,
        pruner_options=pruner_options,
        n_trials=n_trials,
        description=_parse_description(path, data.get("description")),
        kind=kind,
    )
    _check_options(path, space)
    return space


def _parse_study(path: Path, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 200 or not raw.isprintable():
        raise _fail(path, "study", "must be a non-empty name on one line (at most 200 characters)")
    return raw.strip()


def _parse_description(path: Path, raw: Any) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise _fail(path, "description", f"must be text (quote it), got {short(raw)}")
    return raw.strip()


def _parse_base(path: Path, config_class: type[Config], raw: Any) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(path, "base", f"must be a mapping of config keys, got {short(raw)}")
    try:
        return config_class.from_dict(raw)
    except ConfigError as exc:
        raise _fail(path, "base", str(exc)) from None


PARAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,99}")


def _parse_param(path: Path, name: Any, spec: Any, base: Config) -> Param:
    key = f"params.{name}"
    if not isinstance(name, str) or not name.strip():
        raise _fail(path, key, "a parameter name must be text")
    if not isinstance(spec, dict):
        raise _fail(path, key, "must be a mapping with 'values' or 'low'/'high'")
    _check_keys(path, key, spec, PARAM_KEYS)
    if "values" not in spec:
        return _parse_range(path, name, spec, base)
    if set(spec) & set(_RANGE_KEYS):
        raise _fail(path, key, "give either 'values' or a 'low'/'high' range, not both")
    values = spec["values"]
    if not isinstance(values, list) or not values:
        raise _fail(path, f"{key}.values", "must be a non-empty list")
    if len(values) > MAX_VALUES:
        raise _fail(path, f"{key}.values", f"lists {len(values)} values; give at most {MAX_VALUES}")
    kinds = {isinstance(v, dict) for v in values}
    if len(kinds) > 1:
        raise _fail(
            path,
            f"{key}.values",
            "values must be all mappings (a group of keys) or all single values",
        )
    is_group = kinds == {True}
    if is_group and not PARAM_NAME.fullmatch(name):  # other names are config keys
        raise _fail(
            path,
            f"params.{name}",
            "a group's name may only hold letters, digits, spaces and _ - . (it is also an "
            "MLflow param name), up to 100 characters",
        )
    _check_value_keys(path, name, values, is_group, base.field_names())
    decoded = tuple(_decode_value(path, name, v, is_group, base) for v in values)
    labels = tuple(format_value(v if is_group else _plain(v)) for v in values)
    if len(set(labels)) != len(labels):
        raise _fail(path, f"{key}.values", "lists the same value twice")
    return Param(name=name, values=decoded, labels=labels)


def _check_value_keys(
    path: Path, name: str, values: list[Any], is_group: bool, fields: tuple[str, ...]
) -> None:
    """A single-value parameter is named after a config key; a group's mappings set them."""
    key = f"params.{name}"
    if not is_group:
        if name not in fields:
            raise _fail(path, key, f"unknown config key; valid: {', '.join(fields)}")
        return
    if name in fields:
        raise _fail(
            path, key, "values that are mappings need a group name that is not a config key"
        )
    for v in values:
        bad = _bad_keys(v, fields)
        if bad or not v:
            what = short_text(str(bad[0]), 40) if bad else "(none given)"
            raise _fail(
                path, f"{key}.values", f"unknown config key {what}; valid: {', '.join(fields)}"
            )


def _decode_value(path: Path, name: str, value: Any, is_group: bool, base: Config) -> Any:
    """The config value (or, for a group, values) that a listed value stands for; keys that
    are checked together are checked in _check_combinations."""
    try:
        decoded = base.normalise(dict(value) if is_group else {name: value})
    except ConfigError as exc:
        raise _fail(path, f"params.{name}.values", str(exc)) from None
    return decoded if is_group else decoded[name]


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _parse_range(path: Path, name: str, spec: dict[str, Any], base: Config) -> Param:
    key = f"params.{name}"
    fields = base.field_names()
    if name not in fields:
        raise _fail(path, key, f"unknown config key; valid: {', '.join(fields)}")
    if "low" not in spec or "high" not in spec:
        raise _fail(path, key, "a range needs both 'low' and 'high' (or give 'values')")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for sub, v in (("low", low), ("high", high)):
        if not _is_number(v):
            raise _fail(path, f"{key}.{sub}", f"must be a number, got {short(v)}")
    if low >= high:
        raise _fail(path, key, f"low ({short(low)}) must be below high ({short(high)})")
    if not isinstance(log, bool):
        raise _fail(path, f"{key}.log", f"must be true or false, got {short(log)}")
    if log and low <= 0:
        raise _fail(path, f"{key}.low", "must be above 0 for a log scale")
    if step is not None and (not _is_number(step) or step <= 0 or log):
        raise _fail(path, f"{key}.step", "must be a positive number, and cannot be used with log")
    for v in (low, high):
        try:
            base.normalise({name: v})
        except ConfigError as exc:
            raise _fail(path, key, str(exc)) from None
    return Param(name=name, low=low, high=high, log=log, step=step)


def _names(params: Iterable[Param]) -> str:
    return ", ".join(f"params.{p.name}" for p in params)


def _check_disjoint(path: Path, params: tuple[Param, ...]) -> None:
    """Each config key is set by one parameter at most, so no value silently wins."""
    owners: dict[str, Param] = {}
    for p in params:
        for key in p.keys:
            if key in owners:
                raise _fail(
                    path,
                    _names((owners[key], p)),
                    f"both set {key}; let one parameter set each config key",
                )
            owners[key] = p


def _coupled(base: Config, params: tuple[Param, ...]) -> tuple[Param, ...]:
    """The parameters that set keys the config checks together (e.g. filters, pool_blocks)."""
    keys = set(base.coupled_keys)
    return tuple(p for p in params if keys & set(p.keys))


def _combinations(params: tuple[Param, ...]) -> Iterator[dict[str, Any]]:
    """The overrides of every combination of the parameters' values (and range ends)."""
    for combo in itertools.product(*(p.candidates() for p in params)):
        overrides: dict[str, Any] = {}
        for p, value in zip(params, combo, strict=True):
            overrides.update(p.overrides(value))
        yield overrides


def _check_combinations(path: Path, base: Config, params: tuple[Param, ...]) -> None:
    """Every combination of the values of keys checked together must make a valid config,
    e.g. a stage for each pooling; each other value was checked on its own."""
    coupled = _coupled(base, params)
    count = math.prod(len(p.candidates()) for p in coupled)
    if count > MAX_COMBINATIONS:
        raise _fail(
            path,
            _names(coupled),
            f"{count:,} combinations of {', '.join(base.coupled_keys)}; "
            f"list fewer values (at most {MAX_COMBINATIONS:,} combinations)",
        )
    for overrides in _combinations(coupled):
        try:
            base.replace(**overrides)
        except ConfigError as exc:
            if len(coupled) == 1:
                raise _fail(path, f"params.{coupled[0].name}.values", str(exc)) from None
            shown = short_text(str(format_value(overrides)), 80)
            raise _fail(
                path, _names(coupled), f"the combination {shown} is invalid: {exc}"
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
    name = _one_of(path, key, raw, allowed)
    bad = _bad_keys(options)
    if bad:
        raise _fail(path, f"{key}.{bad[0]}", "option names must be text, e.g. seed: 1")
    if name == "none" and options:
        raise _fail(path, f"{key}.{next(iter(options))}", "the 'none' pruner takes no options")
    return name, options


def _parse_n_trials(path: Path, raw: Any, sampler: str, params: tuple[Param, ...]) -> int:
    grid_size = math.prod(len(p.values) for p in params) if sampler == "grid" else None
    if grid_size is not None and grid_size > MAX_GRID_POINTS:
        raise _fail(
            path,
            "params",
            f"the grid has {grid_size:,} points; list fewer values (at most "
            f"{MAX_GRID_POINTS:,} points) or use sampler: tpe with n_trials",
        )
    if raw is None:
        if grid_size is None:
            raise _fail(path, "n_trials", f"required for the {sampler} sampler (the trial budget)")
        return grid_size
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise _fail(path, "n_trials", f"must be a positive integer, got {short(raw)}")
    if grid_size is not None and raw > grid_size:
        raise _fail(path, "n_trials", f"{short(raw)} is more than the grid's {grid_size} points")
    return raw


def _check_options(path: Path, space: SearchSpace) -> None:
    """Build the sampler and pruner once so a wrong option fails now, not mid-study."""
    for key, make in (("sampler", space.make_sampler), ("pruner", space.make_pruner)):
        try:
            make()
        except (TypeError, ValueError, OverflowError) as exc:
            raise _fail(path, key, f"invalid options: {short_text(str(exc))}") from None


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
            raise SweepError(f"--set {short(item)}: expected key=value, e.g. --set kernel_size=5")
        if key not in fields:
            raise SweepError(
                f"--set {short_text(key, 40)}: unknown config key; valid: {', '.join(fields)}"
            )
        try:
            overrides[key] = load_yaml(text)
        except UnsupportedYaml as exc:
            raise SweepError(f"--set {key}: {exc.problem}") from None
        except yaml.YAMLError:
            raise SweepError(
                f"--set {key}: cannot parse {short(text)} as YAML; "
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
