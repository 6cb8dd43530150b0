"""Write small IDX files in torchvision's MNIST layout, for data tests that need a dataset of their own."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_idx_dataset(root: Path, train: int = 12, test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """root/MNIST/raw/ with the four files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, count, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, count) + labels.tobytes())
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
    return arrays
