"""Model builders without any sweep: shapes, parameter counts, layer order, the encoder cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep.tf_env import import_keras_quietly

keras = import_keras_quietly()

from models.autoencoder import (  # noqa: E402
    architecture_rows,
    build_autoencoder,
    encoder_output_name,
    extract_encoder,
)
from models.config import AutoencoderConfig, ConfigError  # noqa: E402


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def layer_kinds(model: keras.Model) -> list[str]:
    short = {
        "Conv2D": "Conv",
        "BatchNormalization": "BN",
        "MaxPooling2D": "Pool",
        "UpSampling2D": "Up",
    }
    return [
        short[type(layer).__name__] + (str(layer.filters) if hasattr(layer, "filters") else "")
        for layer in model.layers
        if type(layer).__name__ in short
    ]


def test_example_from_the_spec_has_the_mirrored_layer_order() -> None:
    model = build_autoencoder(AutoencoderConfig(filters=(8, 16, 32), pool_blocks=2, kernel_size=3))
    encoder = "Conv8 BN Pool Conv16 BN Pool Conv32 BN"
    decoder = "Conv32 BN Conv16 BN Up Conv8 BN Up Conv1"
    assert layer_kinds(model) == encoder.split() + decoder.split()
    assert model.output_shape == (None, 28, 28, 1)


def test_parameter_count_matches_the_arithmetic() -> None:
    model = build_autoencoder(AutoencoderConfig(filters=(8, 16, 32), kernel_size=3))
    convs = [(1, 8), (8, 16), (16, 32), (32, 32), (32, 16), (16, 8), (8, 1)]
    bn = 4 * (8 + 16 + 32 + 32 + 16 + 8)
    assert model.count_params() == sum(conv(3, a, b) for a, b in convs) + bn == 21441


def test_multi_conv_stages_reverse_inside_the_decoder() -> None:
    config = AutoencoderConfig(filters=((16, 32), (64, 128), 256), pool_blocks=2, kernel_size=3)
    model = build_autoencoder(config)
    encoder = "Conv16 Conv32 Conv64 Conv128 Conv256"
    decoder = "Conv256 Conv128 Conv64 Conv32 Conv16 Conv1"
    convs = [k for k in layer_kinds(model) if k.startswith("Conv")]
    assert convs == encoder.split() + decoder.split()
    assert model.get_layer("enc_s3_bn1").output.shape[1:] == (7, 7, 256)


@pytest.mark.parametrize(
    ("filters", "pool_blocks", "bottleneck"),
    [((64, 128), 1, (14, 14, 128)), ((8, 16), 0, (28, 28, 16)), ((8, 16, 32), 2, (7, 7, 32))],
)
def test_pooling_depths(filters, pool_blocks, bottleneck) -> None:
    model = build_autoencoder(AutoencoderConfig(filters=filters, pool_blocks=pool_blocks))
    assert extract_encoder(model).output_shape[1:] == bottleneck
    assert model.output_shape == (None, 28, 28, 1)


def test_kernel_size_and_learning_rate_are_applied() -> None:
    model = build_autoencoder(
        AutoencoderConfig(filters=(4,), pool_blocks=1, kernel_size=5, learning_rate=3e-4)
    )
    assert model.get_layer("enc_s1_conv1").kernel_size == (5, 5)
    assert model.get_layer("reconstruction").kernel_size == (5, 5)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    assert model.loss == "mse"


def test_too_deep_for_28_pixels_explains_why() -> None:
    config = AutoencoderConfig(filters=(8, 16, 32, 64), pool_blocks=3)  # images not known yet
    with pytest.raises(ConfigError, match=r"28 -> 14 -> 7.*pool_blocks <= 2"):
        config.check_images(28, 28)
    with pytest.raises(ConfigError, match=r"28x28 images.*28 -> 14 -> 7.*pool_blocks <= 2"):
        build_autoencoder(config)
    with pytest.raises(ConfigError, match="only 2 stages"):
        AutoencoderConfig().replace(filters=[8, 16], pool_blocks=3)


def test_other_image_sizes_are_checked_by_the_builder() -> None:
    config = AutoencoderConfig(filters=(4, 8), pool_blocks=2)
    assert build_autoencoder(config, (32, 32, 1)).output_shape == (None, 32, 32, 1)
    with pytest.raises(ConfigError, match="10x10"):
        build_autoencoder(config, (10, 10, 1))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("filters", [], "non-empty list"),
        ("filters", [8, "x"], "each stage"),
        ("filters", [8, [0, 4]], "each stage"),
        ("kernel_size", 0, "positive integer"),
        ("kernel_size", 2.5, "positive integer"),
        ("learning_rate", 5, "between 0 and 1"),
        ("learning_rate", "fast", "between 0 and 1"),
        ("batch_size", True, "positive integer"),
        ("pool_blocks", -1, ">= 0"),
    ],
)
def test_config_rejects_bad_values(key, value, message) -> None:
    with pytest.raises(ConfigError, match=f"{key}.*{message}"):
        AutoencoderConfig().replace(**{key: value})


def test_config_from_yaml_values_normalises_lists() -> None:
    config = AutoencoderConfig.from_dict({"filters": [[16, 32], [64], 128], "learning_rate": 0.01})
    assert config.filters == ((16, 32), (64,), 128)
    assert config.stages == ((16, 32), (64,), (128,))
    assert config.to_dict()["filters"] == [[16, 32], [64], 128]
    with pytest.raises(ConfigError, match="unknown key 'dropout'"):
        AutoencoderConfig.from_dict({"dropout": 0.1})


def test_encoder_shares_weights_and_survives_save_and_load(tmp_path: Path) -> None:
    model = build_autoencoder(AutoencoderConfig(filters=(4, 8), pool_blocks=2))
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert encoder_output_name(loaded) == "enc_s2_bn1"
    np.testing.assert_allclose(
        extract_encoder(loaded).predict(x, verbose=0),
        extract_encoder(model).predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    assert extract_encoder(model).layers[1] is model.layers[1]


def test_architecture_rows_sum_to_the_parameter_count() -> None:
    model = build_autoencoder(AutoencoderConfig(filters=(8, 16, 32)))
    rows = architecture_rows(model)
    assert sum(r["params"] for r in rows) == model.count_params()
    first_conv = {"layer": "enc_s1_conv1", "type": "Conv2D", "output_shape": "28x28x8"}
    assert rows[1] == {**first_conv, "params": 80}


def test_seeded_fits_repeat_and_track_the_best_epoch() -> None:
    from sweep.data import subset_and_split
    from sweep.training import fit_autoencoder, seed_everything
    from tests.conftest import make_images

    split = subset_and_split(*make_images(120))
    config = AutoencoderConfig(filters=(2, 4), batch_size=32, epochs=2, patience=2)
    results = []
    for _ in range(2):
        seed_everything(7)
        results.append(fit_autoencoder(build_autoencoder(config), split, config))
    assert results[0].val_loss == pytest.approx(results[1].val_loss, rel=1e-4)
    assert len(results[0].loss) == 2
    assert results[0].best_val_loss == min(results[0].val_loss)
    assert results[0].best_epoch == results[0].val_loss.index(results[0].best_val_loss) + 1


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_computes_in_16_bits_and_keeps_float32_weights_and_output(
    precision: str,
) -> None:
    model = build_autoencoder(AutoencoderConfig(filters=(4, 8), pool_blocks=1, precision=precision))
    conv = model.get_layer("enc_s1_conv1")
    assert conv.compute_dtype == precision.removeprefix("mixed_")
    assert conv.kernel.dtype == "float32"
    assert model.get_layer("reconstruction").compute_dtype == "float32"
    out = model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0)
    assert out.dtype == np.float32
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")


def test_auto_and_float32_precision_build_a_float32_model() -> None:
    for precision in ("auto", "float32"):
        model = build_autoencoder(
            AutoencoderConfig(filters=(4,), pool_blocks=1, precision=precision)
        )
        assert {layer.compute_dtype for layer in model.layers[1:]} == {"float32"}


def test_an_unknown_precision_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="precision must be one of auto, float32, mixed_bf"):
        AutoencoderConfig().replace(precision="float16")


def test_the_gpu_input_pipeline_trains_like_the_arrays() -> None:
    from sweep.data import Split
    from sweep.training import fit_autoencoder, seed_everything

    rng = np.random.default_rng(0)
    images = rng.random((96, 28, 28, 1), dtype=np.float32)
    split = Split(images[:64], np.zeros(64, int), images[64:], np.zeros(32, int))
    config = AutoencoderConfig(filters=(4,), pool_blocks=1, epochs=2, patience=2, batch_size=16)
    losses = {}
    for pipeline in (False, True):
        seed_everything(0)
        fit = fit_autoencoder(build_autoencoder(config), split, config, pipeline=pipeline)
        assert len(fit.val_loss) == 2 and all(np.isfinite(fit.val_loss))
        losses[pipeline] = fit.loss[-1]
    assert losses[True] == pytest.approx(losses[False], rel=0.2)  # same model, other batch order


@pytest.mark.parametrize(("backend", "expected"), [("jax", True), ("torch", False)])
def test_train_steps_compile_on_jax_always_and_never_on_torch(
    monkeypatch: pytest.MonkeyPatch, backend: str, expected: bool
) -> None:
    from sweep.tf_env import has_gpu, use_xla

    assert use_xla() == has_gpu()  # TensorFlow: XLA on GPUs only (slower on the CPU)
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    assert use_xla() is expected  # eager JAX would run op by op
