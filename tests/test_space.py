"""Search-space files: the shipped ones load and build; every malformed file names file and key."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from models.config import AutoencoderConfig
from sweep.errors import SweepError
from sweep.space import SpaceError, format_value
from sweep.space_file import apply_overrides, load_space, parse_overrides
from sweep.space_source import shipped_spaces
from tests.conftest import SPACES

SHIPPED = sorted(SPACES.glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


BASE = """
study: s
base:
  filters: [8, 16, 32]
  pool_blocks: 2
"""
P = "params: {kernel_size: {values: [3, 5]}}\n"


def test_all_six_spaces_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= {"filters", "kernel", "batch", "lr", "depth", "joint"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_space_loads_and_builds_its_base_model(path: Path) -> None:
    from sweep.tf_env import import_keras_quietly

    import_keras_quietly()
    from models.autoencoder import build_autoencoder

    space = load_space(path)
    assert space.study == path.stem
    if space.kind == "classifier":
        assert (space.metric, space.direction) == ("val_accuracy", "maximize")
        assert space.param("units").values == (64, 128, 256)
        return
    model = build_autoencoder(space.base)
    assert model.output_shape == (None, 28, 28, 1)
    assert model.count_params() > 0


def test_filters_space_is_the_four_point_grid() -> None:
    space = load_space(SPACES / "filters.yaml")
    assert space.sampler == "grid" and space.n_trials == 4
    assert space.param("filters").values == (
        (8, 16, 32),
        (16, 32, 64),
        (32, 64, 128),
        (64, 128, 256),
    )
    assert space.grid() == {
        "filters": ["[8, 16, 32]", "[16, 32, 64]", "[32, 64, 128]", "[64, 128, 256]"]
    }
    assert (space.base.kernel_size, space.base.learning_rate, space.base.batch_size) == (
        3,
        1e-3,
        256,
    )


def test_joint_space_uses_tpe_with_pruning_and_a_log_range() -> None:
    space = load_space(SPACES / "joint.yaml")
    assert space.sampler == "tpe" and space.pruner in {"median", "hyperband"}
    lr = space.param("learning_rate")
    assert lr.is_range and lr.log
    assert isinstance(space.make_pruner(), optuna.pruners.MedianPruner)


def test_depth_values_set_filters_and_pooling_together() -> None:
    space = load_space(SPACES / "depth.yaml")
    depth = space.param("depth")
    assert depth.keys == ("filters", "pool_blocks")
    assert {"filters": (64, 128), "pool_blocks": 1} in depth.values


def test_suggestions_round_trip_through_optuna_storage(tmp_path: Path) -> None:
    """Values Optuna cannot store are labels in the study and decoded back to configs."""
    space = load_space(SPACES / "depth.yaml")
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="d", storage=storage, sampler=space.make_sampler())
    seen = []

    def objective(trial: optuna.Trial) -> float:
        config = space.config_for(space.suggest(trial))
        seen.append((config.filters, config.pool_blocks))
        return 1.0

    study.optimize(objective, n_trials=4)
    assert set(seen) == {
        ((64, 128), 1),
        ((32, 64, 128), 2),
        (((16, 32), (64, 128), (256,)), 2),
        (((32, 32), (64, 64), (128, 128)), 2),
    }
    reloaded = optuna.load_study(study_name="d", storage=storage)
    for trial in reloaded.trials:
        config = space.config_for(space.decode(trial.params))
        assert isinstance(config, AutoencoderConfig)
        assert all(isinstance(v, str) for v in trial.params.values())


def test_tpe_suggests_inside_the_range() -> None:
    space = load_space(SPACES / "joint.yaml")
    study = optuna.create_study(sampler=space.make_sampler())
    for _ in range(5):
        trial = study.ask()
        overrides = space.suggest(trial)
        assert 1e-4 <= overrides["learning_rate"] <= 1e-2
        assert overrides["kernel_size"] in (2, 3, 5, 7)
        study.tell(trial, overrides["learning_rate"])


def test_format_value_is_readable_and_stable() -> None:
    assert format_value((8, 16, 32)) == "[8, 16, 32]"
    assert format_value(((16, 32), 64)) == "[[16, 32], 64]"
    assert (
        format_value({"filters": [64, 128], "pool_blocks": 1}) == "filters=[64, 128] pool_blocks=1"
    )
    assert format_value(3) == 3


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (BASE + "params: {filters: {values: [[4, 8, 16]]}}\nepochs: 3\n", "epochs", "unknown key"),
        (BASE + "params: {filters: {values: []}}\n", "params.filters.values", "non-empty list"),
        (BASE + "params: {dropout: {values: [0.1]}}\n", "params.dropout", "unknown config key"),
        (
            BASE + "params: {kernel_size: {values: [3], choices: [5]}}\n",
            "params.kernel_size.choices",
            "unknown key",
        ),
        (
            BASE + "params: {kernel_size: {values: [three]}}\n",
            "params.kernel_size.values",
            "positive integer",
        ),
        (
            BASE + "params: {learning_rate: {low: 0.1, high: 0.01}}\nsampler: tpe\nn_trials: 3\n",
            "params.learning_rate",
            "must be below high",
        ),
        (
            BASE
            + "params: {learning_rate: {low: 0, high: 0.01, log: true}}\nsampler: tpe\nn_trials: 3\n",
            "params.learning_rate.low",
            "above 0",
        ),
        (
            BASE + "params: {learning_rate: {low: 1.0e-4, high: 0.01}}\n",
            "params.learning_rate",
            "grid sampler needs a list",
        ),
        (
            BASE
            + "params: {kernel_size: {low: 1, high: 7, step: 2.0}}\nsampler: tpe\nn_trials: 3\n",
            "params.kernel_size",
            "positive integer, got 1.0",  # Optuna would suggest floats: refused at load
        ),
        (
            BASE + "params: {learning_rate: {low: 1.0e-4}}\nsampler: tpe\nn_trials: 3\n",
            "params.learning_rate",
            "both 'low' and 'high'",
        ),
        (
            BASE + "params: {pool_blocks: {values: [1, 4]}}\n",
            "params.pool_blocks.values",
            "only 3 stages",
        ),
        (
            BASE + "params: {depth: {values: [{filters: [8, 16], pool_blocks: 3}]}}\n",
            "params.depth.values",
            "only 2 stages",
        ),
        (
            BASE + "params: {depth: {values: [{filters: [8], stride: 2}]}}\n",
            "params.depth.values",
            "unknown config key stride",
        ),
        (
            BASE + "params: {kernel_size: {values: [3, 3]}}\n",
            "params.kernel_size.values",
            "same value twice",
        ),
        (
            BASE + "params: {kernel_size: {values: [3]}}\nsampler: tpe\n",
            "n_trials",
            "required for the tpe sampler",
        ),
        (
            BASE + "params: {kernel_size: {values: [3, 5]}}\nn_trials: 3\n",
            "n_trials",
            "more than the grid's 2",
        ),
        (
            BASE + "params: {kernel_size: {values: [3]}}\nsampler: annealing\n",
            "sampler",
            "must be one of grid, tpe, random",
        ),
        (
            BASE + "params: {kernel_size: {values: [3]}}\npruner: {name: median, warmup: 2}\n",
            "pruner",
            "invalid options",
        ),
        (BASE + "params: {}\n", "params", "at least one parameter"),
        (
            "study: s\nbase: {filters: [8, 16], pool_blocks: 3}\nparams: {kernel_size: {values: [3]}}\n",
            "base",
            "only 2 stages",
        ),
        (
            "study: s\nbase: {kernel: 3}\nparams: {kernel_size: {values: [3]}}\n",
            "base",
            "unknown key 'kernel'",
        ),
        (
            "study: s\nbase: {filters: [8, 16, 32], pool_blocks: 1}\nparams: {filters: {values: [[8]]}, pool_blocks: {values: [2]}}\n",
            "params.filters, params.pool_blocks",
            "the combination",
        ),
    ],
)
def test_malformed_space_names_file_and_key(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert key in text and message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            BASE + "params: {pool_blocks: {values: [1, 3]}}\n",
            "params.pool_blocks",
            "pool_blocks=3 is too deep for 28x28",
        ),
        (
            "study: s\nbase: {filters: [8, 16, 32, 64], pool_blocks: 2}\n"
            "params: {pool_blocks: {values: [2, 4]}}\n",
            "params.pool_blocks",
            "too deep",
        ),
    ],
)
def test_too_deep_for_the_images_names_file_and_key(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    """Depth against the image size is checked once the images are known, not at load."""
    path = write(tmp_path, text)
    space = load_space(path)
    with pytest.raises(SpaceError) as info:
        space.check_images(28, 28)
    assert str(info.value).startswith(f"{path}: {key}: ") and message in str(info.value)
    space.check_images(64, 64)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"space.yaml: not valid YAML at line 2"):
        load_space(write(tmp_path, "study: s\n  base: [\n"))
    with pytest.raises(SpaceError, match="nope.yaml: file not found"):
        load_space(tmp_path / "nope.yaml")


def test_set_values_are_parsed_as_yaml() -> None:
    parsed = parse_overrides(
        ["filters=[[16,32],[64,128],[256]]", "pool_blocks=2", "learning_rate=3e-4"]
    )
    assert parsed == {
        "filters": [[16, 32], [64, 128], [256]],
        "pool_blocks": 2,
        "learning_rate": 3e-4,
    }


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["kernel"], "expected key=value"),
        (["colour=red"], "unknown config key"),
        (["filters=[1,2"], "cannot parse"),
    ],
)
def test_bad_set_values(items, message) -> None:
    with pytest.raises(SweepError, match=message):
        parse_overrides(items)


def test_set_fixes_base_keys_but_not_varied_ones() -> None:
    space = load_space(SPACES / "filters.yaml")
    changed = apply_overrides(space, {"epochs": 2, "kernel_size": 5})
    assert (changed.base.epochs, changed.base.kernel_size) == (2, 5)
    with pytest.raises(SweepError, match="--set filters: .*varies this key"):
        apply_overrides(space, {"filters": [8]})
    with pytest.raises(SweepError, match="--set: .*pool_blocks=4 but filters has only 3"):
        apply_overrides(space, {"pool_blocks": 4})
    with pytest.raises(SpaceError, match="base: pool_blocks=3 is too deep for 28x28"):
        apply_overrides(space, {"pool_blocks": 3}).check_images(28, 28)


def test_range_candidates_are_both_ends() -> None:
    lr = load_space(SPACES / "joint.yaml").param("learning_rate")
    assert lr.candidates() == (1e-4, 1e-2)
    assert math.isclose(lr.low, 1e-4)


@pytest.mark.parametrize(
    ("text", "value"), [("1e-3", 1e-3), ("3E-4", 3e-4), ("1.0e-2", 1e-2), ("2", 2), ("1.5", 1.5)]
)
def test_numbers_in_scientific_notation_are_floats(text: str, value) -> None:
    from sweep.safe_yaml import load_yaml

    assert load_yaml(text) == value and type(load_yaml(text)) is type(value)


PRUNER_OPTIONS = {
    "median": "n_warmup_steps: 1",
    "successive_halving": "min_resource: 1",
    "hyperband": "min_resource: 1",
    "none": "",
}


@pytest.mark.parametrize(
    ("pruner", "cls"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_each_pruner_name_builds_optunas_class_with_its_options(tmp_path: Path, pruner, cls):
    options = PRUNER_OPTIONS[pruner]
    text = BASE + "params: {kernel_size: {values: [3, 5]}}\n"
    text += f"pruner: {{name: {pruner}{', ' + options if options else ''}}}\n"
    space = load_space(write(tmp_path, text))
    assert type(space.make_pruner()) is cls
    if pruner == "successive_halving":
        assert space.make_pruner()._min_resource == 1


def test_a_bare_name_is_the_shipped_space(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./search_spaces here
    space = load_space("filters")
    assert space.study == "filters" and space.path == shipped_spaces()["filters"]
    assert space.path.read_text() == (SPACES / "filters.yaml").read_text()


def test_an_existing_path_then_the_local_folder_win_over_the_shipped_space(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "filters.yaml").write_text(
        BASE.replace("study: s", "study: mine") + P
    )
    space = load_space("filters")
    assert (space.study, space.path) == ("mine", Path("search_spaces/filters.yaml"))
    (tmp_path / "filters").write_text(BASE + P)
    assert (load_space("filters").study, load_space("filters").path) == ("s", Path("filters"))


def test_an_unknown_name_lists_the_shipped_spaces(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpaceError) as info:
        load_space("filtres")
    message = str(info.value)
    assert message.startswith("filtres: no such file") and "\n" not in message
    assert "shipped spaces: batch, classifier, depth, filters, joint, kernel, lr" in message
    assert set(shipped_spaces()) == {p.stem for p in SHIPPED}
