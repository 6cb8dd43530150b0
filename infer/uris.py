"""Inputs named by URI (s3://, gs://, abfs://, file://, any filesystem pyarrow reads), listed and read with the
local walk's rules: the same image extensions, depth first in sorted name order, non-image files counted as
skipped, a root that is not a folder tried as a file (a typo becomes an error row).

Listing is streamed one folder at a time (pyarrow's FileSelector, not recursive), like infer.discover.Walk
with os.scandir: the driver holds the listings of the open folders only, never the whole tree. file:// is the
local filesystem, so it is walked by Walk itself (symlink loops and all) and shown with its file:// prefix.
pyarrow is imported only when a URI is met: the local engine never loads it.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from infer.decode import PreprocessError
from infer.discover import IMAGE_EXTENSIONS, Walk
from infer.options import OptionError
from infer.pipeline import read_file

FILE_SCHEME = "file://"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    return _URI.match(path) is not None


def refuse_uris(paths: Iterable[str]) -> None:
    """The local engine reads local paths only: a URI is a usage error, not a missing file."""
    for path in paths:
        if is_uri(path):
            raise OptionError(f"{path}: URIs are read by --engine ray (pip install 'digits[ray]')")


@dataclass
class Root:
    """A URI given by the user, opened: its filesystem, its path there, and the text its files are shown with."""

    shown: str  # the URI without its query and trailing slash: each file is shown as shown + "/" + relative
    filesystem: Any  # pyarrow.fs.FileSystem
    path: str  # the root's path inside that filesystem


def open_root(uri: str) -> Root:
    """Raises OSError or pyarrow's ArrowException (a ValueError or OSError) when pyarrow cannot open the URI."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    return Root(shown_root(uri), filesystem, path.rstrip("/") or path)


def shown_root(uri: str) -> str:
    """How a root URI is shown: without its query (pyarrow's options) and without a trailing slash."""
    shown = uri.split("?", 1)[0]
    return shown.rstrip("/") if len(shown) > len(_URI.match(shown).group()) + 1 else shown


@dataclass
class UriWalk:
    """Iterate over the image URIs under `uris` (not file://); `skipped` counts non-image files (and, with
    recursive=False, subfolders) seen on the way, as Walk does."""

    uris: Iterable[str]
    recursive: bool = True
    skipped: int = 0

    def __iter__(self) -> Iterator[str]:
        from pyarrow import fs

        for uri in self.uris:
            try:
                root = open_root(uri)
                is_dir = root.filesystem.get_file_info(root.path).type == fs.FileType.Directory
            except (OSError, ValueError):
                yield uri  # cannot be opened: tried as a file, so its error becomes the row
                continue
            if is_dir:
                yield from self._walk_tree(root)
            else:
                yield uri

    def _walk_tree(self, root: Root) -> Iterator[str]:
        stack = [self._list(root, root.path)]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            path, is_dir = entry
            shown = root.shown + path[len(root.path):]
            if is_dir:
                if self.recursive:
                    stack.append(self._list(root, path, shown))
                else:
                    self.skipped += 1
            elif os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
                yield shown
            else:
                self.skipped += 1

    def _list(self, root: Root, folder: str, shown: str | None = None) -> Iterator[tuple[str, bool]]:
        """One folder's entries as (path, is a folder), sorted by name; an unlistable folder is one entry that
        fails when read."""
        from pyarrow import fs

        try:
            infos = root.filesystem.get_file_info(fs.FileSelector(folder, recursive=False))
        except (OSError, ValueError):
            return iter([(folder, False)]) if shown is not None else iter(())
        listing = sorted((info.base_name, info.path, info.type == fs.FileType.Directory) for info in infos)
        return ((path, is_dir) for _, path, is_dir in listing)


@dataclass
class Inputs:
    """The user's PATHs in order, local paths through infer.discover.Walk (one walk, so folders seen under an
    earlier path are not walked again) and URIs through UriWalk; `skipped` adds up both."""

    paths: Iterable[str]
    recursive: bool = True
    _local: Walk = field(init=False)
    _remote: UriWalk = field(init=False)

    def __post_init__(self) -> None:
        self._local, self._remote = Walk([], self.recursive), UriWalk([], self.recursive)

    @property
    def skipped(self) -> int:
        return self._local.skipped + self._remote.skipped

    @property
    def skipped_folders(self) -> int:
        """Local subfolders left out by --no-recursive (a bucket's are counted in `skipped`)."""
        return self._local.skipped_folders

    def __iter__(self) -> Iterator[str]:
        for path in self.paths:
            if path.startswith(FILE_SCHEME):
                self._local.paths = [path[len(FILE_SCHEME):]]
                yield from (FILE_SCHEME + found for found in self._local)
            elif is_uri(path):
                self._remote.uris = [path]
                yield from self._remote
            else:
                self._local.paths = [path]
                yield from self._local


class Reader:
    """read(path, max_bytes) for infer.pipeline.Preparer that also reads URIs, keeping one filesystem per root
    (an S3 client is costly to make). `roots` are the URIs the user gave: each URI read is under one of them."""

    def __init__(self, roots: Iterable[str] = ()) -> None:
        self.roots = sorted((uri for uri in roots if is_uri(uri) and not uri.startswith(FILE_SCHEME)),
                            key=lambda uri: len(shown_root(uri)), reverse=True)  # the longest match is its root
        self.opened: dict[str, Root] = {}

    def __call__(self, path: str, max_bytes: int) -> bytes:
        if path.startswith(FILE_SCHEME):
            return read_file(path[len(FILE_SCHEME):], max_bytes)
        if not is_uri(path):
            return read_file(path, max_bytes)
        try:
            filesystem, inner = self._locate(path)
            with filesystem.open_input_file(inner) as f:
                size = f.size()
                if size > max_bytes:
                    raise PreprocessError(f"file is {size} bytes, too large for --max-pixels")
                return f.read()
        except FileNotFoundError:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT)) from None
        except IsADirectoryError:
            raise PreprocessError("is a folder that cannot be listed") from None
        except (OSError, ValueError) as exc:  # pyarrow's errors: network, permissions, unknown scheme
            raise PreprocessError(f"cannot read ({str(exc).splitlines()[0]})") from None

    def _locate(self, uri: str) -> tuple[Any, str]:
        for given in self.roots:
            shown = shown_root(given)
            if uri == shown or uri.startswith(shown + "/"):
                if given not in self.opened:
                    self.opened[given] = open_root(given)
                root = self.opened[given]
                return root.filesystem, root.path + uri[len(shown):]
        root = open_root(uri)
        return root.filesystem, root.path
