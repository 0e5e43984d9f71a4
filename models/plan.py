"""The autoencoder's layers as plain data: what `build_autoencoder` builds, in order, with each
layer's output size, and what follows from it without Keras: the parameter count and the
multiply-adds of one image's forward pass. The sweep orders a grid by this cost, most expensive
first, in a process that has not built (and must not build) any model."""

from __future__ import annotations

from dataclasses import dataclass

from models.config import AutoencoderConfig

# BatchNormalization keeps 4 numbers per channel: gamma and beta (trained), the moving mean and
# variance (not trained); Keras' count_params counts all four.
BN_PARAMS_PER_CHANNEL = 4
# A training step costs about three forward passes: the forward pass, then the gradients with
# respect to the activations and to the weights.
TRAIN_PASSES = 3


@dataclass(frozen=True)
class Layer:
    """One layer: "conv" (Conv2D then its BatchNormalization, named `{prefix}_conv{index}` and
    `{prefix}_bn{index}`), "pool", "up" or "out" (the sigmoid reconstruction), with its input
    channels and its output's rows, columns and channels."""

    kind: str
    prefix: str
    index: int
    channels_in: int
    rows: int
    cols: int
    channels: int

    @property
    def name(self) -> str:
        return {
            "conv": f"{self.prefix}_conv{self.index}",
            "pool": f"{self.prefix}_pool",
            "up": f"{self.prefix}_up",
        }.get(self.kind, "reconstruction")


def layer_plan(config: AutoencoderConfig, input_shape: tuple[int, int, int]) -> list[Layer]:
    """The layers `config` describes for images of `input_shape` (rows, cols, channels): the
    encoder's stages, each pooled while `pool_blocks` lasts, mirrored by the decoder, then the
    reconstruction. Every conv keeps its input's size ("same" padding)."""
    rows, cols, channels = input_shape
    plan: list[Layer] = []

    def add(kind: str, prefix: str, index: int, out_channels: int) -> None:
        nonlocal channels
        plan.append(Layer(kind, prefix, index, channels, rows, cols, out_channels))
        channels = out_channels

    for s, stage in enumerate(config.stages, start=1):
        for i, n in enumerate(stage, start=1):
            add("conv", f"enc_s{s}", i, n)
        if s <= config.pool_blocks:
            rows, cols = rows // 2, cols // 2
            add("pool", f"enc_s{s}", 0, channels)
    for s in range(len(config.stages), 0, -1):
        for i, n in enumerate(reversed(config.stages[s - 1]), start=1):
            add("conv", f"dec_s{s}", i, n)
        if s <= config.pool_blocks:
            rows, cols = rows * 2, cols * 2
            add("up", f"dec_s{s}", 0, channels)
    add("out", "", 0, input_shape[-1])
    return plan


def param_count(config: AutoencoderConfig, input_shape: tuple[int, int, int]) -> int:
    """The model's parameter count, as Keras' `count_params` gives it."""
    k2 = config.kernel_size**2
    total = 0
    for layer in layer_plan(config, input_shape):
        if layer.kind in ("conv", "out"):
            total += k2 * layer.channels_in * layer.channels + layer.channels
        if layer.kind == "conv":
            total += BN_PARAMS_PER_CHANNEL * layer.channels
    return total


def multiply_adds(config: AutoencoderConfig, input_shape: tuple[int, int, int]) -> int:
    """Multiply-adds of one image's forward pass through the convolutions (pooling, upsampling
    and batch normalisation are a few operations per value: left out)."""
    k2 = config.kernel_size**2
    return sum(
        layer.rows * layer.cols * k2 * layer.channels_in * layer.channels
        for layer in layer_plan(config, input_shape)
        if layer.kind in ("conv", "out")
    )


def training_cost(
    config: AutoencoderConfig, input_shape: tuple[int, int, int], images: int
) -> float:
    """Multiply-adds of training `config` for its epochs on `images` images (an estimate: early
    stopping may end it sooner). Only its ratio to another trial's means anything."""
    return float(TRAIN_PASSES * multiply_adds(config, input_shape) * images * (config.epochs or 1))
