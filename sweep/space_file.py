"""A search-space file -> a validated SearchSpace, and `--set` values onto it.

The file's structure (keys, lists, ranges, sampler, pruner) is checked here; each value is
checked once, by the config's own normaliser (models.config), and trusted from then on.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from models.config import AutoencoderConfig, Config, ConfigError, short, short_text
from sweep.confirm import parse_confirm
from sweep.errors import SweepError
from sweep.points import REPEAT
from sweep.repeats import parse_repeats
from sweep.safe_yaml import UnsupportedYaml, load_yaml
from sweep.space import (
    KINDS,
    MAX_GRID_POINTS,
    PRUNERS,
    SAMPLERS,
    Param,
    SearchSpace,
    SpaceError,
    combinations,
    coupled,
    format_value,
    param_names,
)
from sweep.space import space_error as fail
from sweep.space_source import find_space, read_space_yaml

TOP_LEVEL_KEYS = (
    "study",
    "kind",
    "description",
    "base",
    "params",
    "sampler",
    "pruner",
    "n_trials",
    "repeats",
    "confirm",
)
_RANGE_KEYS = ("low", "high", "log", "step")
PARAM_KEYS = ("values", *_RANGE_KEYS)
PARAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,99}")
# Far beyond any real space; past them a file is a mistake, and checking it would take long.
MAX_VALUES = 1000
MAX_COMBINATIONS = 1000


def load_space(given: str | Path) -> SearchSpace:
    """Read and validate a search-space file (a path, or a space's name: see find_space);
    every error is one line naming the file and the key."""
    path = find_space(given)
    data = read_space_yaml(path)
    try:
        return _parse(path, data)
    except ConfigError as exc:
        raise SpaceError(f"{path}: {exc}") from None


def _bad_keys(keys: Iterable[Any], valid: tuple[str, ...] | None = None) -> list[Any]:
    """The keys that are not text, or (given `valid`) not one of `valid`, in file order."""
    return [k for k in keys if not isinstance(k, str) or (valid is not None and k not in valid)]


def _check_keys(path: Path, where: str, mapping: dict[Any, Any], valid: tuple[str, ...]) -> None:
    bad = _bad_keys(mapping, valid)
    if bad:
        key = f"{where}.{bad[0]}" if where else str(bad[0])
        raise fail(path, key, f"unknown key; valid keys: {', '.join(valid)}")


def _one_of(path: Path, key: str, raw: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(raw, str) or raw not in allowed:
        raise fail(path, key, f"must be one of {', '.join(allowed)}, got {short(raw)}")
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
        raise fail(path, "params", "must map at least one parameter to its values or range")
    params = tuple(_parse_param(path, name, spec, base) for name, spec in raw_params.items())
    _check_disjoint(path, params)
    _check_combinations(path, base, params)
    sampler, sampler_options = _parse_choice(path, "sampler", data.get("sampler", "grid"), SAMPLERS)
    pruner, pruner_options = _parse_choice(path, "pruner", data.get("pruner", "none"), PRUNERS)
    if sampler == "grid":
        ranged = [p.name for p in params if p.is_range]
        if ranged:
            raise fail(
                path, f"params.{ranged[0]}", "a grid sampler needs a list of values, not a range"
            )
    repeats = parse_repeats(data.get("repeats", 1), sampler, f"{path}: repeats:")
    n_trials = _parse_n_trials(path, data.get("n_trials"), sampler, params, repeats)
    confirm = parse_confirm(data.get("confirm", 0), sampler, n_trials, f"{path}: confirm:")
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
        repeats=repeats,
        confirm=confirm,
    )
    _check_options(path, space)
    return space


def _parse_study(path: Path, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 200 or not raw.isprintable():
        raise fail(path, "study", "must be a non-empty name on one line (at most 200 characters)")
    return raw.strip()


def _parse_description(path: Path, raw: Any) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise fail(path, "description", f"must be text (quote it), got {short(raw)}")
    return raw.strip()


def _parse_base(path: Path, config_class: type[Config], raw: Any) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise fail(path, "base", f"must be a mapping of config keys, got {short(raw)}")
    try:
        return config_class.from_dict(raw)
    except ConfigError as exc:
        raise fail(path, "base", str(exc)) from None


def _parse_param(path: Path, name: Any, spec: Any, base: Config) -> Param:
    key = f"params.{name}"
    if not isinstance(name, str) or not name.strip():
        raise fail(path, key, "a parameter name must be text")
    if name == REPEAT:
        raise fail(path, key, f"{REPEAT!r} names a trial's repeat (see repeats:); rename it")
    if not isinstance(spec, dict):
        raise fail(path, key, "must be a mapping with 'values' or 'low'/'high'")
    _check_keys(path, key, spec, PARAM_KEYS)
    if "values" not in spec:
        return _parse_range(path, name, spec, base)
    if set(spec) & set(_RANGE_KEYS):
        raise fail(path, key, "give either 'values' or a 'low'/'high' range, not both")
    values = spec["values"]
    if not isinstance(values, list) or not values:
        raise fail(path, f"{key}.values", "must be a non-empty list")
    if len(values) > MAX_VALUES:
        raise fail(path, f"{key}.values", f"lists {len(values)} values; give at most {MAX_VALUES}")
    kinds = {isinstance(v, dict) for v in values}
    if len(kinds) > 1:
        raise fail(
            path,
            f"{key}.values",
            "values must be all mappings (a group of keys) or all single values",
        )
    is_group = kinds == {True}
    if is_group and not PARAM_NAME.fullmatch(name):  # other names are config keys
        raise fail(
            path,
            f"params.{name}",
            "a group's name may only hold letters, digits, spaces and _ - . (it is also an "
            "MLflow param name), up to 100 characters",
        )
    _check_value_keys(path, name, values, is_group, base.field_names())
    decoded = tuple(_decode_value(path, name, v, is_group, base) for v in values)
    labels = tuple(format_value(v) for v in values)
    if len(set(labels)) != len(labels):
        raise fail(path, f"{key}.values", "lists the same value twice")
    return Param(name=name, values=decoded, labels=labels)


def _check_value_keys(
    path: Path, name: str, values: list[Any], is_group: bool, fields: tuple[str, ...]
) -> None:
    """A single-value parameter is named after a config key; a group's mappings set them."""
    key = f"params.{name}"
    if not is_group:
        _check_config_key(path, name, fields)
        return
    if name in fields:
        raise fail(path, key, "values that are mappings need a group name that is not a config key")
    for v in values:
        bad = _bad_keys(v, fields)
        if bad or not v:
            what = short_text(str(bad[0]), 40) if bad else "(none given)"
            raise fail(
                path, f"{key}.values", f"unknown config key {what}; valid: {', '.join(fields)}"
            )


def _check_config_key(path: Path, name: str, fields: tuple[str, ...]) -> None:
    """A single-value parameter or a range is named after the config key it sets."""
    if name not in fields:
        raise fail(path, f"params.{name}", f"unknown config key; valid: {', '.join(fields)}")


def _decode_value(path: Path, name: str, value: Any, is_group: bool, base: Config) -> Any:
    """The config value (or, for a group, values) that a listed value stands for, checked by
    the config; keys that are checked together are checked in _check_combinations."""
    try:
        decoded = base.normalise(dict(value) if is_group else {name: value})
    except ConfigError as exc:
        raise fail(path, f"params.{name}.values", str(exc)) from None
    return decoded if is_group else decoded[name]


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _parse_range(path: Path, name: str, spec: dict[str, Any], base: Config) -> Param:
    key = f"params.{name}"
    _check_config_key(path, name, base.field_names())
    if "low" not in spec or "high" not in spec:
        raise fail(path, key, "a range needs both 'low' and 'high' (or give 'values')")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for sub, v in (("low", low), ("high", high)):
        if not _is_number(v):
            raise fail(path, f"{key}.{sub}", f"must be a number, got {short(v)}")
    if low >= high:
        raise fail(path, key, f"low ({short(low)}) must be below high ({short(high)})")
    if not isinstance(log, bool):
        raise fail(path, f"{key}.log", f"must be true or false, got {short(log)}")
    if log and low <= 0:
        raise fail(path, f"{key}.low", "must be above 0 for a log scale")
    if step is not None and (not _is_number(step) or step <= 0 or log):
        raise fail(path, f"{key}.step", "must be a positive number, and cannot be used with log")
    param = Param(name=name, low=low, high=high, log=log, step=step)
    for end in param.ends:  # as Optuna suggests them; every value between is then valid too
        try:
            base.normalise({name: end})
        except ConfigError as exc:
            raise fail(path, key, str(exc)) from None
    return param


def _check_disjoint(path: Path, params: tuple[Param, ...]) -> None:
    """Each config key is set by one parameter at most, so no value silently wins."""
    owners: dict[str, Param] = {}
    for p in params:
        for key in p.keys:
            if key in owners:
                raise fail(
                    path,
                    param_names((owners[key], p)),
                    f"both set {key}; let one parameter set each config key",
                )
            owners[key] = p


def _check_combinations(path: Path, base: Config, params: tuple[Param, ...]) -> None:
    """Every combination of the values of keys checked together must make a valid config,
    e.g. a stage for each pooling; each other value was checked on its own."""
    together = coupled(base, params)
    count = math.prod(len(p.candidates()) for p in together)
    if count > MAX_COMBINATIONS:
        raise fail(
            path,
            param_names(together),
            f"{count:,} combinations of {', '.join(base.coupled_keys)}; "
            f"list fewer values (at most {MAX_COMBINATIONS:,} combinations)",
        )
    for overrides in combinations(together):
        try:
            base.with_normalised(**overrides)
        except ConfigError as exc:
            if len(together) == 1:
                raise fail(path, f"params.{together[0].name}.values", str(exc)) from None
            shown = short_text(str(format_value(overrides)), 80)
            raise fail(
                path, param_names(together), f"the combination {shown} is invalid: {exc}"
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
        raise fail(path, f"{key}.{bad[0]}", "option names must be text, e.g. seed: 1")
    if name == "none" and options:
        raise fail(path, f"{key}.{next(iter(options))}", "the 'none' pruner takes no options")
    return name, options


def _parse_n_trials(
    path: Path, raw: Any, sampler: str, params: tuple[Param, ...], repeats: int = 1
) -> int:
    grid_size = math.prod(len(p.values) for p in params) * repeats if sampler == "grid" else None
    if grid_size is not None and grid_size > MAX_GRID_POINTS:
        raise fail(
            path,
            "params",
            f"the grid has {grid_size:,} points; list fewer values (at most "
            f"{MAX_GRID_POINTS:,} points) or use sampler: tpe with n_trials",
        )
    if raw is None:
        if grid_size is None:
            raise fail(path, "n_trials", f"required for the {sampler} sampler (the trial budget)")
        return grid_size
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise fail(path, "n_trials", f"must be a positive integer, got {short(raw)}")
    if grid_size is not None and raw > grid_size:
        runs = f"{grid_size} trials ({grid_size // repeats} points x {repeats} repeats)"
        whole = f"{grid_size} points" if repeats == 1 else runs
        raise fail(path, "n_trials", f"{short(raw)} is more than the grid's {whole}")
    return raw


def _check_options(path: Path, space: SearchSpace) -> None:
    """Build the sampler and pruner once so a wrong option fails now, not mid-study."""
    for key, make in (("sampler", space.make_sampler), ("pruner", space.make_pruner)):
        try:
            make()
        except (TypeError, ValueError, OverflowError) as exc:
            raise fail(path, key, f"invalid options: {short_text(str(exc))}") from None


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
