"""The batch pipeline: a thread pool reads and preprocesses whole batches (OpenCV releases the GIL) while the
main thread runs the model on the previous ones. Everything streams: a bounded number of batches is in flight.

Stopping (infer.stop): each thread looks at the stop flag between images and leaves the rest of its batch; the
main thread never waits without a timeout, and after a stop it takes, at most GRACE_SECONDS later, whatever each
batch has finished (an image still being decoded is left for --resume). So a run stops within about a second even
in the middle of a batch of large images, and every image finished by then is classified and written.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from infer.backends import Classifier
from infer.options import DEFAULT_MAX_PIXELS
from infer.preprocess import SIZE, PreprocessError, preprocess_bytes, to_float
from infer.stop import POLL_SECONDS, StopFlag


@dataclass(frozen=True)
class Row:
    path: str
    probabilities: np.ndarray | None  # float32 10, or None when this file failed
    error: str = ""


@dataclass
class Prepared:
    paths: list[str]  # the files attempted (a stopped batch holds fewer than it was given)
    images: np.ndarray  # float32 k×1×28×28 for the files that worked
    ok: list[int]  # indices into paths of those files
    errors: dict[int, str]


@dataclass
class Batch:
    """One batch as a thread prepares it, image by image, so that a stopped run can take what is finished."""

    paths: list[str]
    frames: np.ndarray = field(init=False)
    ok: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    attempted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.frames = np.empty((len(self.paths), 1, SIZE, SIZE), np.uint8)

    def add(self, index: int, frame: np.ndarray | None, error: str = "") -> None:
        with self.lock:
            if frame is None:
                self.errors[index] = error
            else:
                self.frames[len(self.ok), 0] = frame
                self.ok.append(index)
            self.attempted = index + 1

    def finished(self) -> Prepared:
        """The images attempted so far (all of them once the thread is done)."""
        with self.lock:
            done, ok, errors = self.attempted, list(self.ok), dict(self.errors)
            images = to_float(self.frames[: len(ok)])
        return Prepared(self.paths[:done], images, ok, errors)


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
        batch = Batch(paths)
        self.fill(batch)
        return batch.finished()

    def fill(self, batch: Batch, stop: StopFlag | None = None, after_image: Callable[[], None] | None = None) -> None:
        """Prepare the batch's images in order, looking at `stop` before each one."""
        max_bytes = max(64 << 20, 8 * self.max_pixels)
        for index, path in enumerate(batch.paths):
            if stop is not None and stop.requested:
                return
            try:
                batch.add(index, preprocess_bytes(self.read(path, max_bytes), self.max_pixels))
            except PreprocessError as exc:
                batch.add(index, None, str(exc))
            except OSError as exc:
                batch.add(index, None, os_reason(exc))
            except (cv2.error, ValueError, MemoryError) as exc:  # a decoder's own failure on a hostile file
                batch.add(index, None, f"cannot decode ({type(exc).__name__})")
            if after_image is not None:
                after_image()


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

    def run(self, preparer: Preparer, batch: Batch, stop: StopFlag,
            after_image: Callable[[], None] | None = None) -> None:
        with self.changed:
            while not self.changed.wait_for(lambda: stop.requested or self.active < self.allowed, POLL_SECONDS):
                pass
            if stop.requested:
                return  # not started: the whole batch is left for --resume
            self.active += 1
        start = time.perf_counter()
        try:
            preparer.fill(batch, stop, after_image)
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


def take(batch: Batch, future: Future, stop: StopFlag) -> Prepared:
    """Wait for a batch, polling the flag: the whole batch normally; after a stop, what it has finished when
    its thread returns or when the stop's grace time is over (one deadline for all batches), if sooner."""
    while True:
        wait = POLL_SECONDS
        if stop.requested:
            wait = min(wait, stop.deadline() - time.monotonic())
            if wait <= 0 and not future.done():
                return batch.finished()
        try:
            future.result(timeout=max(wait, 0.0))  # re-raises a thread's unexpected error
            return batch.finished()
        except FutureTimeout:
            pass


def classify_batches(paths: Iterable[str], classify: Classifier, batch_size: int, workers: int,
                     preparer: Preparer, display: Callable[[str], str] = str, stop: StopFlag | None = None,
                     after_image: Callable[[], None] | None = None) -> Iterator[list[Row]]:
    """Yield one list of rows per batch, in the order of `paths`, with at most 2×workers batches in flight;
    `workers` threads preprocess, as many at once as Balance allows. After `stop` is requested no batch is
    started, and what the batches in flight finish is yielded (see `take`); then the iterator ends."""
    cv2.setNumThreads(1)  # parallelism comes from the pool; OpenCV's own threads only contend on tiny images
    stop = StopFlag(parent=stop)  # also set below when the consumer leaves early
    balance = Balance(workers)

    def rows(prepared: Prepared) -> list[Row]:
        start = time.perf_counter()
        done = rows_of(prepared, classify, display)
        balance.classified(time.perf_counter() - start)
        return done

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess")
    pending: deque[tuple[Batch, Future]] = deque()
    try:
        for chunk in batched(paths, batch_size):
            batch = Batch(chunk)
            pending.append((batch, pool.submit(balance.run, preparer, batch, stop, after_image)))
            if len(pending) > 2 * workers and (done := rows(take(*pending.popleft(), stop))):
                yield done
            if stop.requested:
                break
        while pending:
            if done := rows(take(*pending.popleft(), stop)):
                yield done
    finally:
        if pending:  # closed early (an output error, a second signal): threads leave their batches
            stop.request()
        # Threads still decoding an image finish it and return; nobody waits for them.
        pool.shutdown(wait=False, cancel_futures=True)
