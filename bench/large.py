"""Large images: each is answered (or refused) in bounded time and memory. Written once into the cache:
a 10000×10000 PNG of one digit (a small file that decodes to 100 MB), the same page as a 16-bit PNG (200 MB
decoded, at the default limit), a 96 MP JPEG of a digit (decoded at 1/8 scale), and a compressed float32 RGBA
TIFF that would decode to 268 MB, over the limit: refused from its header."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bench.stages import infer_command, peak_rss
from trainer.data import load_split


def digit_page(digit: np.ndarray, width: int, height: int) -> np.ndarray:
    """Dark ink on white paper: the digit drawn over half of the page's shorter side, in the middle."""
    side = min(width, height) // 2
    ink = cv2.resize(digit, (side, side), interpolation=cv2.INTER_CUBIC)
    page = np.full((height, width), 255, np.uint8)
    top, left = (height - side) // 2, (width - side) // 2
    page[top : top + side, left : left + side] = 255 - ink
    return page


def write_large(data_dir: Path, folder: Path) -> dict[str, tuple[int, int]]:
    """{file name: (label, decoded bytes)} of the large images, written into `folder` unless there."""
    folder.mkdir(parents=True, exist_ok=True)
    test = load_split(data_dir, train=False)
    digit, label = test.images[0].numpy(), int(test.labels[0])
    files = {"page_10000x10000.png": (label, 10000 * 10000), "page16_10000x10000.png": (label, 10000 * 10000 * 2),
             "photo_12000x8000.jpg": (label, 12000 * 8000 * 3), "float_rgba_4096x4096.tif": (label, 4096 * 4096 * 16)}
    if not (folder / "page_10000x10000.png").exists():
        cv2.imwrite(str(folder / "page_10000x10000.png"), digit_page(digit, 10000, 10000),
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not (folder / "page16_10000x10000.png").exists():
        cv2.imwrite(str(folder / "page16_10000x10000.png"), digit_page(digit, 10000, 10000).astype(np.uint16) * 257,
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not (folder / "photo_12000x8000.jpg").exists():
        page = cv2.cvtColor(digit_page(digit, 12000, 8000), cv2.COLOR_GRAY2BGR)
        cv2.imwrite(str(folder / "photo_12000x8000.jpg"), page, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not (folder / "float_rgba_4096x4096.tif").exists():
        ink = digit_page(digit, 4096, 4096).astype(np.float32) / 255.0
        image = cv2.merge([ink, ink, ink, np.ones_like(ink)])
        cv2.imwrite(str(folder / "float_rgba_4096x4096.tif"), image, [cv2.IMWRITE_TIFF_COMPRESSION, 8])  # deflate
    return files


def measure_large(data_dir: Path, args, scratch: Path) -> list[dict]:
    """Per large image: whole-process seconds and peak RSS of digits-infer on it alone, its decoded size, and
    what it answered."""
    import csv

    folder = args.cache / "large"
    rows = []
    for name, (label, decoded) in write_large(data_dir, folder).items():
        out = scratch / f"{name}.csv"
        command = infer_command([str(folder / name)], args.model_dir, out, "onnx", "cpu", args.batch_size)
        seconds, rss_kib, code = peak_rss(command)
        with out.open(newline="", encoding="utf-8") as f:
            (row,) = list(csv.DictReader(f))
        rows.append({"file": name, "bytes": (folder / name).stat().st_size, "decoded_mb": decoded / 1e6,
                     "seconds": seconds, "peak_rss_mb": rss_kib * 1024 / 1e6, "exit": code,
                     "answer": row["prediction"] or row["error"], "correct": row["prediction"] == str(label)})
    return rows
