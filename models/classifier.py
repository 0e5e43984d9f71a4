"""Classifier on top of a trained encoder: encoder -> Flatten -> Dense -> Dropout -> softmax."""

from __future__ import annotations

import keras
from keras import layers

from models.config import ClassifierConfig

ENCODER_NAME = "encoder"


def build_classifier(encoder: keras.Model, config: ClassifierConfig, n_classes: int) -> keras.Model:
    """The classifier, compiled for phase 1: the encoder frozen, the new layers trainable."""
    encoder.name = ENCODER_NAME
    inputs = keras.Input(shape=encoder.input_shape[1:], name="image")
    x = encoder(inputs)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(config.units, activation="relu", name="dense")(x)
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="classes")(x)
    model = keras.Model(inputs, outputs, name="classifier")
    set_phase(model, 1, config)
    return model


def set_phase(
    model: keras.Model, phase: int, config: ClassifierConfig, jit_compile: bool | str = "auto"
) -> None:
    """Phase 1: encoder frozen, `learning_rate`. Phase 2: all layers, `finetune_learning_rate`.

    A frozen BatchNormalization layer also runs in inference mode, so phase 1 leaves every
    encoder weight, moving statistics included, exactly as the autoencoder left it.
    """
    model.get_layer(ENCODER_NAME).trainable = phase == 2
    rate = config.learning_rate if phase == 1 else config.finetune_learning_rate
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
