"""MNIST test images written as 28×28 PNG files: the inference benchmark's and the tests' real inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from trainer.data import load_split


def write_mnist_pngs(data_dir: Path, folder: Path, count: int | None = None) -> list[tuple[str, int]]:
    """Write the first `count` test images as folder/NNNNN.png (kept if already there) and labels.csv."""
    split = load_split(data_dir, train=False).subset(count)
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for index, (image, label) in enumerate(zip(split.images.numpy(), split.labels.tolist(), strict=True)):
        path = folder / f"{index:05d}.png"
        if not path.exists():
            cv2.imwrite(str(path), np.ascontiguousarray(image))
        labels.append((path.name, label))
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "label"])
        writer.writerows(labels)
    return labels
