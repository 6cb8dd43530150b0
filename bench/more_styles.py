"""More real-world kinds of digit image, beyond the style suite (bench/styles.py), made from MNIST test digits:
notebook rules and squared paper through the digit, form boxes that are not sharp upright rectangles (rounded,
dashed, coloured, labelled, askew, double, with the neighbouring cells at the crop's edge), marker digits cropped
into the stroke, and phone photos (perspective, blur, noise, every EXIF orientation; a cast shadow; the desk at
the borders). They were first made to attack the preprocessing as a hostile user would (README, "More kinds").

    python -m bench.more_styles --out bench/.cache/more_150 --per-kind 150

writes the images with labels.csv (file,label,style), runs digits-infer on them and prints accuracy per kind.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bench.styles import accuracy_by_style, coverage, digit_patch, ink_crop, lighting, paper, write_suite

EXIF_ORIENTATION = 0x0112
# Stored pixels = this transpose of the upright picture; viewers undo it by the EXIF orientation.
T = Image.Transpose
STORE = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
         6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}


def blend(bg: np.ndarray, cov: np.ndarray, colour) -> np.ndarray:
    """Lay ink coverage (0..1, HxW) of a colour (scalar grey or BGR) over a float background."""
    c = cov[:, :, None] if bg.ndim == 3 else cov
    col = np.asarray(colour, np.float32)
    return bg * (1 - c) + col * c


def u8(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0, 255).astype(np.uint8)


def colour_paper(shape, bgr, rng, texture=3.0, light=0.1) -> np.ndarray:
    h, w = shape
    lit = lighting(shape, rng, light)[:, :, None]
    noise = cv2.GaussianBlur(rng.normal(0, texture, (h, w)).astype(np.float32), (0, 0), 0.8)[:, :, None]
    return np.asarray(bgr, np.float32)[None, None, :] * lit + noise


def enc(image: np.ndarray, ext: str, q: int = 90) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, q] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, image, params)
    assert ok
    return data.tobytes()


def to_pil(image: np.ndarray) -> Image.Image:
    if image.ndim == 2:
        return Image.fromarray(image)
    return Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def with_exif(image: np.ndarray, orientation: int, fmt: str, **kw) -> bytes:
    pil = to_pil(image)
    if STORE[orientation] is not None:
        pil = pil.transpose(STORE[orientation])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return pil_bytes(pil, fmt, exif=exif.tobytes(), **kw)


def put(canvas: np.ndarray, patch: np.ndarray, y: int, x: int) -> None:
    h, w = patch.shape
    canvas[y : y + h, x : x + w] = np.maximum(canvas[y : y + h, x : x + w], patch)


def blue_ink(rng):
    return (rng.uniform(90, 160), rng.uniform(30, 70), rng.uniform(10, 40)) if rng.random() < 0.5 else \
        (rng.uniform(20, 50),) * 3


# ---------------------------------------------------------------------------------------------- kinds


def k_ruled(d, rng):
    """Ruled notebook paper: light-blue rules every s px run across the crop, the digit sits on a rule and
    often crosses the next; sometimes the red margin line; crop 0.3–1× the digit's size around it."""
    s = int(rng.integers(22, 45))
    dh = int(s * rng.uniform(0.8, 1.5))
    patch = digit_patch(d, dh)
    ph, pw = patch.shape
    mx, my = int(rng.uniform(0.3, 1.0) * ph), int(rng.uniform(0.3, 1.0) * ph)
    H, W = ph + 2 * my, pw + 2 * mx
    bg = colour_paper((H, W), (rng.uniform(235, 250), rng.uniform(238, 252), rng.uniform(238, 252)), rng)
    rules = np.zeros((H, W), np.float32)
    base = my + ph + int(rng.integers(-3, 3))  # the digit's foot on a rule
    t = int(rng.integers(1, 3))
    for y in range(base % s, H, s):
        rules[y : y + t, :] = 1
    bg = blend(bg, rules, (rng.uniform(200, 235), rng.uniform(160, 200), rng.uniform(110, 160)))
    if rng.random() < 0.25:
        x = int(rng.integers(0, W))
        margin = np.zeros((H, W), np.float32)
        margin[:, x : x + 2] = 1
        bg = blend(bg, margin, (110, 110, 230))
    ink = np.zeros((H, W), np.float32)
    put(ink, patch, my, mx)
    img = u8(blend(bg, ink, blue_ink(rng)))
    ext = str(rng.choice([".jpg", ".png"]))
    return enc(img, ext, int(rng.integers(75, 95))), ext


def k_grid(d, rng):
    """Squared maths paper: a grey or blue grid of g-px squares across the crop, the digit ~1.5–2.5 squares tall."""
    g = int(rng.integers(14, 30))
    patch = digit_patch(d, int(g * rng.uniform(1.5, 2.6)))
    ph, pw = patch.shape
    m = int(rng.uniform(0.3, 1.0) * ph)
    H, W = ph + 2 * m, pw + 2 * m
    bg = colour_paper((H, W), (245, 248, 248), rng)
    grid = np.zeros((H, W), np.float32)
    oy, ox = int(rng.integers(0, g)), int(rng.integers(0, g))
    grid[oy::g, :] = 1
    grid[:, ox::g] = 1
    line = (rng.uniform(150, 200),) * 3 if rng.random() < 0.5 else (rng.uniform(200, 235), rng.uniform(170, 210),
                                                                     rng.uniform(130, 170))
    bg = blend(bg, grid * rng.uniform(0.6, 1.0), line)
    ink = np.zeros((H, W), np.float32)
    put(ink, patch, m, m)
    img = u8(blend(bg, ink, blue_ink(rng)))
    ext = str(rng.choice([".jpg", ".png"]))
    return enc(img, ext, int(rng.integers(75, 95))), ext


def box_canvas(d, rng, *, pad=(2, 10), top_extra=0):
    """A digit in the middle of a box region; returns (ink coverage, H, W, box rect (x0,y0,x1,y1), margin)."""
    patch = digit_patch(d, int(rng.integers(36, 97)))
    ph, pw = patch.shape
    gaps = rng.integers(pad[0], pad[1] + 1, 4)
    bw = max(pw, int(ph * rng.uniform(0.7, 1.0))) + gaps[2] + gaps[3]  # boxes are about square
    gaps[0] += top_extra
    bh = ph + gaps[0] + gaps[1]
    margin = int(rng.integers(0, 13))
    H, W = bh + 2 * margin + 6, bw + 2 * margin + 6
    ink = np.zeros((H, W), np.float32)
    x0, y0 = margin + 3, margin + 3
    put(ink, patch, y0 + gaps[0], x0 + (bw - pw) // 2)
    return ink, H, W, (x0, y0, x0 + bw, y0 + bh), margin


def rounded_rect(shape, rect, r, t):
    m = np.zeros(shape, np.uint8)
    x0, y0, x1, y1 = rect
    cv2.line(m, (x0 + r, y0), (x1 - r, y0), 255, t, cv2.LINE_AA)
    cv2.line(m, (x0 + r, y1), (x1 - r, y1), 255, t, cv2.LINE_AA)
    cv2.line(m, (x0, y0 + r), (x0, y1 - r), 255, t, cv2.LINE_AA)
    cv2.line(m, (x1, y0 + r), (x1, y1 - r), 255, t, cv2.LINE_AA)
    for cx, cy, a in ((x0 + r, y0 + r, 180), (x1 - r, y0 + r, 270), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90)):
        cv2.ellipse(m, (cx, cy), (r, r), a, 0, 90, 255, t, cv2.LINE_AA)
    return m.astype(np.float32) / 255


def dashed_rect(shape, rect, t, dash, gap):
    m = np.zeros(shape, np.uint8)
    x0, y0, x1, y1 = rect

    def seg(p, q):
        length = int(np.hypot(q[0] - p[0], q[1] - p[1]))
        for s in range(0, length, dash + gap):
            e = min(length, s + dash)
            a = (int(p[0] + (q[0] - p[0]) * s / length), int(p[1] + (q[1] - p[1]) * s / length))
            b = (int(p[0] + (q[0] - p[0]) * e / length), int(p[1] + (q[1] - p[1]) * e / length))
            cv2.line(m, a, b, 255, t)
    seg((x0, y0), (x1, y0))
    seg((x1, y0), (x1, y1))
    seg((x1, y1), (x0, y1))
    seg((x0, y1), (x0, y0))
    return m.astype(np.float32) / 255


def finish_form(ink, lines, rng, line_colour=None, colour=False, text=None):
    H, W = ink.shape
    bg = colour_paper((H, W), (rng.uniform(230, 250),) * 3, rng, light=0.05) if colour else \
        paper((H, W), rng.uniform(225, 250), rng, texture=3, light=0.05)
    if line_colour is None:
        line_colour = rng.uniform(90, 170) if rng.random() < 0.5 else rng.uniform(0, 50)
    bg = blend(bg, lines, line_colour)
    if text is not None:
        bg = blend(bg, text, line_colour)
    img = blend(bg, ink, (rng.uniform(10, 60),) * (3 if colour else 1) if not colour else blue_ink(rng))
    ext = str(rng.choice([".jpg", ".png"]))
    return enc(u8(img), ext, int(rng.integers(75, 95))), ext


def k_box_rounded(d, rng):
    ink, H, W, rect, _ = box_canvas(d, rng)
    r = int(min(rect[2] - rect[0], rect[3] - rect[1]) * rng.uniform(0.08, 0.3))
    return finish_form(ink, rounded_rect((H, W), rect, r, int(rng.integers(1, 4))), rng)


def k_box_dashed(d, rng):
    ink, H, W, rect, _ = box_canvas(d, rng)
    t = int(rng.integers(1, 3))
    dotted = rng.random() < 0.4
    dash, gap = (t, int(rng.integers(2, 5))) if dotted else (int(rng.integers(3, 9)), int(rng.integers(2, 6)))
    return finish_form(ink, dashed_rect((H, W), rect, t, dash, gap), rng)


def k_box_colour(d, rng):
    """Dropout-colour form lines (red, orange, green, blue), 1–3 px, with dark blue or black ink."""
    ink, H, W, rect, _ = box_canvas(d, rng)
    lines = np.zeros((H, W), np.uint8)
    cv2.rectangle(lines, rect[:2], rect[2:], 255, int(rng.integers(1, 4)))
    hue = rng.choice([(60, 60, 230), (40, 140, 240), (90, 170, 60), (210, 140, 60)])
    return finish_form(ink, lines.astype(np.float32) / 255, rng, line_colour=hue, colour=True)


def k_box_label(d, rng):
    """A box with printed text: a small field label in the top-left corner inside the box ("3", "12", "Qty",
    "No."), or a label above the box within the crop."""
    scale = rng.uniform(0.3, 0.5)  # Hershey simplex: about 22*scale px tall
    ink, H, W, rect, _ = box_canvas(d, rng, pad=(3, 8), top_extra=int(22 * scale) + 3)
    lines = np.zeros((H, W), np.uint8)
    cv2.rectangle(lines, rect[:2], rect[2:], 255, int(rng.integers(1, 3)))
    text = np.zeros((H, W), np.uint8)
    label = str(rng.choice(["1", "3", "7", "12", "Qty", "No.", "A4", "5"]))
    cv2.putText(text, label, (rect[0] + 3, rect[1] + int(2 + 22 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                1, cv2.LINE_AA)
    return finish_form(ink, lines.astype(np.float32) / 255, rng, text=text.astype(np.float32) / 255)


def k_box_neighbour(d, rng):
    """One cell of a comb/box row, cropped a few px past its own lines, so the neighbouring cells' lines (and
    sometimes an edge of the neighbour's digit) show at the left/right edges."""
    patch = digit_patch(d, int(rng.integers(36, 90)))
    ph, pw = patch.shape
    cell = int(ph * rng.uniform(1.15, 1.4))
    t = int(rng.integers(1, 3))
    n = 3
    H, W = cell + 2 * t + 20, n * cell + 20
    lines = np.zeros((H, W), np.float32)
    top = 10
    lines[top + cell : top + cell + t, :] = 1
    if rng.random() < 0.6:
        lines[top : top + t, :] = 1
    for i in range(n + 1):
        lines[top : top + cell + t, 10 + i * cell : 10 + i * cell + t] = 1
    ink = np.zeros((H, W), np.float32)
    mid = 10 + cell
    put(ink, patch, top + (cell - ph) // 2 + 2, mid + (cell - pw) // 2)
    if rng.random() < 0.4:  # the neighbour's digit spills towards our cell
        other = digit_patch(d[:, ::-1], ph)
        put(ink, other, top + (cell - ph) // 2, mid - other.shape[1] + int(rng.integers(2, 8)))
    reach = int(rng.integers(2, 12))
    y0 = top - int(rng.integers(1, 8))
    crop = (slice(max(0, y0), top + cell + t + int(rng.integers(1, 8))), slice(mid - reach, mid + cell + t + reach))
    return finish_form(ink[crop], lines[crop], rng)


def k_box_skew(d, rng):
    """A box scanned crooked: the whole cell rotated 1–5° (and sheared a little), white fill at the corners."""
    ink, H, W, rect, _ = box_canvas(d, rng)
    lines = np.zeros((H, W), np.uint8)
    cv2.rectangle(lines, rect[:2], rect[2:], 255, int(rng.integers(1, 4)))
    M = cv2.getRotationMatrix2D((W / 2, H / 2), rng.uniform(1, 5) * rng.choice([-1, 1]), 1.0)
    M[0, 1] += rng.uniform(-0.04, 0.04)
    warp = lambda a: cv2.warpAffine(a, M, (W, H), flags=cv2.INTER_LINEAR)  # noqa: E731
    return finish_form(warp(ink), warp(lines.astype(np.float32) / 255), rng)


def k_box_double(d, rng):
    ink, H, W, rect, _ = box_canvas(d, rng, pad=(6, 12))
    lines = np.zeros((H, W), np.uint8)
    gap = int(rng.integers(2, 5))
    cv2.rectangle(lines, rect[:2], rect[2:], 255, 1)
    cv2.rectangle(lines, (rect[0] - gap, rect[1] - gap), (rect[2] + gap, rect[3] + gap), 255, int(rng.integers(1, 3)))
    return finish_form(ink, lines.astype(np.float32) / 255, rng)


def marker(d, rng, longer):
    big = (coverage(d, 224) > 0.4).astype(np.uint8)
    k = int(rng.integers(10, 24))
    thick = cv2.dilate(big, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(np.float32)
    crop = ink_crop(cv2.GaussianBlur(thick, (5, 5), 0), 0)
    h, w = crop.shape
    # cut a little into the stroke on some edges: a crop made by eye, touching 1–4 edges
    cut = [int(rng.integers(0, 3) * 0.02 * s) if rng.random() < 0.5 else 0 for s in (h, h, w, w)]
    crop = crop[cut[0] : h - cut[1], cut[2] : w - cut[3]]
    h, w = crop.shape
    s = longer / max(h, w)
    return np.clip(cv2.resize(crop, (max(1, round(w * s)), max(1, round(h * s))),
                              interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR), 0, 1)


def k_marker_small(d, rng):
    """A marker digit cropped with zero margin, 20–40 px, PNG or JPEG."""
    ink = marker(d, rng, int(rng.integers(20, 41)))
    img = u8(blend(paper(ink.shape, rng.uniform(225, 250), rng, 2, 0.03), ink, rng.uniform(10, 50)))
    ext = str(rng.choice([".jpg", ".png"]))
    return enc(img, ext, int(rng.integers(70, 95))), ext


def k_marker_large(d, rng):
    """A marker digit cropped with zero margin, 1000–1600 px (a phone photo cropped to the digit)."""
    ink = marker(d, rng, int(rng.integers(1000, 1601)))
    img = u8(blend(paper(ink.shape, rng.uniform(200, 245), rng, 4, 0.2), ink, rng.uniform(10, 60)))
    ext = str(rng.choice([".jpg", ".png"]))
    return enc(img, ext, int(rng.integers(70, 95))), ext


def photo_scene(d, rng, side, desk_shown=True, shadow=True):
    """A sheet of paper photographed: digit on paper, perspective, a shadow edge, blur, noise; sometimes the
    desk shows in the corners. Colour BGR, upright."""
    H, W = side, int(side * rng.uniform(0.75, 1.33))
    patch = digit_patch(d, int(min(H, W) * rng.uniform(0.3, 0.55)))
    ph, pw = patch.shape
    ink = np.zeros((H, W), np.float32)
    put(ink, patch, int(rng.integers(H // 5, H - ph - H // 5 + 1)), int(rng.integers(W // 5, W - pw - W // 5 + 1)))
    white = rng.uniform(195, 240)
    tint = np.array([white + rng.uniform(-10, 4), white, white + rng.uniform(-4, 10)], np.float32)
    bg = colour_paper((H, W), tint, rng, texture=4, light=0.3)
    img = blend(bg, ink, blue_ink(rng) if rng.random() < 0.5 else (rng.uniform(20, 60),) * 3)
    # perspective: the sheet seen at an angle; desk colour where the sheet does not reach
    j = 0.12 if rng.random() < 0.3 else 0.0
    src = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
    dst = src + rng.uniform(-0.08, 0.08, (4, 2)).astype(np.float32) * [W, H] + \
        np.float32([[j, j], [-j, j], [-j, -j], [j, -j]]) * [W, H]
    dst = dst.astype(np.float32)
    M = cv2.getPerspectiveTransform(src, dst)
    desk = np.array([rng.uniform(40, 120), rng.uniform(50, 110), rng.uniform(60, 130)], np.float32)
    if desk_shown:
        img = cv2.warpPerspective(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=desk.tolist())
    else:  # the photo cropped inside the sheet: perspective only
        img = cv2.warpPerspective(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # a shadow (hand or phone) across part of the picture: soft edge, 30–55% darker
    if rng.random() < 0.7 and shadow:
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        proj = np.cos(a) * (xs - W / 2) + np.sin(a) * (ys - H / 2)
        edge = rng.uniform(-0.25, 0.25) * min(H, W)
        soft = rng.uniform(0.01, 0.08) * min(H, W)
        shade = 1 - rng.uniform(0.3, 0.55) / (1 + np.exp(-(proj - edge) / soft))
        img = img * shade[:, :, None]
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0) * side / 600)
    img = img + rng.normal(0, rng.uniform(2, 7), img.shape)
    return u8(img)


def k_photo_clean(d, rng):
    """Photo cropped inside the sheet (no desk), no cast shadow: perspective, uneven light, blur, noise, EXIF."""
    img = photo_scene(d, rng, int(rng.integers(500, 1201)), desk_shown=False, shadow=False)
    o = int(rng.integers(1, 9))
    return with_exif(img, o, "JPEG", quality=int(rng.integers(75, 93))), f"_o{o}.jpg"


def k_photo_shadow(d, rng):
    """As photo_clean, plus a cast shadow (30–55% darker, soft edge) across part of the picture."""
    img = photo_scene(d, rng, int(rng.integers(500, 1201)), desk_shown=False, shadow=True)
    o = int(rng.integers(1, 9))
    return with_exif(img, o, "JPEG", quality=int(rng.integers(75, 93))), f"_o{o}.jpg"


def k_photo_desk(d, rng):
    """As photo_clean, but the sheet's edges and the desk show at the borders (no cast shadow)."""
    img = photo_scene(d, rng, int(rng.integers(500, 1201)), desk_shown=True, shadow=False)
    o = int(rng.integers(1, 9))
    return with_exif(img, o, "JPEG", quality=int(rng.integers(75, 93))), f"_o{o}.jpg"


KINDS = {
    "ruled": k_ruled, "grid": k_grid, "box_rounded": k_box_rounded, "box_dashed": k_box_dashed,
    "box_colour": k_box_colour, "box_label": k_box_label, "box_neighbour": k_box_neighbour, "box_skew": k_box_skew,
    "box_double": k_box_double, "marker_small": k_marker_small, "marker_large": k_marker_large,
    "photo_clean": k_photo_clean, "photo_shadow": k_photo_shadow, "photo_desk": k_photo_desk,
}


def write_more_styles(data_dir: Path, folder: Path, per_kind: int, seed: int = 4242) -> None:
    """`per_kind` images of every kind with labels.csv (file,label,style), from test digits 5000 on (each kind
    its own); kept when labels.csv is already there."""
    write_suite(data_dir, folder, KINDS, per_kind, seed, first_digit=5000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/.cache/more_150"))
    parser.add_argument("--per-kind", type=int, default=150)
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST (default: $DIGITS_DATA_DIR or ./data)")
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts"))
    args = parser.parse_args()
    from trainer.data import resolve_data_dir

    write_more_styles(args.data_dir or resolve_data_dir(), args.out, args.per_kind)
    predictions = args.out.parent / f"{args.out.name}.csv"
    digits_infer = Path(sys.executable).parent / "digits-infer"
    subprocess.run([str(digits_infer), str(args.out), "--model-dir", str(args.model_dir), "-o", str(predictions),
                    "--quiet"], check=False)
    table = accuracy_by_style(predictions, args.out / "labels.csv")
    for kind, entry in sorted(table.items(), key=lambda item: item[0] == "all"):
        print(f"{kind:14} {entry['accuracy']:7.1%}  ({entry['correct']}/{entry['images']}, "
              f"{entry['failed']} error rows)")


if __name__ == "__main__":
    main()
