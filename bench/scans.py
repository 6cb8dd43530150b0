"""Synthetic scans of real MNIST test digits, in the shapes users meet: dark ink on textured, unevenly lit
paper, white on black, a drawing app's transparent PNG, blue pen. Used by samples/make_samples.py and by the
benchmark's scan rows (these take the full preprocessing path, unlike MNIST-form images).
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from trainer.data import load_split


def on_paper(digit: np.ndarray, canvas: int, rng: np.random.Generator) -> np.ndarray:
    """Dark ink on light, slightly textured, unevenly lit paper, digit scaled and placed off-centre."""
    size = int(rng.integers(canvas // 3, canvas * 2 // 3))
    ink = cv2.resize(digit, (size, size), interpolation=cv2.INTER_CUBIC)
    x, y = (int(v) for v in rng.integers(0, canvas - size, 2))
    ramp = np.linspace(0, 35, canvas, dtype=np.float32)[None, :]
    paper = 225 - ramp + rng.normal(0, 6, (canvas, canvas)).astype(np.float32)
    paper[y : y + size, x : x + size] -= ink.astype(np.float32) * 0.8
    return np.clip(paper, 0, 255).astype(np.uint8)


def white_on_black(digit: np.ndarray, canvas: int, rng: np.random.Generator) -> np.ndarray:
    size = int(rng.integers(canvas // 2, canvas * 3 // 4))
    frame = np.zeros((canvas, canvas), np.uint8)
    x, y = (int(v) for v in rng.integers(0, canvas - size, 2))
    frame[y : y + size, x : x + size] = cv2.resize(digit, (size, size), interpolation=cv2.INTER_CUBIC)
    return frame


def transparent(digit: np.ndarray, canvas: int, rng: np.random.Generator) -> np.ndarray:
    """A drawing app's export: black strokes, the background fully transparent (and black underneath)."""
    alpha = white_on_black(digit, canvas, rng)
    bgra = np.zeros((canvas, canvas, 4), np.uint8)
    bgra[:, :, 3] = alpha
    return bgra


def blue_pen(digit: np.ndarray, canvas: int, rng: np.random.Generator) -> np.ndarray:
    grey = on_paper(digit, canvas, rng).astype(np.float32) / 255
    tint = np.array([1.0, 0.75, 0.55], np.float32)  # BGR: blue ink, warm paper
    return (np.clip(grey[:, :, None] * 255 * tint + (1 - grey[:, :, None]) * [160, 40, 20], 0, 255)).astype(np.uint8)


MAKERS = {"paper": on_paper, "white_on_black": white_on_black, "transparent": transparent, "blue_pen": blue_pen}
BENCH_STYLES = (("paper", 96, ".png"), ("paper", 160, ".jpg"), ("white_on_black", 64, ".png"),
                ("transparent", 100, ".png"), ("blue_pen", 120, ".jpg"))


def write_scans(data_dir: Path, folder: Path, count: int, seed: int = 11) -> None:
    """Write `count` scans of the first test digits, cycling through BENCH_STYLES, with labels.csv (kept if there)."""
    if (folder / "labels.csv").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    split = load_split(data_dir, train=False).subset(count)
    rows = []
    for index, (digit, label) in enumerate(zip(split.images.numpy(), split.labels.tolist(), strict=True)):
        style, canvas, ext = BENCH_STYLES[index % len(BENCH_STYLES)]
        name = f"{index:05d}_{style}{ext}"
        cv2.imwrite(str(folder / name), MAKERS[style](digit, canvas, rng))
        rows.append((name, label))
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "label"])
        writer.writerows(rows)
