"""Real bad and unusual image files, written the way other programs write them (Pillow, OpenCV, by hand)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width×height pixels, with almost no data: a decompression bomb's shape."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def pillow_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write_cases(folder: Path, digit: np.ndarray) -> dict[str, str]:
    """Write every case into `folder`; returns {file name: 'ok' or the expected error fragment}."""
    folder.mkdir(parents=True, exist_ok=True)
    big = cv2.resize(digit, (112, 112), interpolation=cv2.INTER_CUBIC)
    grey = Image.fromarray(255 - big)  # dark ink on white paper
    png = cv2.imencode(".png", big)[1].tobytes()
    jpg = cv2.imencode(".jpg", 255 - big)[1].tobytes()
    rgba = np.zeros((112, 112, 4), np.uint8)
    rgba[:, :, 3] = big
    strip = np.zeros((1, 2000), np.uint8)  # a 1×2000 image with a short stroke in the middle
    strip[0, 990:1010] = 255
    files: dict[str, tuple[bytes, str]] = {
        "zero.png": (b"", "empty file"),
        "truncated.png": (png[: len(png) // 2], "not a readable image"),
        "truncated.jpg": (jpg[:200], "not a readable image"),
        "text.png": (b"just some text, not pixels\n", "not a readable image"),
        "page.jpg": (b"<!doctype html><html><body>404 Not Found</body></html>", "not a readable image"),
        "deep16.png": (cv2.imencode(".png", big.astype(np.uint16) * 257)[1].tobytes(), "ok"),
        "grey_alpha.png": (pillow_bytes(Image.fromarray(rgba[:, :, 3]).convert("LA"), "PNG"), "ok"),
        "rgba.png": (cv2.imencode(".png", rgba)[1].tobytes(), "ok"),
        "palette.png": (pillow_bytes(grey.convert("P"), "PNG"), "ok"),
        "cmyk.jpg": (pillow_bytes(grey.convert("CMYK"), "JPEG"), "ok"),
        "pages.tiff": (pillow_bytes(grey, "TIFF", save_all=True, append_images=[grey.rotate(90)]), "ok"),
        "deep16.tif": (pillow_bytes(Image.fromarray(big.astype(np.uint16) * 257), "TIFF"), "ok"),
        "photo.webp": (pillow_bytes(grey, "WEBP", quality=95), "ok"),
        "anim.gif": (pillow_bytes(grey.convert("P"), "GIF", save_all=True,
                                  append_images=[grey.rotate(90).convert("P")]), "ok"),
        "dot.png": (cv2.imencode(".png", np.full((1, 1), 200, np.uint8))[1].tobytes(), "no ink found"),
        "strip.png": (cv2.imencode(".png", strip)[1].tobytes(), "no ink found"),  # a dash is not a digit
        "bomb.png": (huge_png(50000, 50000), "over the limit of"),
        "with space, comma.png": (png, "ok"),
        'quote"s.png': (png, "ok"),
        "new\nline.png": (png, "ok"),
        "emoji 🎉.png": (png, "ok"),
    }
    expected = {}
    for name, (data, outcome) in files.items():
        (folder / name).write_bytes(data)
        expected[name.replace("\n", "\\n")] = outcome  # the CSV's path text escapes control characters
    with open(os.fsencode(folder / "latin1-") + b"\xe9t\xe9.png", "wb") as f:  # not valid UTF-8
        f.write(png)
    expected["latin1-\\xe9t\\xe9.png"] = "ok"
    (folder / "folder.png").mkdir()  # a directory whose name ends in .png: walked, not read
    (folder / "folder.png" / "inside.png").write_bytes(png)
    expected["inside.png"] = "ok"
    os.symlink("loop.png", folder / "loop.png")  # a link to itself
    expected["loop.png"] = "Too many levels of symbolic links"
    os.symlink(folder / "gone.png", folder / "broken.png")
    expected["broken.png"] = "No such file or directory"
    os.symlink(".", folder / "cycle")  # a folder link back to its parent: walked once
    locked = folder / "locked.png"
    locked.write_bytes(png)
    locked.chmod(0)
    expected["locked.png"] = "ok" if os.geteuid() == 0 else "Permission denied"  # root reads anything
    (folder / "readme.txt").write_text("not an image: skipped and counted")
    return expected
