"""Any decoded digit image → MNIST form (28×28, white ink on black), as the MNIST authors made theirs.

MNIST was made from bilevel scans: each digit's ink, size-normalised into a 20×20 box with anti-aliasing,
then centred by its centre of mass in 28×28. This module does the same for whatever a user brings:

1. grey: colour projected on the axis that separates ink from paper; transparency flattened.
2. ink: polarity judged by stroke thickness (ink is the thinner class), uneven light removed with a kernel
   sized from the measured stroke width, Otsu's threshold (infer.ink).
3. digit: frame lines, underlines and scanner edges removed, specks and dust dropped; no ink, a lone speck or
   line, or several digits side by side are errors, never a guess (infer.ink).
4. form: the digit's ink at 4× the 20-px box, its stroke width brought into the range of MNIST's, then
   area-averaged into the box and centred by mass.

Images already in MNIST form (all 70,000 MNIST images) pass through unchanged.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from infer.decode import PreprocessError, decode
from infer.ink import Ink, find_digit, stroke_width, to_grey

SIZE = 28
INK_BOX = 20
SUPERSAMPLE = 4  # the digit is drawn at 4× the box, then area-averaged: anti-aliasing as in MNIST
# Stroke width (infer.ink.stroke_width, in pixels of the 20-px box) of MNIST's training digits: 1.61 at the 5th
# percentile, 2.42 median, 3.8 at the 95th. Thinner or bolder ink is brought just inside that range.
MNIST_STROKE = (1.7, 3.6)
MAX_ENLARGEMENT = 32  # pixel-repetition factors looked for

__all__ = ["SIZE", "PreprocessError", "is_mnist_form", "preprocess_bytes", "to_float", "to_mnist",
           "to_mnist_uint8"]


def supersampled(ink: Ink) -> np.ndarray:
    """The digit's coverage at SUPERSAMPLE × the box (longer side 80 px); strokes too fine to survive the
    reduction are thickened first."""
    height, width = ink.mask.shape
    scale = SUPERSAMPLE * INK_BOX / max(height, width)
    coverage = ink.coverage
    if scale < 1:
        need = 2.0 / scale - stroke_width(ink.mask)
        if need > 1:
            k = int(round(need)) | 1
            coverage = cv2.dilate(coverage, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(coverage, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def normalise_stroke(coverage: np.ndarray) -> np.ndarray:
    """Thicken or thin the supersampled ink so that its stroke width lies in MNIST's range."""
    solid = cv2.threshold(coverage, 127, 255, cv2.THRESH_BINARY)[1]
    width = stroke_width(solid) / SUPERSAMPLE  # in pixels of the 20-px box
    low, high = MNIST_STROKE
    if width <= 0 or low <= width <= high:
        return coverage
    target = low + 0.3 if width < low else high - 0.4
    k = int(round(abs(target - width) * SUPERSAMPLE)) + 1
    if k < 2:
        return coverage
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    if width < low:
        return cv2.dilate(coverage, kernel)
    thinner = cv2.erode(coverage, kernel)
    # Thinning must not erase the digit: keep the original where erosion removed too much.
    return thinner if cv2.countNonZero(thinner) >= 0.3 * cv2.countNonZero(coverage) else coverage


def centre_in_frame(ink: Ink) -> np.ndarray:
    """The digit's ink → 28×28 uint8: stroke normalised, fitted to 20 px, centred by its centre of mass."""
    coverage = normalise_stroke(supersampled(ink))
    x, y, w, h = cv2.boundingRect(coverage)
    if w == 0 or h == 0:
        raise PreprocessError("no ink found")
    coverage = coverage[y : y + h, x : x + w]
    scale = INK_BOX / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    crop = cv2.resize(coverage, (new_w, new_h), interpolation=cv2.INTER_AREA)
    moments = cv2.moments(crop)
    if moments["m00"] == 0:
        raise PreprocessError("no ink found")
    left = int(round(SIZE / 2 - moments["m10"] / moments["m00"]))
    top = int(round(SIZE / 2 - moments["m01"] / moments["m00"]))
    left, top = min(max(left, 0), SIZE - new_w), min(max(top, 0), SIZE - new_h)
    frame = np.zeros((SIZE, SIZE), np.uint8)
    frame[top : top + new_h, left : left + new_w] = crop
    return frame


def is_mnist_form(grey: np.ndarray) -> bool:
    """Already what the MNIST authors produced: 28×28, clean black paper, strong ink whose longer side is
    fitted to 19–20 px, centre of mass within a pixel of the centre (true of all 70,000 MNIST images)."""
    if grey.shape != (SIZE, SIZE):
        return False
    _, _, width, height = cv2.boundingRect(grey)
    if max(width, height) not in (INK_BOX - 1, INK_BOX) or cv2.minMaxLoc(grey)[1] < 128:
        return False
    moments = cv2.moments(grey)
    centre = (SIZE - 1) / 2
    return (abs(moments["m10"] / moments["m00"] - centre) <= 1.0
            and abs(moments["m01"] / moments["m00"] - centre) <= 1.0)


def to_mnist_uint8(image: np.ndarray) -> np.ndarray:
    """A decoded uint8 image (1–4 channels) → 28×28 uint8, white ink on black.

    Images already in MNIST form pass through unchanged: normalising them again could only move them.
    """
    grey = to_grey(image)
    if grey.shape == (SIZE, SIZE):
        if is_mnist_form(grey):
            return grey
        inverted = cv2.bitwise_not(grey)  # only when needed: MNIST's own files are white on black already
        if is_mnist_form(inverted):
            return inverted
    return centre_in_frame(find_digit(smooth_pixel_enlargement(grey)))


def pixel_enlargement_factor(grey: np.ndarray) -> int:
    """f when the image is a thumbnail enlarged by pixel repetition (nearest neighbour: every pixel an f×f
    block, f ≥ 2), else 1. Rejected at once unless the first two rows and columns repeat."""
    height, width = grey.shape
    if min(height, width) < 4 or not (np.array_equal(grey[0], grey[1]) and np.array_equal(grey[:, 0], grey[:, 1])):
        return 1
    common = math.gcd(height, width)
    for factor in sorted((f for f in range(2, min(common, MAX_ENLARGEMENT) + 1) if common % f == 0), reverse=True):
        blocks = grey.reshape(height // factor, factor, width // factor, factor)
        if (blocks == blocks[:, :1, :, :1]).all():
            return factor
    return 1


def smooth_pixel_enlargement(grey: np.ndarray) -> np.ndarray:
    """A thumbnail enlarged by pixel repetition → the same enlargement done smoothly (bicubic from the
    thumbnail). The blocks' staircase edges are no part of the digit, and MNIST's digits are anti-aliased:
    read smoothly, such thumbnails are misread about a third less often (README, style suite)."""
    factor = pixel_enlargement_factor(grey)
    if factor == 1:
        return grey
    height, width = grey.shape
    return cv2.resize(grey[::factor, ::factor], (width, height), interpolation=cv2.INTER_CUBIC)


def to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 frames → float32 in [0,1], the model's input; done per batch, not per image."""
    return frames.astype(np.float32) * np.float32(1 / 255)


def to_mnist(image: np.ndarray) -> np.ndarray:
    """A decoded image (any depth) → 28×28 float32 in [0,1], white ink on black."""
    from infer.decode import to_uint8

    return to_float(to_mnist_uint8(to_uint8(image)))


def preprocess_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    """File contents → 28×28 uint8 in MNIST form; raises PreprocessError with a one-line reason."""
    return to_mnist_uint8(decode(data, max_pixels))
