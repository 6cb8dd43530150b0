"""Prompt, lossless stops. SIGINT and SIGTERM set a flag that every stage of a run looks at: the walk between
batches, each preprocessing thread between images, the main thread while it waits (never without a timeout).
Finished images are classified and written; the rest are left for --resume. A second signal stops at once.

Any engine (the thread pool here, Ray later) uses the same three pieces: `StopFlag` (polled by workers),
`stop_signals()` (the handlers, main thread only) and `Stopped` (raised where waiting cannot be cut short).
The handler only sets attributes: it takes no lock, so it cannot deadlock with the code it interrupts.

Testing aid: DIGITS_INFER_PAUSE_AFTER_ROWS=N pauses the main thread once N rows are flushed, and
DIGITS_INFER_PAUSE_AFTER_IMAGES=N a preprocessing thread after its run's Nth image; each writes
`paused <pid>` to stderr and waits for SIGINT or SIGTERM (stop) or SIGUSR1 (go on). Tests stop a run at a
point they choose this way, never by racing a timer.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from infer.options import EXIT_INTERRUPTED, EXIT_TERMINATED

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
GRACE_SECONDS = 1.0  # after a stop, how long the main thread waits for an image being preprocessed
POLL_SECONDS = 0.05  # how often a waiting thread looks at the flag
PAUSE_ROWS_ENV = "DIGITS_INFER_PAUSE_AFTER_ROWS"
PAUSE_IMAGES_ENV = "DIGITS_INFER_PAUSE_AFTER_IMAGES"


class Stopped(BaseException):
    """A stop that cannot wait for the current step (before the first image, or a second signal). A
    BaseException, like KeyboardInterrupt, so that no `except Exception` in a library swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopFlag:
    """Set once by a signal (or by a caller: `request`); read by any thread without a lock. A flag made with a
    `parent` is also set when its parent is (a pipeline's own flag, set as well when its consumer leaves)."""

    def __init__(self, parent: StopFlag | None = None) -> None:
        self.parent = parent
        self.signum: int | None = None
        self.at_once = False  # raise Stopped from the handler instead of only setting the flag
        self.go_on = False  # SIGUSR1 during a test pause
        self._deadline: float | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None or (self.parent is not None and self.parent.requested)

    def request(self, signum: int = signal.SIGINT) -> None:
        if self.signum is None:
            self.signum = signum

    def deadline(self) -> float:
        """When waiting for work in progress ends: GRACE_SECONDS after the first call, one time for all."""
        if self._deadline is None:
            self._deadline = time.monotonic() + GRACE_SECONDS
        return self._deadline

    @contextmanager
    def immediately(self) -> Iterator[None]:
        """Within the block a signal raises Stopped where the code is (long calls that do not poll the flag:
        loading the model, opening a FIFO that has no reader yet)."""
        if self.requested:
            raise Stopped(self.signum)
        self.at_once = True
        try:
            yield
        finally:
            self.at_once = False

    def handle(self, signum: int, _frame: object) -> None:
        first = not self.requested
        self.request(signum)
        if self.at_once or not first:
            raise Stopped(signum)


def exit_code(signum: int) -> int:
    return EXIT_CODES.get(signum, EXIT_INTERRUPTED)


@contextmanager
def stop_signals(flag: StopFlag | None = None) -> Iterator[StopFlag]:
    """Route SIGINT and SIGTERM (and SIGUSR1 when a test pause is set) to `flag` for the block, then restore
    the previous handlers. Outside the main thread signals cannot be handled: the flag is only set by
    `request`, by whoever drives the run."""
    flag = flag or StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    wanted = list(STOP_SIGNALS)
    if os.environ.get(PAUSE_ROWS_ENV) or os.environ.get(PAUSE_IMAGES_ENV):
        wanted.append(signal.SIGUSR1)
    previous = {}
    try:
        for signum in wanted:
            handler = flag.handle if signum in STOP_SIGNALS else _go_on(flag)
            previous[signum] = signal.signal(signum, handler)
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _go_on(flag: StopFlag):
    def handle(_signum: int, _frame: object) -> None:
        flag.go_on = True

    return handle


class Pause:
    """The testing aid above: pause once, when `count` reaches the number in the environment variable."""

    def __init__(self, variable: str, flag: StopFlag) -> None:
        value = os.environ.get(variable, "")
        self.at = int(value) if value.isdigit() else None
        self.flag = flag
        self.count = 0
        self.lock = threading.Lock()

    def __bool__(self) -> bool:
        return self.at is not None

    def add(self, count: int = 1) -> None:
        """Count `count` more rows or images; pause here when the total reaches the mark."""
        with self.lock:
            before, self.count = self.count, self.count + count
        if self.at is not None and before < self.at <= self.count:
            sys.stderr.write(f"paused {os.getpid()}\n")
            sys.stderr.flush()
            while not (self.flag.requested or self.flag.go_on):
                time.sleep(POLL_SECONDS)
