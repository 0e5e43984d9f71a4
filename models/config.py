"""Configurations: frozen dataclasses whose fields are the YAML and `--set` keys."""

from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass
from typing import Any

Stage = int | tuple[int, ...]

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 4, 40, 40, 30
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxfrozenset = 6
_SHORT.maxdict = 4


def short(value: Any) -> str:
    """A repr of a user's value cut to a few dozen characters, so that no message is huge."""
    return _SHORT.repr(value)


def short_text(text: str, limit: int = 120) -> str:
    """`text` on one line, cut in the middle past `limit` characters (keys, names, messages)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 2) :]}"


class ConfigError(ValueError):
    """A configuration value a user supplied is invalid; the message names the key and the fix."""


class Config:
    """Shared behaviour of the config dataclasses: build from plain values, check, export."""

    _normalisers: dict[str, Any] = {}
    # Keys checked together (in __post_init__ and check_images); the others one by one.
    coupled_keys: tuple[str, ...] = ()
    # The keys whose values check_images reads (a subset of coupled_keys).
    image_keys: tuple[str, ...] = ()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build a config from plain (YAML) values, normalising and checking each key."""
        return cls().with_normalised(**cls.normalise(values))

    @classmethod
    def normalise(cls, changes: dict[str, Any]) -> dict[str, Any]:
        """Each value normalised and checked on its own (not against the other keys): the one
        place a user's value is checked. Raises ConfigError naming the first bad key."""
        fields = cls.field_names()
        unknown = [key for key in changes if not isinstance(key, str) or key not in fields]
        if unknown:
            raise ConfigError(f"unknown key {short(unknown[0])}; valid keys: {', '.join(fields)}")
        return {key: cls._normalisers[key](key, value) for key, value in changes.items()}

    def replace(self, **changes: Any):
        """A copy with `changes` (a user's values) applied, each normalised and checked."""
        return self.with_normalised(**self.normalise(changes))

    def with_normalised(self, **values: Any):
        """A copy with `values` that `normalise` returned before (or the project's own): only
        the keys checked together are checked (in __post_init__), the others not again."""
        return dataclasses.replace(self, **values)  # type: ignore[type-var]

    def check_images(self, rows: int, cols: int) -> None:
        """Raise ConfigError if this config cannot take `rows` x `cols` images (once known)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples), suitable for YAML, JSON and MLflow params."""
        return plain(dataclasses.asdict(self))  # type: ignore[call-overload]


def plain(value: Any) -> Any:
    """Lists for tuples and plain dicts, all the way down: what YAML and JSON write."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class AutoencoderConfig(Config):
    """Architecture and training settings of one autoencoder trial.

    `filters` has one entry per stage: an int (one conv) or a tuple of ints (several convs).
    `epochs`, `patience`, `train_size` and `val_size` left as None take the profile's values.
    `precision` is one of PRECISIONS; "auto" is resolved by the sweep for the machine it runs on
    (a builder given "auto" uses float32).
    """

    filters: tuple[Stage, ...] = (32, 64, 128)
    pool_blocks: int = 2
    kernel_size: int = 3
    learning_rate: float = 1e-3
    batch_size: int = 256
    epochs: int | None = None
    patience: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    precision: str = "auto"

    coupled_keys = ("filters", "pool_blocks")
    image_keys = ("pool_blocks",)

    def __post_init__(self) -> None:
        check_stages(self.filters, self.pool_blocks)

    def check_images(self, rows: int, cols: int) -> None:
        check_pooling(self.pool_blocks, (rows, cols))

    @property
    def stages(self) -> tuple[tuple[int, ...], ...]:
        """Each stage's conv filter counts, in order."""
        return tuple(s if isinstance(s, tuple) else (s,) for s in self.filters)


def check_stages(filters: tuple[Stage, ...], pool_blocks: int) -> None:
    """Raise ConfigError unless there is a stage for each of the `pool_blocks` poolings."""
    if pool_blocks > len(filters):
        raise ConfigError(
            f"pool_blocks={short(pool_blocks)} but filters has only {len(filters)} stages; "
            f"use pool_blocks <= {len(filters)}"
        )


def check_depth(filters: tuple[Stage, ...], pool_blocks: int, image: tuple[int, int]) -> None:
    """Raise ConfigError unless `pool_blocks` poolings keep both sides of `image` (rows, cols)
    divisible by 2 each time, so the decoder upsamples back to the same size."""
    check_stages(filters, pool_blocks)
    check_pooling(pool_blocks, image)


def check_pooling(pool_blocks: int, image: tuple[int, int]) -> None:
    """Raise ConfigError unless `pool_blocks` poolings keep both sides of `image` even."""
    rows, cols = image
    side = min(image, key=max_pool_blocks)
    max_pool = max_pool_blocks(side)
    if pool_blocks > max_pool:
        why = f"{side} is odd" if max_pool == 0 else _halvings(side)
        raise ConfigError(
            f"pool_blocks={short(pool_blocks)} is too deep for {rows}x{cols} images: each "
            f"pooling halves the size and it must stay divisible by 2 ({why}); "
            f"use pool_blocks <= {max_pool}"
        )


def max_pool_blocks(image_size: int) -> int:
    """How many 2x2 poolings an image side of `image_size` takes and still upsamples back."""
    count = 0
    while image_size % 2 == 0 and image_size > 1:
        image_size //= 2
        count += 1
    return count


def _halvings(size: int) -> str:
    sizes = [size]
    while sizes[-1] % 2 == 0 and sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return " -> ".join(str(s) for s in sizes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(key: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {short(value)}")
    return value


def _optional_positive_int(key: str, value: Any) -> int | None:
    return None if value is None else _positive_int(key, value)


def _non_negative_int(key: str, value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{key} must be an integer >= 0, got {short(value)}")
    return value


def _learning_rate(key: str, value: Any) -> float:
    if not isinstance(value, float) or not math.isfinite(value) or not 0 < value < 1:
        raise ConfigError(f"{key} must be a number between 0 and 1 (e.g. 1e-3), got {short(value)}")
    return value


def _filters(key: str, value: Any) -> tuple[Stage, ...]:
    hint = "e.g. [32, 64, 128] or [[16, 32], [64, 128], [256]]"
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{key} must be a non-empty list of stages, {hint}; got {short(value)}")
    stages: list[Stage] = []
    for stage in value:
        if _is_int(stage) and stage > 0:
            stages.append(stage)
        elif (
            isinstance(stage, (list, tuple)) and stage and all(_is_int(n) and n > 0 for n in stage)
        ):
            stages.append(tuple(stage))
        else:
            raise ConfigError(
                f"{key}: each stage must be a positive int or a list of them, {hint}; "
                f"got {short(stage)}"
            )
    return tuple(stages)


def _fraction(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{key} must be a number from 0 to below 1, got {short(value)}")
    return float(value)


# Keras dtype policies: mixed ones compute in 16 bits and keep float32 weights and output.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def _precision(key: str, value: Any) -> str:
    if value not in PRECISIONS:
        raise ConfigError(f"{key} must be one of {', '.join(PRECISIONS)}, got {short(value)}")
    return value


AutoencoderConfig._normalisers = {
    "filters": _filters,
    "pool_blocks": _non_negative_int,
    "kernel_size": _positive_int,
    "learning_rate": _learning_rate,
    "batch_size": _positive_int,
    "epochs": _optional_positive_int,
    "patience": _optional_positive_int,
    "train_size": _optional_positive_int,
    "val_size": _optional_positive_int,
    "precision": _precision,
}


@dataclass(frozen=True)
class ClassifierConfig(Config):
    """The classifier stage: encoder -> Flatten -> Dense(units, ReLU) -> Dropout -> softmax.
    `augment` (one of AUGMENTATIONS) changes the training images as they are drawn.

    Phase 1 trains the new layers at `learning_rate` with the encoder frozen; phase 2 trains
    every layer at `finetune_learning_rate`, multiplied by `lr_factor` whenever
    max(1, patience // 2) epochs pass without a better val_loss (1.0: a constant rate).
    `epochs` caps each phase (None: the profile's), `frozen_epochs` phase 1 alone (None: as
    `epochs`); both phases stop early after `patience` epochs without a better val_loss.
    """

    units: int = 128
    dropout: float = 0.0
    augment: str = "none"
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    lr_factor: float = 0.5
    batch_size: int = 256
    epochs: int | None = None
    frozen_epochs: int | None = None
    patience: int = 4
    train_size: int | None = None
    val_size: int | None = None


def _factor(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(
            f"{key} must be a number above 0 and at most 1 (e.g. 0.5), got {short(value)}"
        )
    return float(value)


def _augment(key: str, value: Any) -> str:
    if value not in AUGMENTATIONS:
        raise ConfigError(f"{key} must be one of {', '.join(AUGMENTATIONS)}, got {short(value)}")
    return value


# Training-time augmentation of the classifier's images: random shifts of up to 3 pixels
# (about 10% of 28), and (for datasets where mirror images keep their class, e.g. clothes, not
# digits) left-right mirroring.
AUGMENTATIONS = ("none", "shift", "shift_flip")

ClassifierConfig._normalisers = {
    "units": _positive_int,
    "dropout": _fraction,
    "augment": _augment,
    "learning_rate": _learning_rate,
    "finetune_learning_rate": _learning_rate,
    "lr_factor": _factor,
    "batch_size": _positive_int,
    "epochs": _optional_positive_int,
    "frozen_epochs": _optional_positive_int,
    "patience": _positive_int,
    "train_size": _optional_positive_int,
    "val_size": _optional_positive_int,
}
