"""Walk the user's PATHs lazily, in sorted order, yielding image files and counting what is skipped; and the
one rule that turns a path into CSV text (`display_path`) and back (`path_bytes`).

Folders are listed one at a time (never the whole tree in memory) and walked with an explicit stack, so a chain
of folders thousands deep has no recursion limit; symlinked folders are followed once, so a link loop ends.
Files named on the command line are always tried; inside folders only image extensions count.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

IMAGE_EXTENSIONS = frozenset(  # what OpenCV decodes (GIF since 4.11, AVIF in 5); .jfif/.jpe: browsers' JPEG names
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".gif",
     ".jp2", ".avif"}
)


@dataclass
class Walk:
    """Iterate over image paths under `paths`; `skipped` counts the non-image files seen on the way,
    `skipped_folders` the subfolders left out by --no-recursive."""

    paths: Iterable[str]
    recursive: bool = True
    skipped: int = 0
    skipped_folders: int = 0
    _seen_dirs: set[tuple[int, int]] = field(default_factory=set)

    def __iter__(self) -> Iterator[str]:
        for path in self.paths:
            if os.path.isdir(path):
                yield from self._walk_tree(path)
            else:
                yield path  # named by the user: tried whatever it is, so a typo becomes an error row

    def _walk_tree(self, root: str) -> Iterator[str]:
        """Depth first, in sorted order, without recursion: a stack of listings, one per open folder."""
        stack: list[Iterator[tuple[str, bool]]] = []
        listing = self._list(root)
        if listing is None:
            yield root  # unreadable folder: reported as one error row, the walk goes on
            return
        stack.append(listing)
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            path, is_dir = entry
            if is_dir:
                if not self.recursive:
                    self.skipped_folders += 1
                    continue
                listing = self._list(path)
                if listing is None:
                    yield path
                elif listing is not _EMPTY:
                    stack.append(listing)
            elif os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
                yield path  # broken links and link loops included: they become error rows
            else:
                self.skipped += 1

    def _list(self, folder: str) -> Iterator[tuple[str, bool]] | None:
        """The folder's entries as (path, is a folder), sorted; None when it cannot be listed; _EMPTY when it
        was walked already (a symlink back to a folder seen before)."""
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in self._seen_dirs:
                return _EMPTY
            self._seen_dirs.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as entries:
                listing = sorted((entry.name, _is_dir(entry)) for entry in entries)
        except OSError:
            return None
        return ((os.path.join(folder, name), is_dir) for name, is_dir in listing)


_EMPTY: Iterator[tuple[str, bool]] = iter(())


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; a loop or broken link is not a folder
    except OSError:
        return False


# The display rule, one-to-one so that CSV text identifies a file: a backslash is written `\\`; TAB, LF and CR
# `\t`, `\n`, `\r`; every other C0 control character, DEL, and each byte that is not valid UTF-8 `\xNN`; the
# C1 controls (U+0080..U+009F) `\u00NN`. Everything else is the path's own UTF-8 text.
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_ESCAPED = re.compile(r"[\\\x00-\x1f\x7f-\x9f\udc80-\udcff]")
_UNESCAPED = re.compile(r"\\(?:x([0-9a-f]{2})|u(00[89][0-9a-f])|(.))", re.DOTALL)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code >= 0xDC80:  # a byte that is not UTF-8, carried by the surrogateescape error handler
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def display_path(path: str) -> str:
    """The path as CSV text: one line, printable, and different for every different path (rule above)."""
    return _ESCAPED.sub(_escape, path)


def escape_controls(text: str) -> str:
    """Control characters of other text (labels, messages) escaped as in paths, so every cell stays on its line."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", _escape, text)


def path_bytes(text: str) -> bytes:
    """The real path bytes of a `display_path` text. ValueError when the text breaks the rule (not written by
    this version of digits-infer), so that two texts never stand for one file."""
    out = bytearray()
    position = 0
    try:
        for match in _UNESCAPED.finditer(text):
            out += text[position : match.start()].encode("utf-8")
            hex_byte, c1, named = match.groups()
            if hex_byte is not None:
                out.append(int(hex_byte, 16))
            elif c1 is not None:
                out += chr(int(c1, 16)).encode("utf-8")
            else:
                out += _NAMED_BYTES[named]  # KeyError: an escape the rule never writes
            position = match.end()
        out += text[position:].encode("utf-8")
    except (UnicodeEncodeError, KeyError):
        raise ValueError(f"{text!r} is not a path as digits-infer writes them") from None
    if display_path(os.fsdecode(bytes(out))) != text:  # a lone backslash, or an escape of a plain character
        raise ValueError(f"{text!r} is not a path as digits-infer writes them")
    return bytes(out)


_NAMED_BYTES = {"\\": b"\\", "t": b"\t", "n": b"\n", "r": b"\r"}
