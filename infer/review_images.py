"""A card's two pictures as `data:` URIs: the original scaled down, and the 28×28 image the model saw.

Both come from the file as it is now, read and preprocessed by the same code as digits-infer (infer.decode,
infer.preprocess); a file that is gone, unreadable, or changed since the run gets a note instead of, or beside,
its pictures. Only the review queue's and the confusion cells' rows get pictures, so the page stays small.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from infer.decode import PreprocessError, decode
from infer.pipeline import os_reason, read_file
from infer.preprocess import to_mnist_uint8

THUMB_SIDE = 72  # longer side of the original's thumbnail, in pixels
_ESCAPED_BYTE = re.compile(r"\\x([0-9a-f]{2})")


@dataclass(frozen=True)
class Pictures:
    original: str = ""  # data: URI, or "" when there is none
    seen: str = ""  # the 28×28 the model saw, as a data: URI
    note: str = ""  # why a picture is missing, or that the file changed since the run


def png_uri(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise PreprocessError("cannot encode a thumbnail")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The decoded image (grey, grey+alpha, BGR or BGRA) with its longer side at most THUMB_SIDE."""
    if image.ndim == 3 and image.shape[2] == 2:  # grey+alpha: PNG cannot hold two channels
        grey, alpha = image[:, :, 0], image[:, :, 1]
        image = np.dstack([grey, grey, grey, alpha])
    height, width = image.shape[:2]
    scale = THUMB_SIDE / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def locate(path_text: str, roots: list[Path]) -> Path | None:
    """The file a CSV path names: as written (relative to each root in turn), then with the \\xNN escapes that
    digits-infer writes for bytes that are not UTF-8 turned back into those bytes."""
    candidates = [path_text]
    if _ESCAPED_BYTE.search(path_text):
        raw = _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), path_text)  # surrogateescape form
        candidates.append(raw)
    for text in candidates:
        path = Path(text)
        for root in [Path()] if path.is_absolute() else roots:
            where = root / path
            if os.path.lexists(where):
                return where
    return None


def pictures(path_text: str, roots: list[Path], max_pixels: int, changed_after: float | None) -> Pictures:
    """The card's pictures of the file at `path_text`; never raises for a bad or missing file."""
    path = locate(path_text, roots)
    if path is None:
        return Pictures(note="image gone: no file at this path any more")
    note = ""
    try:
        if changed_after is not None and path.stat().st_mtime > changed_after:
            note = "changed since the run: the pictures show the file as it is now, not what was classified"
        data = read_file(str(path), max(64 << 20, 8 * max_pixels))
        image = decode(data, max_pixels)
        original = png_uri(thumbnail(image))
    except FileNotFoundError:
        return Pictures(note="image gone: no file at this path any more")
    except OSError as exc:
        return Pictures(note=f"cannot read the image now ({os_reason(exc)})")
    except PreprocessError as exc:
        return Pictures(note=f"cannot show the image now ({exc})")
    except (cv2.error, ValueError, MemoryError) as exc:
        return Pictures(note=f"cannot decode the image now ({type(exc).__name__})")
    try:
        seen = png_uri(to_mnist_uint8(image))
    except (PreprocessError, cv2.error, ValueError) as exc:
        return Pictures(original, "", " ".join(filter(None, [note, f"no digit found in it now ({exc})"])))
    return Pictures(original, seen, note)
