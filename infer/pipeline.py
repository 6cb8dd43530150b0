"""The batch pipeline: a thread pool reads and preprocesses whole batches (OpenCV releases the GIL) while the
main thread runs the model on the previous ones. Everything streams: a bounded number of batches is in flight.
Images that prove heavy (scans, photos) are handed from those threads to worker processes (infer.workers), which
the GIL does not hold back; see Balance.

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
from infer.workers import Workers, picklable

PROBE = 16  # images timed together: the median of three such groups shows whether they are heavy
HEAVY_SECONDS = 0.0005  # per image: MNIST-form PNGs take about 0.07 ms, scans and photos 1.5 to 5 ms
# Starting the worker processes costs about a second of a core, which the ~1 ms they save per heavy image pays
# back only over several hundred images: fewer images waiting than this stay with the threads.
HANDOVER_IMAGES = 512


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

    def one(self, path: str) -> tuple[np.ndarray | None, str]:
        """One file's 28×28 frame, or None and the one-line reason it failed."""
        try:
            return preprocess_bytes(self.read(path, max(64 << 20, 8 * self.max_pixels)), self.max_pixels), ""
        except PreprocessError as exc:
            return None, str(exc)
        except OSError as exc:
            return None, os_reason(exc)
        except (cv2.error, ValueError, MemoryError) as exc:  # a decoder's own failure on a hostile file
            return None, f"cannot decode ({type(exc).__name__})"

    def fill(self, batch: Batch, stop: StopFlag | None = None, after_image: Callable[[], None] | None = None,
             first: int = 0, end: int | None = None) -> None:
        """Prepare the batch's images from `first` on (to `end`), in order, looking at `stop` before each one."""
        paths = batch.paths
        for index in range(first, len(paths) if end is None else min(end, len(paths))):
            if stop is not None and stop.requested:
                return
            frame, error = self.one(paths[index])
            batch.add(index, frame, error)
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
    """Where and how many batches are preprocessed at once. The model runs on the main thread between batches.

    Light images (MNIST form: a few short OpenCV calls each) are prepared by threads: `workers - 1` of them while
    the model keeps a core of its own (two threads of short OpenCV calls contend for the GIL). Heavy images
    (scans, photos: the full path) are handed to worker processes (infer.workers), all `workers` of them, once
    three groups of PROBE images show it and enough images wait to pay for starting them (HANDOVER_IMAGES):
    threads would queue on the GIL there. Threads go on preparing while the workers start. Without worker
    processes (a preparer that cannot be sent to one, or a pool that broke), all `workers` threads run while
    preprocessing takes more than twice the model's time per batch, as the model mostly waits then."""

    def __init__(self, workers: int, processes: Workers | None = None) -> None:
        self.low, self.high = max(1, workers - 1), workers
        self.allowed = self.low
        self.active = 0
        self.changed = threading.Condition()
        self.prepare_seconds = self.classify_seconds = 0.0  # per batch, exponentially weighted
        self.processes = processes
        self.heavy = False  # images proved heavy: batches go to the worker processes
        self.recent: deque[float] = deque(maxlen=3)  # seconds per image of the last groups prepared in threads
        self.waiting = 0  # images given to `run` and not yet prepared (those of batches being prepared counted whole)

    def run(self, preparer: Preparer, batch: Batch, stop: StopFlag,
            after_image: Callable[[], None] | None = None) -> None:
        with self.changed:
            while not self.changed.wait_for(lambda: stop.requested or self.active < self.allowed, POLL_SECONDS):
                pass
            if stop.requested:
                self.waiting -= len(batch.paths)
                return  # not started: the whole batch is left for --resume
            self.active += 1
        start = time.perf_counter()
        in_processes = False
        try:
            in_processes = self._prepare(preparer, batch, stop, after_image)
        finally:
            elapsed = time.perf_counter() - start
            with self.changed:
                self.active -= 1
                self.waiting -= len(batch.paths)
                if not in_processes:
                    self.prepare_seconds = _weighted(self.prepare_seconds, elapsed)
                self.changed.notify_all()

    def _prepare(self, preparer: Preparer, batch: Batch, stop: StopFlag,
                 after_image: Callable[[], None] | None) -> bool:
        """Prepare the batch in threads or in the worker processes; True when the workers took part."""
        processes = self.processes if self.processes is not None and not self.processes.broken else None
        if processes is not None and self.heavy and processes.ready():
            processes.fill(preparer, batch, stop, after_image)
            return True
        if processes is None or self.heavy:  # no workers, or they are still starting: threads go on
            preparer.fill(batch, stop, after_image)
            return False
        self._timed_fill(preparer, batch, stop, after_image, processes)
        return False

    def _timed_fill(self, preparer: Preparer, batch: Batch, stop: StopFlag,
                    after_image: Callable[[], None] | None, processes: Workers) -> None:
        """Prepare the batch in this thread, PROBE images at a time, timing each group; once the run's last three
        groups prove heavy, start the worker processes (later batches go to them once they answer). The median
        decides, so that the first images of a run (cold caches, lazy initialisation) and a single large file do
        not; timing groups, not images, keeps the probe's own cost off light images."""
        recent = self.recent
        size = len(batch.paths)
        for first in range(0, size, PROBE):
            if stop.requested:
                return False
            start = time.perf_counter()
            preparer.fill(batch, stop, after_image, first=first, end=first + PROBE)
            recent.append((time.perf_counter() - start) / min(PROBE, size - first))
            done = min(first + PROBE, size)
            if len(recent) == recent.maxlen and sorted(recent)[1] > HEAVY_SECONDS \
                    and self.waiting - done >= HANDOVER_IMAGES:
                processes.start()
                with self.changed:
                    self.heavy = True
                    self.allowed = self.high
                    self.changed.notify_all()
                preparer.fill(batch, stop, after_image, first=done)
                return

    def given(self, images: int) -> None:
        with self.changed:
            self.waiting += images

    def classified(self, seconds: float) -> None:
        with self.changed:
            self.classify_seconds = _weighted(self.classify_seconds, seconds)
            bound = self.heavy or self.prepare_seconds > 2 * self.classify_seconds
            self.allowed = self.high if bound and (self.heavy or self.processes is None or self.processes.broken) \
                else self.low
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
                     after_image: Callable[[], None] | None = None,
                     processes: bool | Workers = True) -> Iterator[list[Row]]:
    """Yield one list of rows per batch, in the order of `paths`, with at most 2×workers batches in flight;
    `workers` threads (or, for heavy images, `workers` processes: `processes`) preprocess, as many at once as
    Balance allows (`processes` may also be the Workers to use). After `stop` is requested no batch is started,
    and what the batches in flight finish is yielded (see `take`); then the iterator ends."""
    cv2.setNumThreads(1)  # parallelism comes from the pool; OpenCV's own threads only contend on tiny images
    stop = StopFlag(parent=stop)  # also set below when the consumer leaves early
    if isinstance(processes, Workers):
        spawned: Workers | None = processes
    else:
        spawned = Workers(workers) if processes and picklable(preparer) else None
    balance = Balance(workers, spawned)

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
            balance.given(len(chunk))
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
        # Threads still decoding an image finish it and return; nobody waits for them, nor for the workers.
        pool.shutdown(wait=False, cancel_futures=True)
        if spawned is not None:
            spawned.close(stopped=stop.requested)
