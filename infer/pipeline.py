"""The batch pipeline: a thread pool reads and preprocesses whole batches (OpenCV releases the GIL) while the
main thread runs the model on the previous ones. Everything streams: a bounded number of batches is in flight.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from infer.backends import Classifier
from infer.options import DEFAULT_MAX_PIXELS
from infer.preprocess import SIZE, PreprocessError, preprocess_bytes, to_float


@dataclass(frozen=True)
class Row:
    path: str
    probabilities: np.ndarray | None  # float32 10, or None when this file failed
    error: str = ""


@dataclass
class Prepared:
    paths: list[str]
    images: np.ndarray  # float32 k×1×28×28 for the files that worked
    ok: list[int]  # indices into paths of those files
    errors: dict[int, str]


def read_file(path: str, max_bytes: int) -> bytes:
    """The file's bytes; only regular files, and never more than max_bytes (a FIFO or a 10 GB file is refused).

    os-level calls: this runs once per image, and the io stack's layers cost more than the read itself.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: opening a FIFO must not hang
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise PreprocessError("is a folder that cannot be listed")
        if not stat.S_ISREG(info.st_mode):
            raise PreprocessError("not a regular file")
        if info.st_size > max_bytes:
            raise PreprocessError(f"file is {info.st_size} bytes, too large for --max-pixels")
        return os.read(fd, info.st_size + 1)  # sized by the file: a read(n) allocates n bytes
    finally:
        os.close(fd)


def os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@dataclass(frozen=True)
class Preparer:
    """Reads and preprocesses one batch of paths; every failure becomes that file's one-line error."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    read: Callable[[str, int], bytes] = read_file

    def __call__(self, paths: list[str]) -> Prepared:
        frames = np.empty((len(paths), 1, SIZE, SIZE), np.uint8)
        ok: list[int] = []
        errors: dict[int, str] = {}
        max_bytes = max(64 << 20, 8 * self.max_pixels)
        for index, path in enumerate(paths):
            try:
                frames[len(ok), 0] = preprocess_bytes(self.read(path, max_bytes), self.max_pixels)
                ok.append(index)
            except PreprocessError as exc:
                errors[index] = str(exc)
            except OSError as exc:
                errors[index] = os_reason(exc)
            except (cv2.error, ValueError, MemoryError) as exc:  # a decoder's own failure on a hostile file
                errors[index] = f"cannot decode ({type(exc).__name__})"
        return Prepared(paths, to_float(frames[: len(ok)]), ok, errors)


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def rows_of(prepared: Prepared, classify: Classifier, display: Callable[[str], str]) -> list[Row]:
    probabilities = classify(prepared.images) if prepared.ok else np.empty((0, 10), np.float32)
    by_index = dict(zip(prepared.ok, probabilities, strict=True))
    return [
        Row(display(path), by_index.get(i), prepared.errors.get(i, ""))
        for i, path in enumerate(prepared.paths)
    ]


class Balance:
    """How many batches may be preprocessed at once. The model runs on the main thread between batches; while
    preprocessing takes no more than twice the model's time per batch (MNIST-form PNGs), the model keeps a core
    of its own and `workers - 1` threads preprocess (two threads of short OpenCV calls contend for the GIL).
    When preprocessing takes longer (scans take the full path), the model mostly waits, so its core is given
    to preprocessing too: all `workers` threads run. Measured per batch, so a mixed folder follows its mix."""

    def __init__(self, workers: int) -> None:
        self.low, self.high = max(1, workers - 1), workers
        self.allowed = self.low
        self.active = 0
        self.changed = threading.Condition()
        self.prepare_seconds = self.classify_seconds = 0.0  # per batch, exponentially weighted

    def run(self, preparer: Preparer, chunk: list[str]) -> Prepared:
        with self.changed:
            self.changed.wait_for(lambda: self.active < self.allowed)
            self.active += 1
        start = time.perf_counter()
        try:
            return preparer(chunk)
        finally:
            elapsed = time.perf_counter() - start
            with self.changed:
                self.active -= 1
                self.prepare_seconds = _weighted(self.prepare_seconds, elapsed)
                self.changed.notify_all()

    def classified(self, seconds: float) -> None:
        with self.changed:
            self.classify_seconds = _weighted(self.classify_seconds, seconds)
            bound = self.prepare_seconds > 2 * self.classify_seconds
            self.allowed = self.high if bound else self.low
            self.changed.notify_all()


def _weighted(average: float, value: float) -> float:
    return value if average == 0 else 0.7 * average + 0.3 * value


def classify_batches(paths: Iterable[str], classify: Classifier, batch_size: int, workers: int,
                     preparer: Preparer, display: Callable[[str], str] = str) -> Iterator[list[Row]]:
    """Yield one list of rows per batch, in the order of `paths`, with at most 2×workers batches in flight;
    `workers` threads preprocess, as many at once as Balance allows."""
    cv2.setNumThreads(1)  # parallelism comes from the pool; OpenCV's own threads only contend on tiny images
    balance = Balance(workers)

    def rows(prepared: Prepared) -> list[Row]:
        start = time.perf_counter()
        done = rows_of(prepared, classify, display)
        balance.classified(time.perf_counter() - start)
        return done

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess") as pool:
        pending: deque = deque()
        try:
            for chunk in batched(paths, batch_size):
                pending.append(pool.submit(balance.run, preparer, chunk))
                if len(pending) > 2 * workers:
                    yield rows(pending.popleft().result())
            while pending:
                yield rows(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()
