"""Test-time augmentation for the confidence (`digits-infer --tta`): the model also sees each image zoomed by
0.9 and 1.1 about its centre, and the confidence becomes the mean probability of the predicted digit over the
three views. A digit that the model only recognises at one exact size is a doubtful one.

Measured on the style suite (README, "Confidence"), this puts more of the errors into the lowest-confidence
rows than the model's own probability; it costs two more model passes per image, so it is a flag. The
prediction and p0..p9 stay those of the image as preprocessed: the wrapped classifier returns them as columns
0-9 and the confidence as column 10, which infer.confidence reads.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from infer.backends import Classifier
from infer.preprocess import SIZE

ZOOMS = (0.9, 1.1)  # chosen on held-out digits (see bench/ranking.py's docstring), not on the style suite
CENTRE = (SIZE - 1) / 2


@cache
def zoom_taps(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear zoom about the centre as 4 taps per output pixel: (indices 4×784, weights 4×784); pixels that
    fall outside the frame read black (weight 0)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    sy, sx = (ys - CENTRE) / scale + CENTRE, (xs - CENTRE) / scale + CENTRE
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    fy, fx = sy - y0, sx - x0
    indices, weights = [], []
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        y, x = y0 + dy, x0 + dx
        inside = (y >= 0) & (y < SIZE) & (x >= 0) & (x < SIZE)
        indices.append(np.where(inside, y * SIZE + x, 0).ravel())
        weights.append(np.where(inside, weight, 0.0).ravel())
    return np.stack(indices), np.stack(weights).astype(np.float32)


def zoomed(images: np.ndarray, scale: float) -> np.ndarray:
    """float32 N×1×28×28 → the same images zoomed by `scale` about the frame's centre."""
    flat = images.reshape(len(images), SIZE * SIZE)
    indices, weights = zoom_taps(scale)
    out = sum(flat[:, indices[k]] * weights[k] for k in range(4))
    return np.ascontiguousarray(out, dtype=np.float32).reshape(images.shape)


def with_tta(classify: Classifier) -> Classifier:
    """A classifier giving N×11: the model's probabilities on the images, then the mean probability of the
    predicted digit over the images and their zoomed views (one model call on all views together)."""

    def run(images: np.ndarray) -> np.ndarray:
        count = len(images)
        every = classify(np.concatenate([images, *(zoomed(images, s) for s in ZOOMS)]))
        probabilities = every[:count]
        predicted = probabilities.argmax(1)
        rows = np.arange(count)
        views = every.reshape(len(ZOOMS) + 1, count, -1)[:, rows, predicted]
        return np.concatenate([probabilities, views.mean(0, dtype=np.float32)[:, None]], 1)

    return run
