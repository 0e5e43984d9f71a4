"""Each trial's picture of the same validation images above their reconstructions, and the
report's rows of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.image import imread

from reports.sections import reconstructions_page
from reports.studies import StudyData
from sweep.training import write_reconstructions


class Halving:
    """A stand-in model whose reconstruction is half the image."""

    def predict(self, images, verbose=0):
        return images / 2


def test_the_picture_shows_the_images_above_their_reconstructions(tmp_path: Path) -> None:
    images = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    path = tmp_path / "reconstructions.png"
    write_reconstructions(Halving(), images, path)
    picture = imread(path)[..., 0]  # gray: R = G = B
    assert picture.shape == ((28 * 2 + 2) * 3, 28 * 8 * 3)
    top, bottom = picture[: 28 * 3 : 3, ::3], picture[(28 + 2) * 3 :: 3, ::3]
    first = images[0, :, :, 0]
    assert np.allclose(top[:, :28], first, atol=2 / 255)  # 8-bit PNG through the gray colormap
    assert np.allclose(
        bottom[:, :28], first / 2, atol=2 / 255
    )  # 8-bit PNG through the gray colormap


def test_a_one_factor_study_shows_one_row_per_value_in_the_listed_order() -> None:
    trials = pd.DataFrame(
        {
            "number": [0, 1, 2, 3],
            "state": ["complete"] * 4,
            "value": [0.02, 0.01, 0.011, 0.03],
            "repeat": [0, 0, 1, 1],
            "kernel_size": [5, 3, 3, 5],
        }
    )
    pictures = {n: np.full((4, 4, 4), n / 10) for n in range(4)}
    study = StudyData(
        name="kernel",
        params=["kernel_size"],
        value_order={"kernel_size": [3, 5]},
        trials=trials,
        curves=pd.DataFrame(),
        intermediate=pd.DataFrame(),
        reconstructions=pictures,
    )
    fig = reconstructions_page(study)
    labels = [t.get_text() for t in fig.texts[1:]]
    assert labels == ["kernel_size = 3\ntrial 1", "kernel_size = 5\ntrial 0"]  # repeat 0 each
    shown = [ax.images[0].get_array()[0, 0, 0] for ax in fig.axes]
    assert shown == [0.1, 0.0]
