"""What an image file's header says, read before any pixel is decoded: size, channels, bytes per sample, the
EXIF orientation and, for PNM, the declared maximum value.

This is what lets digits-infer refuse a decompression bomb from its header, decode a large JPEG at a reduced
size, turn a phone photo upright as viewers do, and scale a PGM by its maxval. PNG and JPEG, the common case,
are read here directly (a few microseconds); other formats through Pillow's lazy open, which reads the header
only.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import NamedTuple

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}  # colour type → channels OpenCV decodes (palette: up to BGRA)
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (DHT, JPG, DAC are not)
EXIF_ORIENTATION_TAG = 0x0112
PILLOW_BYTES_PER_SAMPLE = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


class ImageInfo(NamedTuple):  # a named tuple: made once per image, three times quicker than a frozen dataclass
    width: int
    height: int
    channels: int  # as OpenCV decodes it with IMREAD_UNCHANGED (at most)
    bytes_per_sample: int
    format: str  # "png", "jpeg", "tiff", "pnm", or Pillow's format name
    orientation: int = 1  # EXIF 1..8; 1 when absent, and for formats OpenCV turns itself (TIFF)
    maxval: int = 0  # PNM's declared maximum sample value; 0 for other formats

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        return self.pixels * self.channels * self.bytes_per_sample


def read_info(data: bytes) -> ImageInfo | None:
    """The header's facts, or None when no reader recognises the bytes as an image."""
    try:
        if data.startswith(PNG_SIGNATURE):
            return _png(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data) or _pillow(data)
        if data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 2:
            return _pnm(data)
        if data[:2] == b"BM" and len(data) >= 30:
            return _bmp(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", data[6:10])
            return ImageInfo(width, height, 4, 1, "gif")
        return _pillow(data)
    except (struct.error, ValueError, IndexError, StopIteration):
        return None


def exif_orientation(block: bytes) -> int:
    """The Orientation tag (1..8) of an EXIF block (TIFF structure, with or without the 'Exif\\0\\0' prefix)."""
    if block.startswith(b"Exif\x00\x00"):
        block = block[6:]
    value = ifd0_tags(block, {EXIF_ORIENTATION_TAG}).get(EXIF_ORIENTATION_TAG, [1])[0]
    return value if 1 <= value <= 8 else 1


def ifd0_tags(block: bytes, wanted: set[int]) -> dict[int, list[int]]:
    """The SHORT/LONG values of the wanted tags in a TIFF structure's first IFD ({} when it is not TIFF)."""
    order = {b"II": "<", b"MM": ">"}.get(block[:2])
    if order is None or struct.unpack(order + "H", block[2:4])[0] != 42:
        return {}
    (offset,) = struct.unpack(order + "I", block[4:8])
    (count,) = struct.unpack(order + "H", block[offset : offset + 2])
    found = {}
    for index in range(min(count, 1024)):
        start = offset + 2 + 12 * index
        tag, kind, number = struct.unpack(order + "HHI", block[start : start + 8])
        if tag not in wanted or kind not in (3, 4):
            continue
        size = 2 if kind == 3 else 4
        where = start + 8 if number * size <= 4 else struct.unpack(order + "I", block[start + 8 : start + 12])[0]
        found[tag] = list(struct.unpack(f"{order}{min(number, 16)}{'H' if kind == 3 else 'I'}",
                                        block[where : where + min(number, 16) * size]))
    return found


def _tiff(data: bytes) -> ImageInfo | None:
    """Size, samples and bits of the first page. OpenCV turns TIFFs by their orientation tag itself."""
    tags = ifd0_tags(data, {256, 257, 258, 277})
    if 256 not in tags or 257 not in tags:
        return None
    channels = tags.get(277, [1])[0]
    bits = max(tags.get(258, [8]))
    return ImageInfo(tags[256][0], tags[257][0], max(channels, 1), max(1, bits // 8), "tiff")


def _png(data: bytes) -> ImageInfo:
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return ImageInfo(width, height, PNG_CHANNELS.get(colour, 4), 2 if depth == 16 else 1, "png",
                     orientation=_png_orientation(data))


def _png_orientation(data: bytes) -> int:
    """From an eXIf chunk, wherever it is; a match inside compressed data fails its CRC and is ignored."""
    position = data.find(b"eXIf", 12)
    while position != -1:
        (length,) = struct.unpack(">I", data[position - 4 : position])
        body = data[position + 4 : position + 4 + length]
        crc = data[position + 4 + length : position + 8 + length]
        if len(body) == length and len(crc) == 4 and zlib.crc32(data[position : position + 4 + length]) == \
                struct.unpack(">I", crc)[0]:
            return exif_orientation(body)
        position = data.find(b"eXIf", position + 1)
    return 1


def _jpeg(data: bytes) -> ImageInfo | None:
    """Walk the markers up to the scan: size and components from the frame header, orientation from APP1."""
    position, orientation, frame = 2, 1, None
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            orientation = exif_orientation(segment)
        elif marker in JPEG_SOF and frame is None:
            frame = struct.unpack(">BHHB", segment[:6])
        elif marker == 0xDA:  # start of scan: the header is over
            break
        position += 2 + length
    if frame is None:
        return None
    precision, height, width, components = frame
    return ImageInfo(width, height, 1 if components == 1 else 3, 2 if precision > 8 else 1, "jpeg", orientation)


def _bmp(data: bytes) -> ImageInfo | None:
    """BITMAPINFOHEADER and later: width, height (negative for top-down rows) and bits per pixel."""
    if struct.unpack("<I", data[14:18])[0] < 40:
        return _pillow(data)  # the old OS/2 header: rare, let Pillow read it
    width, height, _, bits = struct.unpack("<iiHH", data[18:30])
    return ImageInfo(width, abs(height), 4 if bits == 32 else 3 if bits > 8 else 3, 1, "bmp")


def _pnm(data: bytes) -> ImageInfo | None:
    """P1–P6: width, height and maxval as text tokens, with # comments."""
    kind = data[1] - ord("0")
    fields: list[int] = []
    tokens = _pnm_tokens(data[2:512])
    while len(fields) < (2 if kind in (1, 4) else 3):
        fields.append(int(next(tokens)))
    width, height = fields[0], fields[1]
    maxval = 1 if kind in (1, 4) else fields[2]
    if width <= 0 or height <= 0 or not 0 < maxval < 65536:
        return None
    return ImageInfo(width, height, 3 if kind in (3, 6) else 1, 2 if maxval > 255 else 1, "pnm", maxval=maxval)


def _pnm_tokens(header: bytes):
    for line in header.split(b"\n"):
        yield from line.split(b"#", 1)[0].split()


def _pillow(data: bytes) -> ImageInfo | None:
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # only the header is read here; digits-infer's pixel limit is the guard
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            mode, fmt = image.mode, (image.format or "").lower()
            bands = len(image.getbands())
            orientation = 1 if fmt == "tiff" else image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        return None
    per_sample = PILLOW_BYTES_PER_SAMPLE.get(mode, 1)
    if fmt in ("gif", "webp") or mode == "P":
        bands = 4  # palettes and animations decode to BGR(A)
    orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
    return ImageInfo(width, height, bands, per_sample, fmt, orientation)
