"""Any scan → MNIST form, with OpenCV, the way the MNIST authors made their images.

Steps: decode (bytes, any depth, alpha), grey, ink made white on black, ink found by blur + Otsu with specks
ignored, crop to the ink, longer side resized to 20 px keeping the aspect ratio, pasted into 28×28 so that its
centre of mass sits at the centre. An image already in MNIST form comes out unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE = 28
INK_BOX = 20
MIN_CONTRAST = 24  # grey levels between paper and ink below which there is no ink to find
SPECK_FRACTION = 0.05  # ink components smaller than this share of the largest are specks


class PreprocessError(Exception):
    """This file cannot become a digit (undecodable, too large, no ink). One line, shown in the CSV."""


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes → the image as stored (IMREAD_UNCHANGED: any depth, alpha kept). imdecode works for any path."""
    if not data:
        raise PreprocessError("empty file")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # OpenCV raises for images over its pixel limit and for some hostile headers
        image = None
    if image is None:
        raise PreprocessError(undecodable_reason(data, max_pixels))
    if image.size == 0:
        raise PreprocessError("image has no pixels")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise PreprocessError(f"image is {image.shape[1]}x{image.shape[0]} pixels, over --max-pixels {max_pixels}")
    return image


def undecodable_reason(data: bytes, max_pixels: int) -> str:
    """Explain a failed decode: too many pixels (header read with Pillow, never decoded) or not an image."""
    try:
        import io

        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # we only read the header here; the decompression-bomb guard is ours
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Exception:  # Pillow cannot read it either: corrupt, truncated or not an image at all
        return "not a readable image (corrupt, truncated or not an image file)"
    if width * height > max_pixels:
        return f"image is {width}x{height} pixels, over --max-pixels {max_pixels}"
    return "not a readable image (corrupt or truncated)"


def to_grey8(image: np.ndarray) -> np.ndarray:
    """Any depth and channel layout → 8-bit grey; transparent pixels become paper that contrasts with the strokes."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return image
    channels = image.shape[2]
    if channels == 1:
        return image[:, :, 0]
    if channels == 2:
        grey, alpha = image[:, :, 0], image[:, :, 1]
    elif channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    else:
        grey, alpha = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY), image[:, :, 3]
    return flatten_alpha(np.ascontiguousarray(grey), np.ascontiguousarray(alpha))


def flatten_alpha(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite over white when the visible strokes are dark, over black when they are light."""
    if alpha.min() == 255:
        return grey
    visible = alpha > 127
    strokes_dark = not visible.any() or grey[visible].mean() < 128
    paper = np.full_like(grey, 255 if strokes_dark else 0)
    weight = alpha.astype(np.float32) / 255.0
    return cv2.convertScaleAbs(grey * weight + paper * (1.0 - weight))


def ink_white_on_black(grey: np.ndarray) -> np.ndarray:
    """Invert when the paper, judged by the image's one-pixel border, is lighter than mid-grey on average."""
    height, width = grey.shape
    total = cv2.sumElems(grey)[0]
    if height > 2 and width > 2:
        border_sum, border_count = total - cv2.sumElems(grey[1:-1, 1:-1])[0], 2 * (height + width) - 4
    else:
        border_sum, border_count = total, height * width  # a strip is all border
    return cv2.bitwise_not(grey) if border_sum > 127.5 * border_count else grey


def remove_background(grey: np.ndarray) -> np.ndarray:
    """Uneven lighting: subtract the slowly varying paper (a top-hat, strokes being narrower than its kernel).

    The background is estimated by a morphological opening on a copy shrunk to about 48 px: a quarter of the
    image wide kernel on the full image would cost milliseconds, the shrunk one costs microseconds.
    """
    height, width = grey.shape
    factor = max(1, min(height, width) // 48)
    small = cv2.resize(grey, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    k = max(3, min(small.shape) // 4) | 1
    background = cv2.morphologyEx(small, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return cv2.subtract(grey, cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR))


def ink_only(grey: np.ndarray) -> np.ndarray:
    """Ink stretched to full white, paper, texture, shading and specks set to 0."""
    height, width = grey.shape
    if min(height, width) >= 64:
        grey = remove_background(grey)
    low, high, _, _ = cv2.minMaxLoc(grey)
    if high - low < MIN_CONTRAST:
        raise PreprocessError("no ink found")
    blur = max(3, (min(height, width) // 40) | 1)
    smooth = cv2.GaussianBlur(grey, (blur, blur), 0) if min(height, width) > 32 else grey
    _, mask = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    # 16-bit labels are three times faster and enough while components (≤ pixels/4) fit in them.
    label_type = cv2.CV_16U if height * width < 4 * 65535 else cv2.CV_32S
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, label_type, cv2.CCL_SPAGHETTI)
    if count <= 1 or (count == 2 and stats[1, cv2.CC_STAT_AREA] < 2):
        raise PreprocessError("no ink found")
    if count > 2:  # more than one blob: drop the specks
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = np.flatnonzero(areas >= max(2, SPECK_FRACTION * areas.max())) + 1
        if len(keep) < count - 1:
            mask = np.isin(labels, keep).astype(np.uint8) * 255
    # Paper level: the mean outside the ink; ink level: mean + one standard deviation of the ink, capped at the
    # brightest pixel (≈ its 85th percentile, without sorting): stroke centres map to white, as in MNIST.
    paper = cv2.mean(grey, mask=cv2.bitwise_not(mask))[0] if cv2.countNonZero(mask) < mask.size else low
    ink_mean, ink_std = cv2.meanStdDev(grey, mask=mask)
    ink = min(float(ink_mean[0, 0] + ink_std[0, 0]), high)
    if ink - paper < MIN_CONTRAST:
        raise PreprocessError("no ink found")
    # Grow the ink mask a little so anti-aliased stroke edges survive, then stretch paper→0 and ink→255.
    grow = max(3, (min(height, width) // 28) | 1)
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    stretched = cv2.convertScaleAbs(grey, alpha=255.0 / (ink - paper), beta=-paper * 255.0 / (ink - paper))
    return cv2.bitwise_and(stretched, mask)


def centre_in_frame(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, fit the longer side to 20 px, paste into 28×28 with the centre of mass in the middle."""
    x, y, w, h = cv2.boundingRect(ink)
    if w == 0 or h == 0:
        raise PreprocessError("no ink found")
    crop = ink[y : y + h, x : x + w]
    scale = INK_BOX / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) != (w, h):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (new_w, new_h), interpolation=interpolation)
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
    """A decoded image (any depth, 1–4 channels) → 28×28 uint8, white ink on black.

    Images already in MNIST form pass through unchanged: normalising them again could only move them.
    """
    grey = ink_white_on_black(to_grey8(image))
    return grey if is_mnist_form(grey) else centre_in_frame(ink_only(grey))


def to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 frames → float32 in [0,1], the model's input; done per batch, not per image."""
    return frames.astype(np.float32) * np.float32(1 / 255)


def to_mnist(image: np.ndarray) -> np.ndarray:
    """A decoded image → 28×28 float32 in [0,1], white ink on black."""
    return to_float(to_mnist_uint8(image))


def preprocess_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    """File contents → 28×28 uint8 in MNIST form; raises PreprocessError with a one-line reason."""
    return to_mnist_uint8(decode(data, max_pixels))
