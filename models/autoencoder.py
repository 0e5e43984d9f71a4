"""Convolutional autoencoder: Conv-BN(-Pool) stages, mirrored by the decoder."""

from __future__ import annotations

import keras
from keras import layers

from models.config import AutoencoderConfig, check_depth
from models.plan import layer_plan

ENCODER_PREFIX = "enc_"
# Keras' default (0.99) leaves the moving statistics far from the data's after the few hundred
# steps of a short run, so inference-mode val_loss comes out several times the training loss.
BN_MOMENTUM = 0.9


def build_autoencoder(
    config: AutoencoderConfig,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    jit_compile: bool | str = "auto",
) -> keras.Model:
    """Compile the autoencoder that `config` describes, for images of `input_shape`;
    `jit_compile` goes to `Model.compile` (Keras' "auto" means XLA wherever it works).

    Layers are named `enc_s{stage}_conv{i}`, `enc_s{stage}_bn{i}`, `enc_s{stage}_pool`, then
    `dec_...`, so the encoder can be cut out by name (see `extract_encoder`); models.plan lists
    them (and what they cost) without Keras.
    """
    check_depth(config.filters, config.pool_blocks, (input_shape[0], input_shape[1]))
    dtype = dtype_policy(config.precision)
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for layer in layer_plan(config, input_shape):
        if layer.kind == "conv":
            x = _conv_bn(x, layer.channels, config.kernel_size, layer.prefix, layer.index, dtype)
        elif layer.kind == "pool":
            x = layers.MaxPooling2D(2, name=layer.name, dtype=dtype)(x)
        elif layer.kind == "up":
            x = layers.UpSampling2D(2, name=layer.name, dtype=dtype)(x)
        else:
            x = layers.Conv2D(
                layer.channels,
                config.kernel_size,
                padding="same",
                activation="sigmoid",
                dtype="float32",
                name=layer.name,
            )(x)
    model = keras.Model(inputs, x, name="autoencoder")
    optimizer = keras.optimizers.Adam(config.learning_rate)
    if dtype == "mixed_float16":  # float16 gradients underflow without loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    return model


def dtype_policy(precision: str) -> str:
    """The Keras dtype policy for a config's precision ("auto" unresolved: float32)."""
    return "float32" if precision == "auto" else precision


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int, prefix: str, i: int, dtype: str):
    """One Conv2D (ReLU, same padding) then its BatchNormalization, named `{prefix}_conv{i}`
    and `{prefix}_bn{i}`."""
    x = layers.Conv2D(
        filters, kernel, padding="same", activation="relu", name=f"{prefix}_conv{i}", dtype=dtype
    )(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn{i}", dtype=dtype)(x)


def encoder_output_name(model: keras.Model) -> str:
    """Name of the encoder's last layer: its last batch normalisation."""
    names = [
        layer.name
        for layer in model.layers
        if layer.name.startswith(ENCODER_PREFIX) and "_bn" in layer.name
    ]
    if not names:
        raise ValueError(f"model {model.name!r} has no encoder layers named {ENCODER_PREFIX}*")
    return names[-1]


def extract_encoder(model: keras.Model) -> keras.Model:
    """The encoder of a built or loaded autoencoder: input to the last encoder BN, same weights."""
    output = model.get_layer(encoder_output_name(model)).output
    return keras.Model(model.inputs, output, name="encoder")


def architecture_rows(model: keras.Model) -> list[dict[str, object]]:
    """One row per layer (name, type, output shape, parameters): the architecture table."""
    return [
        {
            "layer": layer.name,
            "type": type(layer).__name__,
            "output_shape": "x".join(str(d) for d in layer.output.shape[1:]),
            "params": layer.count_params(),
        }
        for layer in model.layers
    ]
