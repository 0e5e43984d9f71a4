"""Hostile search-space files, `--set` values and configs: each fails fast with one short line."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from models.config import AutoencoderConfig, ConfigError, check_depth
from sweep.errors import SweepError
from sweep.space import SpaceError
from sweep.space_file import apply_overrides, load_space, parse_overrides
from tests.conftest import SPACES

P = "params: {kernel_size: {values: [3]}}\n"
MAX_MESSAGE = 400


def laughs(indent: str) -> str:
    """Billion laughs: nine levels of nine aliases of the level below (9**9 strings)."""
    rows = [f"{indent}- &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"{indent}- &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(rows) + "\n"


def flow_laughs() -> str:
    """The same bomb on one line, as a `--set` value would carry it."""
    levels = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return f"[{', '.join(levels)}]"


def assert_short_line(message: str) -> None:
    assert "\n" not in message and len(message) < MAX_MESSAGE, message[:500]


def load_fails(path: Path) -> str:
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert_short_line(message)
    return message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            f"study: s\ndescription:\n{laughs('  ')}" + P,
            "line 4: YAML aliases (*a0) are not supported in space files",
        ),
        (
            f"study: s\nparams:\n  kernel_size:\n    values:\n{laughs('      ')}",
            "line 6: YAML aliases (*a0) are not supported",
        ),
        ("base: &b {kernel_size: 3}\nparams: {depth: {values: [*b]}}\n", "aliases (*b)"),
        ("base:\n  <<: *nowhere\n" + P, "aliases (*nowhere)"),
        (
            "params:\n  filters:\n    values: " + "[" * 20000 + "]" * 20000 + "\n",
            "line 3: values nested more than 32 levels deep",
        ),
        ("".join(f"{'  ' * i}k{i}:\n" for i in range(40)) + "  " * 40 + "x\n", "nested more"),
        ("kind: [autoencoder]\n" + P, "kind: must be one of autoencoder, classifier, got ['auto"),
        ("kind: {a: 1}\n" + P, "kind: must be one of"),
        ("sampler: [tpe]\n" + P, "sampler: must be one of grid, tpe, random, got ['tpe']"),
        ("pruner: {name: [median]}\n" + P, "pruner: must be one of none, median"),
        ("sampler: {name: tpe, 1: 2}\nn_trials: 2\n" + P, "sampler.1: option names must be text"),
        ("study: {a: 1}\n" + P, "study: must be a non-empty name"),
        ("study: [s]\n" + P, "study: must be a non-empty name"),
        ("description: [a, b]\n" + P, "description: must be text"),
        ("base: [filters]\n" + P, "base: must be a mapping of config keys"),
        (
            "params: {filters: {values: [{}, 3]}}\n",
            "params.filters.values: values must be all mappings (a group of keys) or all single",
        ),
        ("params: {depth: {values: [3, {filters: [8]}]}}\n", "all mappings (a group of keys)"),
        ("1: 2\nb: 3\n" + P, ": 1: unknown key; valid keys: study, kind"),
        ("~: 2\n" + P, ": None: unknown key"),
        ("base: {1: 2, a: 3}\n" + P, "base: unknown key 1; valid keys: filters"),
        ("params: {1: {values: [3]}}\n", "params.1: a parameter name must be text"),
        ("params: {kernel_size: {1: 2, values: [3]}}\n", "params.kernel_size.1: unknown key"),
        ("params: {g: {values: [{1: 2, b: 3}]}}\n", "params.g.values: unknown config key 1"),
        ("params: {kernel_size: [3]}\n", "params.kernel_size: must be a mapping"),
        ("params: [kernel_size]\n", "params: must map at least one parameter"),
        ("n_trials: " + "1" * 5000 + "\n" + P, "line 1: cannot read '1111"),
        ("study: 2020-13-45\n" + P, "line 1: cannot read '2020-13-45' as a YAML timestamp"),
        ("study: !!int abc\n" + P, "cannot read 'abc' as a YAML int"),
        ("n_trials: " + "1" * 4000 + "\n" + P, "n_trials: 1111"),
        ("base: {precision: " + "x" * 20000 + "}\n" + P, "precision must be one of auto"),
        ("base: {filters: [" + ", ".join(["8"] * 300) + ", x]}\n" + P, "each stage"),
        ("base: {learning_rate: [" + ", ".join(["0.5"] * 300) + "]}\n" + P, "between 0 and 1"),
        ("x" * 1000 + ": 1\n" + P, "unknown key; valid keys"),
        ("params: {" + "y" * 1000 + ": {values: [3]}}\n", "unknown config key"),
        (
            "params: {learning_rate: {low: " + "9" * 400 + ", high: 0.01}}\n"
            "sampler: tpe\nn_trials: 2\n",
            "must be below high",
        ),
        (
            "params: {learning_rate: {low: 1.0e-4, high: 0.01, log: [" + "1, " * 300 + "]}}\n"
            "sampler: tpe\nn_trials: 2\n",
            "params.learning_rate.log: must be true or false",
        ),
        (
            "pruner: {name: median, n_startup_trials: [" + "1, " * 300 + "]}\n" + P,
            "pruner: invalid options",
        ),
        (
            "params: {filters: {values: [[8]]}, depth: {values: [{filters: [4]}]}}\n"
            "base: {pool_blocks: 1}\n",
            "params.filters, params.depth: both set filters",
        ),
        (
            "params: {kernel_size: {values: ["
            + ", ".join(map(str, range(1, 201)))
            + "]}, batch_size: {values: ["
            + ", ".join(map(str, range(1, 101)))
            + "]}}\n",
            "params: the grid has 20,000 points",
        ),
        ("params: {kernel_size: {values: [" + "3, " * 1001 + "]}}\n", "lists 1001 values"),
        ("study: s\x07\n" + P, "not valid YAML"),
        (P + "---\n" + P, "not valid YAML at line 2"),
        ("study: !!python/object/apply:os.system [ls]\n" + P, "not valid YAML at line 1"),
        ("#" * 70000 + "\n" + P, "larger than 64 KiB"),
    ],
    ids=lambda v: v[:24] if isinstance(v, str) else None,
)
def test_hostile_yaml_is_one_short_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert fragment in load_fails(path)


@pytest.mark.parametrize(
    "text",
    [
        f"study: s\ndescription:\n{laughs('  ')}" + P,
        "params:\n  filters:\n    values: " + "[" * 20000 + "]" * 20000 + "\n",
        "params:\n  filters:\n    values: " + "{a: " * 10000 + "}" * 10000 + "\n",
    ],
    ids=["billion-laughs", "deep-list", "deep-mapping"],
)
def test_bombs_fail_well_under_a_second(tmp_path: Path, text: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    start = time.perf_counter()
    assert "not supported" in load_fails(path)
    with pytest.raises(SweepError, match="^--set filters: .*not supported"):
        parse_overrides([f"filters={text}"])
    assert time.perf_counter() - start < 0.5


def test_a_mixed_list_keeps_its_old_meaning_when_all_single() -> None:
    """Group values stay groups and single values stay single: the mixed check refuses only
    lists that mix both."""
    space = load_space(SPACES / "joint.yaml")
    assert space.param("depth").is_group and not space.param("kernel_size").is_group


def _directory(tmp_path: Path) -> Path:
    return tmp_path


def _binary(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_bytes(b"study: s\n\xff\xfe\x89PNG\n")
    return path


def _nul(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_bytes(b"study: s\x00\x00\n")
    return path


def _utf16(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text("study: s\n" + P, encoding="utf-16")
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    os.mkfifo(path)
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope.yaml"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_directory, "is a directory; give a search-space YAML file"),
        (_binary, "not a text file (byte 9 is not UTF-8)"),
        (_nul, "not a text file (NUL byte at offset 8)"),
        (_utf16, "not a text file"),
        (_fifo, "not a regular file"),
        (_missing, "file not found"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_a_space_that_is_not_a_text_file_is_one_line(tmp_path: Path, make, fragment: str) -> None:
    assert fragment in load_fails(make(tmp_path))


def test_dev_zero_is_refused_without_reading_it() -> None:
    assert "not a regular file" in load_fails(Path("/dev/zero"))


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        (f"filters={flow_laughs()}", "--set filters: YAML aliases (*a0) are not supported"),
        ("filters=" + "[" * 20000 + "]" * 20000, "--set filters: values nested more than 32"),
        ("kernel_size=" + "1" * 5000, "--set kernel_size: cannot read '1111"),
        ("filters=[" + "8, " * 300, "--set filters: cannot parse '[8, 8"),
        ("filters=" + "8," * 40000, "--set filters: 80,000 characters of YAML are too many"),
        ("x" * 20000 + "=1", "unknown config key; valid: filters"),
        ("k" * 20000, "expected key=value"),
    ],
    ids=lambda v: v[:20],
)
def test_hostile_set_values_are_one_short_line(item: str, fragment: str) -> None:
    with pytest.raises(SweepError) as info:
        parse_overrides([item])
    assert fragment in str(info.value)
    assert_short_line(str(info.value))


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("filters", list(range(1, 100_000)) + ["x"], "got 'x'"),
        ("filters", "f" * 100_000, "non-empty list of stages"),
        ("precision", ["p" * 1000] * 1000, "precision must be one of"),
        ("kernel_size", {"k" * 1000: 1}, "positive integer"),
        ("learning_rate", "1" * 100_000, "between 0 and 1"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_config_messages_show_a_short_repr(key: str, value, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        AutoencoderConfig().replace(**{key: value})
    assert fragment in str(info.value)
    assert_short_line(str(info.value))


@pytest.mark.parametrize(
    ("image", "pool_blocks", "fragment"),
    [
        ((7, 7), 1, "pool_blocks=1 is too deep for 7x7 images: each pooling halves the size"),
        ((7, 7), 1, "(7 is odd); use pool_blocks <= 0"),
        ((28, 14), 2, "too deep for 28x14 images"),
        ((28, 14), 2, "(14 -> 7); use pool_blocks <= 1"),
        ((14, 28), 2, "too deep for 14x28 images"),
        ((32, 32), 6, "(32 -> 16 -> 8 -> 4 -> 2 -> 1); use pool_blocks <= 5"),
    ],
)
def test_depth_is_checked_against_each_side(image, pool_blocks: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_depth((4,) * 6, pool_blocks, image)
    assert fragment in str(info.value)


@pytest.mark.parametrize(("image", "deepest"), [((7, 7), 0), ((28, 14), 1), ((32, 32), 3)])
def test_the_deepest_allowed_pooling_passes(image, deepest: int) -> None:
    check_depth((4, 8, 16), deepest, image)
    AutoencoderConfig(filters=(4, 8, 16), pool_blocks=deepest).check_images(*image)


def test_configs_check_only_what_the_images_do_not_decide() -> None:
    config = AutoencoderConfig(filters=(4, 8, 16), pool_blocks=3)  # fine for 32x32, not 28x28
    with pytest.raises(ConfigError, match="too deep for 28x28"):
        config.check_images(28, 28)
    config.check_images(32, 32)
    with pytest.raises(ConfigError, match="pool_blocks=4 but filters has only 3 stages"):
        AutoencoderConfig(filters=(4, 8, 16), pool_blocks=4)


def write_space(tmp_path: Path, params: str, base: str = "{filters: [4, 8, 16], pool_blocks: 0}"):
    path = tmp_path / "space.yaml"
    path.write_text(f"study: s\nbase: {base}\nparams: {params}\n")
    return load_space(path)


@pytest.mark.parametrize(
    ("params", "image", "fragment"),
    [
        (
            "{pool_blocks: {values: [0, 1, 2]}}",
            (7, 7),
            "params.pool_blocks: pool_blocks=1 is too deep for 7x7 images: each pooling halves "
            "the size and it must stay divisible by 2 (7 is odd); use pool_blocks <= 0",
        ),
        ("{pool_blocks: {values: [1, 2]}}", (28, 14), "pool_blocks=2 is too deep for 28x14"),
        (
            "{depth: {values: [{filters: [4], pool_blocks: 1}, {filters: [4, 8], pool_blocks: 2}]}"
            ", kernel_size: {values: [3, 5]}}",
            (28, 14),
            "params.depth: pool_blocks=2 is too deep for 28x14",
        ),
        ("{kernel_size: {values: [3, 5]}}", (7, 7), "base: pool_blocks=2 is too deep for 7x7"),
    ],
)
def test_space_check_images_names_file_parameter_and_fix(
    tmp_path: Path, params: str, image, fragment: str
) -> None:
    space = write_space(tmp_path, params, "{filters: [4, 8, 16], pool_blocks: 2}")
    with pytest.raises(SpaceError) as info:
        space.check_images(*image)
    assert str(info.value).startswith(f"{space.path}: ")
    assert fragment in str(info.value)
    assert_short_line(str(info.value))
    space.check_images(64, 64)


def test_pool_blocks_3_loads_and_passes_on_32x32_images(tmp_path: Path) -> None:
    space = write_space(tmp_path, "{pool_blocks: {values: [1, 3]}}")
    space.check_images(32, 32)
    with pytest.raises(SpaceError, match="params.pool_blocks: pool_blocks=3 is too deep for 28x28"):
        space.check_images(28, 28)


def test_combinations_are_checked_across_parameters_not_against_the_base(tmp_path: Path) -> None:
    """filters [8] with pool_blocks 0 or 1 is valid although the base pools twice."""
    space = write_space(
        tmp_path,
        "{filters: {values: [[8], [8, 16]]}, pool_blocks: {values: [0, 1]}}",
        "{filters: [4, 8, 16], pool_blocks: 2}",
    )
    assert space.param("filters").values == ((8,), (8, 16))
    space.check_images(2, 2)
    with pytest.raises(SpaceError, match="params.filters, params.pool_blocks: the combination"):
        write_space(
            tmp_path,
            "{filters: {values: [[8]]}, pool_blocks: {values: [0, 2]}}",
            "{filters: [4, 8, 16], pool_blocks: 2}",
        )


def test_check_images_is_cheap_for_the_largest_space(tmp_path: Path) -> None:
    filters = ", ".join(f"[{i}, 8, 8]" for i in range(1, 251))
    space = write_space(
        tmp_path, f"{{filters: {{values: [{filters}]}}, pool_blocks: {{values: [0, 1, 2, 3]}}}}"
    )
    start = time.perf_counter()
    space.check_images(32, 32)
    with pytest.raises(SpaceError, match="pool_blocks=3 is too deep for 28x28"):
        space.check_images(28, 28)
    assert time.perf_counter() - start < 0.5


def test_too_many_coupled_combinations_fail_at_load(tmp_path: Path) -> None:
    filters = ", ".join(f"[{i}, 8, 8]" for i in range(1, 401))
    path = tmp_path / "space.yaml"
    path.write_text(
        f"params: {{filters: {{values: [{filters}]}}, pool_blocks: {{values: [0, 1, 2]}}}}"
    )
    assert "1,200 combinations of filters, pool_blocks" in load_fails(path)


def test_set_values_still_apply_and_are_checked_against_the_images() -> None:
    space = load_space(SPACES / "filters.yaml")
    deeper = apply_overrides(space, parse_overrides(["pool_blocks=3"]))
    assert deeper.base.pool_blocks == 3
    deeper.check_images(32, 32)
    with pytest.raises(SpaceError, match="filters.yaml: base: pool_blocks=3 is too deep for 28x28"):
        deeper.check_images(28, 28)


def test_classifier_spaces_have_nothing_to_check_against_the_images() -> None:
    load_space(SPACES / "classifier.yaml").check_images(7, 7)


def test_the_builder_checks_both_sides() -> None:
    from sweep.tf_env import import_keras_quietly

    import_keras_quietly()
    from models.autoencoder import build_autoencoder

    config = AutoencoderConfig(filters=(2, 4), pool_blocks=1)
    assert build_autoencoder(config, (28, 14, 1)).output_shape == (None, 28, 14, 1)
    with pytest.raises(ConfigError, match="too deep for 28x14 images"):
        build_autoencoder(config.replace(pool_blocks=2), (28, 14, 1))


def test_show_prints_the_classifier_head_on_a_default_encoder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sweep.cli import main

    assert main(["--output", str(tmp_path), "show", str(SPACES / "classifier.yaml")]) == 0
    out = capsys.readouterr().out
    assert "classifier config" in out and "best trained encoder" in out
    for layer in ("encoder", "flatten", "dense", "classes"):
        assert layer in out
    assert "Total parameters: " in out


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"study: s\ndescription:\n{laughs('  ')}" + P, "YAML aliases (*a0) are not supported"),
        (
            "base: {filters: [4, 8, 16], pool_blocks: 3}\n" + P,
            "pool_blocks=3 is too deep for 28x28 images",
        ),
    ],
    ids=["bomb", "too-deep-for-show"],
)
def test_show_of_a_hostile_space_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    from sweep.cli import main

    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert main(["--output", str(tmp_path), "show", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {path}: ") and fragment in captured.err
    assert_short_line(captured.err.rstrip("\n"))


@pytest.mark.parametrize("name", ["arch (filters+depth)", "a,b", "x" * 101, "-lead"])
def test_a_group_name_mlflow_cannot_log_is_refused_at_load(name: str, tmp_path: Path) -> None:
    path = tmp_path / "group.yaml"
    path.write_text(
        f"params:\n  {name!r}:\n    values: [{{filters: [4, 8]}}, {{filters: [8, 16]}}]\n"
    )
    with pytest.raises(SpaceError, match="a group's name may only hold letters"):
        load_space(path)
