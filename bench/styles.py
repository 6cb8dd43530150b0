"""The style suite: MNIST *test* digits drawn the ways people really bring digit images, with their labels.

Each style turns a 28×28 MNIST test digit (white ink on black) into an image file as a user would make it:
a scan, a marker crop, a fine pen, an enlarged thumbnail, a form cell, a phone photo with an EXIF
orientation, coloured ink, a faint pencil, a dusty scan. Seeded, so the same suite comes back on every run;
the model never trains on test digits. Used by `make bench` (accuracy per style, throughput) and by
samples/make_samples.py.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from trainer.data import load_split

Maker = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, str]]  # → (image, file extension)
EXIF_ORIENTATION = 0x0112


def coverage(digit: np.ndarray, size: int) -> np.ndarray:
    """The digit's ink as coverage in [0,1] at size×size (cubic upscaling of the 28×28 grey levels)."""
    big = cv2.resize(digit.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(big, 0.0, 1.0)


def ink_crop(mask: np.ndarray, margin: int) -> np.ndarray:
    x, y, w, h = cv2.boundingRect((mask > 0.5).astype(np.uint8))
    padded = np.pad(mask, margin)
    return padded[y : y + h + 2 * margin, x : x + w + 2 * margin]


def lighting(shape: tuple[int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative light field: a tilted plane plus a soft vignette, mean about 1."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    plane = (np.cos(angle) * (xs / max(w - 1, 1) - 0.5) + np.sin(angle) * (ys / max(h - 1, 1) - 0.5))
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    vignette = -(((xs - cx) / w) ** 2 + ((ys - cy) / h) ** 2)
    return 1.0 + strength * (plane + 0.8 * vignette)


def paper(shape: tuple[int, int], level: float, rng: np.random.Generator, texture: float = 5.0,
          light: float = 0.15) -> np.ndarray:
    """Paper grey levels: textured (blurred noise) and unevenly lit."""
    noise = cv2.GaussianBlur(rng.normal(0, texture, shape).astype(np.float32), (0, 0), 0.8)
    return level * lighting(shape, rng, light) + noise


def compose(ink: np.ndarray, background: np.ndarray, ink_level: float | np.ndarray) -> np.ndarray:
    """Ink coverage (0..1) laid over a background at the given ink level(s), as uint8."""
    if background.ndim == 3:
        ink = ink[:, :, None]
    return np.clip(background * (1 - ink) + ink_level * ink, 0, 255).astype(np.uint8)


def place(ink: np.ndarray, canvas: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The ink patch pasted at a random position on an empty canvas (coverage)."""
    out = np.zeros(canvas, np.float32)
    h, w = ink.shape
    y, x = int(rng.integers(0, canvas[0] - h + 1)), int(rng.integers(0, canvas[1] - w + 1))
    out[y : y + h, x : x + w] = ink
    return out


def digit_patch(digit: np.ndarray, longer: int) -> np.ndarray:
    """The digit's ink cropped to its bounding box, the longer side scaled to `longer` px (coverage)."""
    big = coverage(digit, 4 * 28)
    crop = ink_crop(big, 2)
    h, w = crop.shape
    scale = longer / max(h, w)
    return np.clip(cv2.resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))),
                              interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC), 0, 1)


def style_mnist(digit, rng):
    return digit, ".png"


def style_paper(digit, rng):
    """Dark ink on light, textured, unevenly lit paper with margins (a flatbed scan)."""
    side = int(rng.integers(64, 201))
    ink = place(digit_patch(digit, int(side * rng.uniform(0.35, 0.7))), (side, side), rng)
    image = compose(ink, paper((side, side), rng.uniform(200, 240), rng), rng.uniform(20, 80))
    return image, str(rng.choice([".png", ".jpg", ".bmp"]))


def style_bold(digit, rng):
    """Marker strokes: thickened by 3–9 px at 112 px, cropped to the ink with a 0–2 px margin, 40–160 px."""
    big = (coverage(digit, 112) > 0.4).astype(np.uint8)
    k = int(rng.integers(3, 10))
    thick = cv2.dilate(big, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(np.float32)
    crop = ink_crop(cv2.GaussianBlur(thick, (3, 3), 0), int(rng.integers(0, 3)))
    h, w = crop.shape
    longer = int(rng.integers(40, 161))
    scale = longer / max(h, w)
    ink = np.clip(cv2.resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR), 0, 1)
    background = paper(ink.shape, rng.uniform(225, 250), rng, texture=3, light=0.05)
    return compose(ink, background, rng.uniform(10, 50)), str(rng.choice([".png", ".jpg"]))


def style_thin(digit, rng):
    """A fine pen at high resolution: the stroke's centre line drawn 2–4 px wide on a 300–600 px page."""
    side = int(rng.integers(300, 601))
    size = int(side * rng.uniform(0.45, 0.75))
    solid = (coverage(digit, size) > 0.45).astype(np.uint8)
    distance = cv2.distanceTransform(solid, cv2.DIST_L2, 5)
    ridge = ((distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8)) - 0.7) & (distance > 1.0))
    pen = int(rng.integers(2, 5))
    line = cv2.dilate(ridge.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (pen, pen)))
    ink = place(cv2.GaussianBlur(line.astype(np.float32), (3, 3), 0), (side, side), rng)
    image = compose(ink, paper((side, side), rng.uniform(215, 245), rng, texture=3), rng.uniform(15, 70))
    return image, str(rng.choice([".png", ".jpg"]))


def style_lowres(digit, rng):
    """A thumbnail: area-averaged down to 8–16 px, enlarged 4–8× with nearest or cubic interpolation."""
    small_side = int(rng.integers(8, 17))
    small = cv2.resize(digit, (small_side, small_side), interpolation=cv2.INTER_AREA)
    factor = int(rng.integers(4, 9))
    method = cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_CUBIC
    big = cv2.resize(small, (small_side * factor, small_side * factor), interpolation=method)
    return (big if rng.random() < 0.5 else 255 - big), ".png"


def style_cell(digit, rng):
    """A digit written in a printed form cell: a full box, a comb cell open at the top, or an underline;
    lines 1–3 px, grey or black, 2–10 px from the ink."""
    patch = digit_patch(digit, int(rng.integers(36, 97)))
    h, w = patch.shape
    gaps = rng.integers(2, 11, 4)  # top, bottom, left, right
    t = int(rng.integers(1, 4))
    margin = int(rng.integers(0, 13))
    kind = rng.choice(["box", "comb", "underline"])
    box_h, box_w = h + gaps[0] + gaps[1] + 2 * t, w + gaps[2] + gaps[3] + 2 * t
    if kind == "underline":
        box_w += int(rng.integers(0, 30))
    canvas = (box_h + 2 * margin, box_w + 2 * margin)
    ink = np.zeros(canvas, np.float32)
    y0, x0 = margin + t + gaps[0], margin + t + gaps[2]
    ink[y0 : y0 + h, x0 : x0 + w] = patch
    lines = np.zeros(canvas, np.float32)
    top, left, bottom, right = margin, margin, margin + box_h - t, margin + box_w - t
    lines[bottom : bottom + t, left : right + t] = 1
    if kind in ("box", "comb"):
        lines[top : bottom + t, left : left + t] = 1
        lines[top : bottom + t, right : right + t] = 1
    if kind == "box":
        lines[top : top + t, left : right + t] = 1
    background = paper(canvas, rng.uniform(225, 250), rng, texture=3, light=0.05)
    line_level = rng.uniform(90, 170) if rng.random() < 0.5 else rng.uniform(0, 50)
    image = compose(lines, background, line_level)
    image = compose(ink, image.astype(np.float32), rng.uniform(10, 60))
    return image, str(rng.choice([".png", ".jpg"]))


def style_photo(digit, rng):
    """A phone photo: a few degrees of tilt, uneven light, JPEG quality 60–85, stored rotated with an EXIF
    orientation of 3, 6 or 8 so that viewers show it upright."""
    side = int(rng.integers(120, 401))
    ink = place(digit_patch(digit, int(side * rng.uniform(0.35, 0.65))), (side, side), rng)
    image = compose(ink, paper((side, side), rng.uniform(170, 230), rng, texture=4, light=0.35),
                    rng.uniform(20, 70))
    tilt = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-5, 5), 1.0)
    image = cv2.warpAffine(image, tilt, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0))
    colour = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    orientation = int(rng.choice([3, 6, 8]))
    stored = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_COUNTERCLOCKWISE, 8: cv2.ROTATE_90_CLOCKWISE}[orientation]
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    Image.fromarray(cv2.rotate(colour, stored)).save(buffer, "JPEG", quality=int(rng.integers(60, 86)),
                                                     exif=exif.tobytes())
    return buffer.getvalue(), ".jpg"


def style_colour(digit, rng):
    """Coloured ink on coloured paper (any hues, apart by at least 60°)."""
    side = int(rng.integers(64, 201))
    ink = place(digit_patch(digit, int(side * rng.uniform(0.4, 0.7))), (side, side), rng)
    paper_hue = rng.uniform(0, 180)
    ink_hue = (paper_hue + rng.uniform(30, 150)) % 180  # OpenCV hues run 0..180
    paper_hsv = np.uint8([[[paper_hue, rng.uniform(40, 150), rng.uniform(190, 255)]]])
    ink_hsv = np.uint8([[[ink_hue, rng.uniform(150, 255), rng.uniform(90, 220)]]])
    paper_bgr = cv2.cvtColor(paper_hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    ink_bgr = cv2.cvtColor(ink_hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    light = lighting((side, side), rng, 0.1)[:, :, None]
    background = paper_bgr[None, None, :] * light + rng.normal(0, 3, (side, side, 3))
    return compose(ink, background, ink_bgr[None, None, :]), str(rng.choice([".png", ".jpg"]))


def style_faint(digit, rng):
    """A faint pencil: ink only 25–40 grey levels from the paper."""
    side = int(rng.integers(64, 201))
    ink = place(digit_patch(digit, int(side * rng.uniform(0.4, 0.7))), (side, side), rng)
    level = rng.uniform(150, 240)
    image = compose(ink, paper((side, side), level, rng, texture=2.5, light=0.05), level - rng.uniform(25, 40))
    return image, ".png"


def style_specks(digit, rng):
    """A dusty scan: the digit on paper with 5–40 specks of dust, from single pixels to small blots."""
    side = int(rng.integers(80, 221))
    ink = place(digit_patch(digit, int(side * rng.uniform(0.35, 0.6))), (side, side), rng)
    dust = np.zeros((side, side), np.float32)
    for _ in range(int(rng.integers(5, 41))):
        radius = rng.choice([0.5, 1.0, 1.5, 2.0, 3.0], p=[0.35, 0.3, 0.2, 0.1, 0.05])
        centre = (int(rng.integers(0, side)), int(rng.integers(0, side)))
        cv2.circle(dust, centre, int(np.ceil(radius)), float(rng.uniform(0.5, 1.0)), -1, cv2.LINE_AA)
    image = compose(np.maximum(ink, dust), paper((side, side), rng.uniform(200, 240), rng), rng.uniform(20, 70))
    return image, str(rng.choice([".png", ".jpg"]))


STYLES: dict[str, Maker] = {
    "mnist": style_mnist, "paper": style_paper, "bold": style_bold, "thin": style_thin, "lowres": style_lowres,
    "cell": style_cell, "photo": style_photo, "colour": style_colour, "faint": style_faint, "specks": style_specks,
}


def encode(image: np.ndarray | bytes, ext: str, rng: np.random.Generator) -> bytes:
    if isinstance(image, bytes):
        return image
    params = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, image, params)
    assert ok, ext
    return data.tobytes()


def write_styles(data_dir: Path, folder: Path, per_style: int, seed: int = 2026) -> list[tuple[str, int, str]]:
    """Write `per_style` images of every style into `folder` with labels.csv (file,label,style); kept when a
    labels.csv is already there. Each style draws its own test digits, so no digit appears in two styles
    while per_style × styles ≤ 10,000."""

    def encoded(make: Callable) -> Callable:
        def make_file(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
            image, ext = make(digit, rng)
            return encode(image, ext, rng), ext
        return make_file

    return write_suite(data_dir, folder, {style: encoded(make) for style, make in STYLES.items()}, per_style, seed)


def write_suite(data_dir: Path, folder: Path, makers: dict[str, Callable], per_style: int, seed: int,
                first_digit: int = 0) -> list[tuple[str, int, str]]:
    """Files made by `makers` (style → (digit, rng) → (file bytes, suffix)), `per_style` each, from MNIST test
    digits `first_digit` on, each style its own; with labels.csv (file,label,style). Kept when labels.csv is
    already there (written last, atomically, so a half-written folder is made again)."""
    labels_csv = folder / "labels.csv"
    if labels_csv.exists():
        with labels_csv.open(newline="") as f:
            return [(r["file"], int(r["label"]), r["style"]) for r in csv.DictReader(f)]
    folder.mkdir(parents=True, exist_ok=True)
    test = load_split(data_dir, train=False)
    images, labels = test.images.numpy(), test.labels.tolist()
    rows = []
    for number, (style, make) in enumerate(makers.items()):
        rng = np.random.default_rng([seed, number])
        for i in range(per_style):
            index = (first_digit + number * per_style + i) % len(labels)
            data, suffix = make(images[index], rng)
            name = f"{style}_{i:04d}{suffix}"
            (folder / name).write_bytes(data)
            rows.append((name, labels[index], style))
    tmp = labels_csv.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "label", "style"])
        writer.writerows(rows)
    tmp.replace(labels_csv)
    return rows


def accuracy_by_style(predictions: Path, labels: Path) -> dict[str, dict[str, float]]:
    """{style: {images, correct, accuracy, errors (failed rows)}} plus "all", matching rows by file name."""
    with labels.open(newline="") as f:
        truth = {r["file"]: (r["label"], r["style"]) for r in csv.DictReader(f)}
    with predictions.open(newline="", encoding="utf-8") as f:
        predicted = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    table: dict[str, dict[str, float]] = {}
    for name, (label, style) in truth.items():
        row = predicted.get(name)
        for key in (style, "all"):
            entry = table.setdefault(key, {"images": 0, "correct": 0, "failed": 0})
            entry["images"] += 1
            entry["correct"] += bool(row and row["prediction"] == label)
            entry["failed"] += bool(row is None or row["error"])
    for entry in table.values():
        entry["accuracy"] = entry["correct"] / max(entry["images"], 1)
    return table
