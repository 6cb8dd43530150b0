"""Walk the user's PATHs lazily, in sorted order, yielding image files and counting what is skipped.

Folders are listed one at a time (never the whole tree in memory); symlinked folders are followed once, so a
link loop ends. Files named on the command line are always tried; inside folders only image extensions count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator

IMAGE_EXTENSIONS = frozenset(  # what OpenCV decodes (GIF since OpenCV 4.11)
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".gif"}
)


@dataclass
class Walk:
    """Iterate over image paths under `paths`; `skipped` counts non-image files seen on the way."""

    paths: Iterable[str]
    recursive: bool = True
    skipped: int = 0
    _seen_dirs: set[tuple[int, int]] = field(default_factory=set)

    def __iter__(self) -> Iterator[str]:
        for path in self.paths:
            if os.path.isdir(path):
                yield from self._walk_dir(path)
            else:
                yield path  # named by the user: tried whatever it is, so a typo becomes an error row

    def _walk_dir(self, folder: str) -> Iterator[str]:
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in self._seen_dirs:
                return  # a symlink back to a folder already walked
            self._seen_dirs.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as entries:
                listing = sorted((entry.name, _is_dir(entry)) for entry in entries)
        except OSError:
            yield folder  # unreadable folder: reported as one error row, the walk goes on
            return
        for name, is_dir in listing:
            path = os.path.join(folder, name)
            if is_dir:
                if self.recursive:
                    yield from self._walk_dir(path)
                else:
                    self.skipped += 1
            elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield path  # broken links and link loops included: they become error rows
            else:
                self.skipped += 1


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; a loop or broken link is not a folder
    except OSError:
        return False


def display_path(path: str) -> str:
    """The path as text for the CSV: bytes that are not valid UTF-8 are written as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
