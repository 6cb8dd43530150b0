"""Preprocessing in worker processes, for images whose preprocessing is heavy (scans, photos, pages).

Threads are enough for MNIST-form images (a few short OpenCV calls each), but the full preprocessing path
(infer.ink) runs enough Python between its OpenCV calls that threads queue on the GIL: on 2 cores the whole
run got about half of what preprocessing alone does on all cores. So once the images prove heavy
(infer.pipeline decides, from the time they take), batches are read and preprocessed by `workers` processes
while the model stays in the main process, which only waits for them.

- Spawned, never forked: a fork taken while OpenCV's thread pool holds a lock deadlocks the child.
- Work goes out in chunks of a few images, and results are taken back image by image, in order, looking at
  the stop flag before each: after a stop nothing more is taken (the rest is left for --resume) and chunks
  not started are cancelled. A stopped run never waits for a worker.
- No worker outlives the run's process: workers ignore SIGINT and SIGTERM (the main process decides when to
  stop), leave as soon as their parent is gone, and are shut down with the run.
- A worker that dies (a decoder crash) breaks the pool: the images it had are then prepared in the main
  process, as they were before there were workers, and the run goes on with threads.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Callable

import numpy as np

from infer.stop import POLL_SECONDS, StopFlag

if TYPE_CHECKING:  # multiprocessing itself is imported only when workers start: most runs never need them
    from concurrent.futures import ProcessPoolExecutor

    from infer.pipeline import Batch, Preparer

CHUNK = 8  # images per task: enough to make the hand-over cheap, few enough that a stop leaves little work
PARENT_POLL_SECONDS = 0.2  # how often a worker checks that its parent is still there

Result = tuple[np.ndarray | None, str]


def picklable(preparer: Preparer) -> bool:
    """Whether the preparer can be sent to a worker (a test's own read function, a closure, cannot)."""
    try:
        pickle.dumps(preparer)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


class Workers:
    """The worker processes of one run, started by `start` (spawning costs about half a second of a core)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.broken = False
        self.prepared = 0  # images whose results came back from the workers
        self._warm: list[Future] | None = None  # one warm-up task per worker: done once all have started
        self._start_lock = threading.Lock()

    def pool(self) -> ProcessPoolExecutor:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start_worker, initargs=(os.getpid(),))
            return self._pool

    def start(self) -> None:
        """Start the workers without waiting for them (threads go on preparing meanwhile): a warm-up task per
        worker, so that all of them spawn now."""
        from concurrent.futures.process import BrokenProcessPool

        with self._start_lock:
            if self._warm is not None or self.broken:
                return
            try:
                pool = self.pool()
                self._warm = [pool.submit(os.getpid) for _ in range(self.count)]
            except (BrokenProcessPool, RuntimeError):
                self.broken = True

    def ready(self) -> bool:
        """Whether every worker has started; one that could not start breaks the pool (threads carry on)."""
        warm = self._warm
        if warm is None or not all(future.done() for future in warm):
            return False
        if any(future.cancelled() or future.exception() is not None for future in warm):
            self.broken = True
            return False
        return True

    def fill(self, preparer: Preparer, batch: Batch, stop: StopFlag,
             after_image: Callable[[], None] | None = None) -> None:
        """Prepare the batch's images in the workers, taking the results back in order (see the
        module)."""
        if not batch.paths:
            return
        from concurrent.futures.process import BrokenProcessPool

        pool = self.pool()
        starts = range(0, len(batch.paths), CHUNK)
        try:
            futures = [pool.submit(prepare_chunk, preparer, batch.paths[start : start + CHUNK]) for start in starts]
        except (BrokenProcessPool, RuntimeError):  # broken, or shut down by a run that is ending
            self.broken = True
            preparer.fill(batch, stop, after_image)
            return
        finally:
            del pool  # only `close` keeps the pool: once it is closed, its queues can be collected
        try:
            for start, future in zip(starts, futures, strict=True):
                results = self._result(future, stop)
                if results is None:
                    return
                if results is BROKEN:
                    self.broken = True
                    preparer.fill(batch, stop, after_image, first=start)
                    return
                for index, (frame, error) in enumerate(results, start):
                    if stop.requested:
                        return
                    batch.add(index, frame, error)
                    self.prepared += 1
                    if after_image is not None:
                        after_image()
        finally:
            for future in futures:
                future.cancel()

    @staticmethod
    def _result(future: Future, stop: StopFlag) -> list[Result] | object | None:
        """The chunk's results; None once a stop is requested; BROKEN when its worker died."""
        from concurrent.futures.process import BrokenProcessPool

        while not stop.requested:
            try:
                return future.result(timeout=POLL_SECONDS)
            except FutureTimeout:
                continue
            except BrokenProcessPool:
                return BROKEN
        return None

    def close(self, stopped: bool = False) -> None:
        """End the workers with the run. Normally they are idle and leave at once; after a stop they may be in
        the middle of an image nobody will take, so they are killed. Either way the pool is joined, so that its
        queues' semaphores are released here, not reported as leaked when the process leaves with os._exit."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if stopped:
            for process in list((pool._processes or {}).values()):  # no public way to reach them
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        del pool
        gc.collect()  # the queues sit in reference cycles: collect them so that their semaphores are unlinked


BROKEN = object()


def prepare_chunk(preparer: Preparer, paths: list[str]) -> list[Result]:
    """In a worker: each file's 28×28 frame, or None and its one-line error."""
    return [preparer.one(path) for path in paths]


def _start_worker(parent: int) -> None:
    """A worker's start: one OpenCV thread (parallelism comes from the processes), the preprocessing modules
    imported, stop signals left to the parent, and a watch that ends the worker when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import cv2

    import infer.pipeline  # noqa: F401

    cv2.setNumThreads(1)
    threading.Thread(target=_leave_with, args=(parent,), daemon=True, name="parent-watch").start()


def _leave_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)
