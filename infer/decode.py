"""Image file bytes → an 8-bit image, upright, no larger than WORK_SIDE: what preprocessing starts from.

The header is read first (infer.imageinfo), so that an image over the pixel or decoded-size limit is refused
before any allocation, a large JPEG is decoded at a reduced size, and the EXIF orientation is applied as
viewers apply it. A large image is shrunk (INTER_AREA) in its own depth and channels before anything else
touches it, so the cost of every later step is bounded by WORK_SIDE, not by the file.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

from infer.imageinfo import PNG_SIGNATURE, ImageInfo, read_info

WORK_SIDE = 1024  # longer side of the working copy: a digit on an A4 page at 300 dpi still spans 15+ px
# Decoded bytes may be at most 2 × the pixel limit (200 MB by default: a 100 MP grey scan, a 66 MP colour one;
# a JPEG counts at the size it is decoded, reduced). OpenCV's decoders hold a second full-size buffer while
# they decode, so this keeps the peak within the decoded size plus 200 MB, and the time within about 2 s.
BYTES_PER_PIXEL_LIMIT = 2
STRIP_ROWS = 256  # rows of a large 16-bit PNG reduced at a time (decoded_in_strips)
REDUCED_COLOUR = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
REDUCED_GREY = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
ORIENT = {  # EXIF orientation → operations that show the stored pixels as viewers do
    2: (None, 1), 3: (cv2.ROTATE_180, None), 4: (None, 0), 5: (cv2.ROTATE_90_CLOCKWISE, 0),
    6: (cv2.ROTATE_90_CLOCKWISE, None), 7: (cv2.ROTATE_90_CLOCKWISE, 1), 8: (cv2.ROTATE_90_COUNTERCLOCKWISE, None),
}


class PreprocessError(Exception):
    """This file cannot become a digit (undecodable, too large, no ink). One line, shown in the CSV."""


def decoded_limit(max_pixels: int) -> int:
    return BYTES_PER_PIXEL_LIMIT * max_pixels


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """File contents → uint8 image (grey, grey+alpha, BGR or BGRA), upright, longer side ≤ WORK_SIDE."""
    if not data:
        raise PreprocessError("empty file")
    if plain_grey_png(data, max_pixels):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is not None and image.size:
            return image
    info = read_info(data)
    if info is None:
        raise PreprocessError("not a readable image (corrupt, truncated or not an image file)")
    factor = reduction(info)
    check_limits(info, max_pixels, factor if info.format == "jpeg" else 1)
    flags = cv2.IMREAD_UNCHANGED
    if factor > 1:
        flags = (REDUCED_GREY if info.channels == 1 else REDUCED_COLOUR)[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    image = decoded_in_strips(data, info)
    if image is None:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        except cv2.error:  # some hostile headers make the decoder raise rather than return None
            image = None
    if image is None or image.size == 0:
        raise PreprocessError("not a readable image (corrupt or truncated)")
    return orient(to_uint8(shrink(image), info.maxval), info.orientation)


def decoded_in_strips(data: bytes, info: ImageInfo) -> np.ndarray | None:
    """A large 16-bit grey PNG, decoded by Pillow into one buffer and area-reduced a strip at a time: the same
    pixels as `shrink` of OpenCV's decode (tested), without OpenCV's second full-size buffer (a 10000×10000 page:
    about 120 MB less at the peak). None for any other image, or when Pillow cannot: OpenCV decodes it then."""
    longer = max(info.width, info.height)
    if info.format != "png" or info.bytes_per_sample != 2 or info.channels != 1 or longer < 2 * WORK_SIDE:
        return None
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # the header was checked against digits-infer's own limits already
    factor = -(-longer // WORK_SIDE)
    width, height = info.width - info.width % factor, info.height - info.height % factor
    strip = factor * max(1, STRIP_ROWS // factor)
    try:
        with Image.open(io.BytesIO(data)) as picture:
            if picture.mode not in ("I;16", "I;16B") or width == 0 or height == 0:
                return None
            picture.load()
            order = "<u2" if picture.mode == "I;16" else ">u2"
            rows = []
            for top in range(0, height, strip):
                rows_here = min(strip, height - top)
                pixels = np.frombuffer(picture.crop((0, top, width, top + rows_here)).tobytes(), order)
                rows.append(cv2.resize(pixels.reshape(rows_here, width).astype(np.uint16, copy=False),
                                       (width // factor, rows_here // factor), interpolation=cv2.INTER_AREA))
    except (OSError, ValueError, SyntaxError):  # Pillow's errors for a damaged file: OpenCV tries it then
        return None
    return np.ascontiguousarray(np.vstack(rows), dtype=np.uint16)


def plain_grey_png(data: bytes, max_pixels: int) -> bool:
    """An 8-bit grey PNG within the limits and WORK_SIDE, without EXIF: decoded as it is, nothing to refuse,
    shrink, scale or turn (MNIST's own files). Told from the header here, without the full header reader: this
    is the common case of a large folder, and the time per image is the throughput there."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or data[24:26] != b"\x08\x00" or b"eXIf" in data:
        return False
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return 0 < width <= WORK_SIDE and 0 < height <= WORK_SIDE and width * height <= max_pixels


def check_limits(info: ImageInfo, max_pixels: int, reduction: int = 1) -> None:
    """Refuse from the header: too many pixels, or too many bytes once decoded (at the `reduction` a JPEG is
    decoded at)."""
    if info.width <= 0 or info.height <= 0:
        raise PreprocessError("image has no pixels")
    if info.pixels > max_pixels:
        raise PreprocessError(f"image is {info.width}x{info.height} pixels, over the limit of {max_pixels}")
    decoded = info.decoded_bytes // (reduction * reduction)
    if decoded > decoded_limit(max_pixels):
        raise PreprocessError(f"image is {info.width}x{info.height}x{info.channels} at {8 * info.bytes_per_sample} "
                              f"bits: {decoded / 1e6:,.0f} MB decoded, over the limit of "
                              f"{decoded_limit(max_pixels) / 1e6:,.0f} MB")


def reduction(info: ImageInfo) -> int:
    """1, 2, 4 or 8: the scale a large image is decoded at (`IMREAD_REDUCED_*`).

    A JPEG: the largest DCT scaling that keeps the longer side at or above WORK_SIDE (far quicker and smaller).
    An 8-bit PNG without alpha: OpenCV still decodes it whole, but keeps only the reduced copy, which halves
    the peak memory of a 10000×10000 page; the scale whose working copy (after `shrink`) is largest, the
    coarsest among equals. Other images (alpha, 16 bits, other formats) keep every channel and bit: decoded as
    they are, then shrunk."""
    longer = max(info.width, info.height)
    if info.format == "jpeg":
        factor = 1
        while factor < 8 and longer // (2 * factor) >= WORK_SIDE:
            factor *= 2
        return factor
    if info.format != "png" or info.bytes_per_sample != 1 or info.channels not in (1, 3) or longer < 2 * WORK_SIDE:
        return 1
    working = {f: (longer // f) // -(-(longer // f) // WORK_SIDE) for f in (1, 2, 4, 8)}
    return max(working, key=lambda f: (working[f], f))


def shrink(image: np.ndarray) -> np.ndarray:
    """Longer side to at most WORK_SIDE by area averaging over a whole factor (OpenCV's fast path, several times
    quicker than an arbitrary ratio), in the image's own depth and channels."""
    height, width = image.shape[:2]
    factor = -(-max(height, width) // WORK_SIDE)
    if factor == 1:
        return image
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = image.astype(np.float32)
    size = (max(1, width // factor), max(1, height // factor))
    return cv2.resize(image[: size[1] * factor, : size[0] * factor], size, interpolation=cv2.INTER_AREA)


def to_uint8(image: np.ndarray, maxval: int = 0) -> np.ndarray:
    """8 bits per sample: scaled by the format's declared maximum (PNM), else by the data's own range."""
    if image.dtype == np.uint8:
        return image if maxval in (0, 255) else cv2.convertScaleAbs(image, alpha=255.0 / maxval)
    if image.dtype == np.uint16:
        top = maxval or max(255, int(image.max()))  # 12-bit data in 16-bit files fills the range too
        return cv2.convertScaleAbs(image, alpha=255.0 / top)
    values = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return cv2.normalize(values, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    rotation, flip = ORIENT.get(orientation, (None, None))
    if flip is not None:
        image = cv2.flip(image, flip)
    if rotation is not None:
        image = cv2.rotate(image, rotation)
    return image
