"""`--engine ray`: the same job on Ray Data, on an embedded Ray or a cluster. Only the producer of row batches
differs from the local engine: infer.run walks the paths, keeps --resume's rows, and writes the CSV through the
same sink, so both engines give the same file (see `RayEngine.batches`).

- The driver reads the model once, checked against the manifest (sha256, parity), and puts its bytes in Ray's
  object store; each actor checks the sha256 again before opening it: no filesystem is shared for the model.
- A pool of actors (ray.data.ActorPoolStrategy), one CPU each, reads, decodes and preprocesses a batch with
  infer.pipeline.Preparer (the local engine's functions) and classifies it with the backend's own opener. With
  GPUs, CPU actors preprocess and one actor per GPU classifies.
- Paths go to Ray in windows of WINDOW: one Ray Data execution each, so the driver holds at most two windows
  of paths however long the listing. Rows come back in any order and are put back in walk order here.
- A bad file is a row with its error and never fails a block, so any failed block is a real failure and stops
  the job (max_errored_blocks = 0) rather than being dropped. A killed actor is restarted by Ray and its
  tasks retried; each index is written once.

Ray is imported only here, and only for --engine ray; torch only when --backend torch asks for it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from infer.backends import MODEL_FORMATS, Opened, choose_format
from infer.contract import CLASSES, ArtifactError, Manifest
from infer.devices import Device, DeviceError
from infer.discover import display_path
from infer.extras import MissingExtra
from infer.options import InferOptions
from infer.pipeline import Prepared, Preparer, Row, rows_of
from infer.uris import Reader

WINDOW = 1 << 16  # paths per Ray Data execution (about 6 MB of paths on the driver)
CONNECT_SECONDS = 10  # a cluster address that accepts no connection in this time is refused
POLL_SECONDS = 0.05  # how often the driver, waiting for rows, looks at a stop request
PAUSE_ENV = "DIGITS_INFER_RAY_PAUSE"  # testing aid: MARKER:INDEX, see pause_here


class EngineError(Exception):
    """Ray could not be reached or a block failed for a reason that is not a bad file: one line."""


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ModuleNotFoundError:
        raise MissingExtra("--engine ray needs Ray: pip install 'digits[ray]'") from None
    return ray


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(address: str | None) -> bool:
    """Join the cluster at `address` (else RAY_ADDRESS), or start Ray embedded on this machine. True when this
    call started Ray, so the run shuts it down. An already initialised Ray (a library caller's) is used as is."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a batch job
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        quiet["include_dashboard"] = False
    try:
        if address is not None and "://" not in address and address.count(":") == 1:
            host, _, port = address.rpartition(":")
            socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()  # Ray would retry for ever
        # "local": a new Ray here even when `ray start` left the address of a cluster on this machine
        ray.init(address=address or "local", **quiet)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... for unusable addresses
        where = f"the Ray cluster at {address}" if address else "an embedded Ray on this machine"
        raise EngineError(f"cannot reach {where} ({first_line(exc)})") from None
    return True


def quiet_ray_data() -> None:
    """Ray Data's console messages (start, finish, 'progress bars disabled') stay in its log file: stderr has
    digits-infer's progress bar and one summary or error line."""
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Shipped:
    """The model as the actors receive it: its bytes in the object store, and what they must hash to."""

    fmt: str
    file: str  # the manifest's file name, kept for the loaders that look at it
    sha256: str
    ref: list  # [ObjectRef]: inside a list so that Ray hands the actor the reference, not a copy per argument
    device: str


def ship_model(ray: Any, manifest: Manifest, options: InferOptions) -> Shipped:
    fmt = choose_format(options.backend, options.torch_format, manifest)
    path = manifest.trusted_file(fmt.name)
    data = path.read_bytes()
    entry = manifest.entry(fmt.name)
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ArtifactError(f"{path}: changed while being read; refusing a changed model")
    return Shipped(fmt.name, entry.file, entry.sha256, [ray.put(data)], options.device)


def open_shipped(shipped: Shipped, data: bytes, threads: int) -> tuple[Opened, tempfile.TemporaryDirectory]:
    """Check the bytes an actor received against the manifest's sha256, then open them with the backend's own
    opener (it takes a file: a private folder holds it for the actor's life)."""
    if hashlib.sha256(data).hexdigest() != shipped.sha256:
        raise ArtifactError(f"{shipped.file}: the bytes this Ray actor received differ from the manifest's sha256; "
                            "refusing a changed model")
    folder = tempfile.TemporaryDirectory(prefix="digits-model-")
    path = Path(folder.name) / shipped.file
    path.write_bytes(data)
    return MODEL_FORMATS[shipped.fmt].open(path, shipped.device, threads), folder


def pause_here(spec: str | None, indices: np.ndarray) -> None:
    """Testing aid: with DIGITS_INFER_RAY_PAUSE=MARKER:INDEX, the first actor to get the batch holding INDEX
    writes its pid into the file MARKER and waits there to be killed; MARKER then exists, so the retry (on the
    restarted actor) goes on. Tests kill an actor, or the driver, at a point they choose this way."""
    if not spec:
        return
    marker, _, index = spec.rpartition(":")
    if int(index) not in indices:
        return
    scratch = f"{marker}.{os.getpid()}"
    with open(scratch, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        os.link(scratch, marker)  # atomic, and only once: the marker appears with the pid in it
    except FileExistsError:
        return
    finally:
        os.unlink(scratch)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.1)


def prepared_of(batch: dict[str, np.ndarray]) -> Prepared:
    """The Prepared of a batch that CPU actors preprocessed (Prepare) for a GPU actor."""
    errors = {i: str(e) for i, e in enumerate(batch["error"]) if e}
    ok = [i for i in range(len(batch["error"])) if i not in errors]
    return Prepared([""] * len(batch["error"]), np.ascontiguousarray(batch["images"][ok]), ok, errors)


class Prepare:
    """CPU actor of a GPU run: reads and preprocesses a batch; failed files keep a blank frame and their error."""

    def __init__(self, max_pixels: int, roots: list[str]) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.preparer = Preparer(max_pixels, Reader(roots))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared = self.preparer([os.fsdecode(bytes(p)) for p in batch["path"]])
        images = np.zeros((len(prepared.paths), 1, 28, 28), np.float32)
        images[prepared.ok] = prepared.images
        error = np.array([prepared.errors.get(i, "") for i in range(len(prepared.paths))], dtype=object)
        return {"index": batch["index"], "images": images, "error": error}


class Classify:
    """One model per actor: checked and opened once, then batch after batch (preprocessing them itself unless
    Prepare actors did)."""

    def __init__(self, shipped: Shipped, max_pixels: int, roots: list[str], prepare: bool, threads: int,
                 pause: str | None, tta: bool = False) -> None:
        import cv2
        import ray

        from infer.tta import with_tta

        cv2.setNumThreads(1)
        self.opened, self._folder = open_shipped(shipped, ray.get(shipped.ref[0]), threads)
        self.classify = with_tta(self.opened.classify) if tta else self.opened.classify
        self.preparer = Preparer(max_pixels, Reader(roots)) if prepare else None
        self.pause = pause

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pause_here(self.pause, batch["index"])
        if self.preparer is not None:
            prepared = self.preparer([os.fsdecode(bytes(p)) for p in batch["path"]])
        else:
            prepared = prepared_of(batch)
        rows = rows_of(prepared, self.classify, str)
        probabilities = np.zeros((len(rows), CLASSES), np.float32)
        for i, row in enumerate(rows):
            if row.probabilities is not None:
                probabilities[i] = row.probabilities
        return {"index": batch["index"], "probabilities": probabilities,
                "error": np.array([row.error for row in rows], dtype=object)}


@dataclass
class RayEngine:
    """A connected Ray and a shipped model; `batches` is the producer infer.run consumes. Picklable: through
    Ray Client (ray://) each window's execution runs in a task on the cluster (see `window_blocks`)."""

    shipped: Shipped
    options: InferOptions
    roots: list[str]
    cpus: int
    gpus: int
    started: bool  # this process started Ray: shut it down when the run ends
    actors: int | None = None  # CPU actors (default: one per CPU of the cluster); the benchmark sets 1
    split: bool = False  # CPU actors preprocess, GPU actors classify (with GPUs; tests force it on CPUs)
    pause: str | None = field(default_factory=lambda: os.environ.get(PAUSE_ENV))

    @property
    def device(self) -> str:
        if self.split:
            return f"ray: {self.gpus or 1} classifying and {self.cpu_actors} preprocessing actors"
        return f"ray: {self.cpu_actors} actors"

    @property
    def cpu_actors(self) -> int:
        return self.actors or max(1, self.cpus)

    def dataset(self, window: list[str]) -> Any:
        import pyarrow as pa
        import ray.data as ray_data
        from ray.data import ActorPoolStrategy, DataContext

        context = DataContext.get_current()
        context.max_errored_blocks = 0  # a bad file never fails a block: a failed block is a real failure
        context.enable_progress_bars = False  # digits-infer shows its own
        context.print_on_execution_start = False
        context.execution_options.preserve_order = False  # rows are put back in order by the driver
        size = self.options.batch_size
        blocks = [pa.table({"index": pa.array(range(start, start + len(window[start:start + size])), pa.int64()),
                            "path": pa.array([os.fsencode(p) for p in window[start:start + size]], pa.binary())})
                  for start in range(0, len(window), size)]
        data = ray_data.from_arrow(blocks)
        def pool() -> ActorPoolStrategy:
            return ActorPoolStrategy(min_size=1, max_size=self.cpu_actors, initial_size=self.cpu_actors)

        common = {"batch_size": size, "batch_format": "numpy", "zero_copy_batch": True}
        model = {"shipped": self.shipped, "max_pixels": self.options.max_pixels, "roots": self.roots,
                 "pause": self.pause, "tta": self.options.tta}
        if not self.split:
            return data.map_batches(Classify, compute=pool(), num_cpus=1, **common,
                                    fn_constructor_kwargs={**model, "prepare": True, "threads": 1})
        gpus = self.gpus
        data = data.map_batches(Prepare, compute=pool(), num_cpus=1, **common,
                                fn_constructor_kwargs={"max_pixels": self.options.max_pixels, "roots": self.roots})
        classifiers = ActorPoolStrategy(min_size=1, max_size=max(1, gpus), initial_size=max(1, gpus))
        return data.map_batches(Classify, compute=classifiers, num_cpus=0 if gpus else 1, num_gpus=1 if gpus else 0,
                                **common, fn_constructor_kwargs={**model, "prepare": False, "threads": 1})

    def close(self) -> None:
        """Shut down the Ray this run started, when the run ends before `batches` (which does it itself)."""
        if self.started:
            import_ray().shutdown()

    def batches(self, paths: Iterable[str], stop: Any = None) -> Iterator[list[Row]]:
        """Rows for `paths`, one list per block that arrives, in the order of `paths`. A `stop` with a true
        `requested` ends the iterator after the rows already received; closing it leaves the rest."""
        feed = Feed(self, paths)
        feed.start()
        try:
            window: list[str] = []
            waiting: dict[int, tuple[np.ndarray, str]] = {}
            done = 0
            while True:
                stopping = stop is not None and stop.requested
                if stopping:
                    feed.close()  # no more blocks are taken from Ray; those already received are written
                try:
                    kind, value = feed.messages.get(block=not stopping, timeout=POLL_SECONDS)
                except queue.Empty:
                    if stopping:
                        return
                    continue
                if kind == "window":
                    if done != len(window):
                        raise EngineError(f"ray returned {done} of {len(window)} rows")
                    window, waiting, done = value, {}, 0
                elif kind == "block":
                    for index, probabilities, error in zip(value["index"], value["probabilities"], value["error"],
                                                           strict=True):
                        if index >= done:  # a retried task's block again: each index is written once
                            waiting[int(index)] = (probabilities, str(error))
                    rows = []
                    while done in waiting:
                        probabilities, error = waiting.pop(done)
                        rows.append(Row(display_path(window[done]), None if error else probabilities, error))
                        done += 1
                    if rows:
                        yield rows
                elif kind == "error":
                    raise value
                else:
                    if done != len(window):
                        raise EngineError(f"ray returned {done} of {len(window)} rows")
                    return
        finally:
            feed.close()
            if self.started:
                import_ray().shutdown()


class Feed(threading.Thread):
    """Runs the windows through Ray Data and passes their blocks to the driver's loop, so that the loop can
    wait with a timeout (and see a stop) while Ray works. Holds at most one window besides the driver's."""

    def __init__(self, engine: RayEngine, paths: Iterable[str]) -> None:
        super().__init__(name="ray-feed", daemon=True)
        self.engine, self.paths = engine, iter(paths)
        self.messages: queue.Queue = queue.Queue(maxsize=8)
        self.closing = threading.Event()

    def run(self) -> None:
        try:
            while not self.closing.is_set() and (window := list(islice(self.paths, WINDOW))):
                self.put(("window", window))
                for block in self.blocks(window):
                    if not self.put(("block", block)):
                        return
            self.put(("end", None))
        except BaseException as exc:  # Ray's errors arrive here: handed to the driver's loop as one line
            self.put(("error", engine_error(exc)))

    def blocks(self, window: list[str]) -> Iterator[dict[str, np.ndarray]]:
        ray = import_ray()
        if not ray.util.client.ray.is_connected():
            yield from window_blocks(self.engine, window)
            return
        # Ray Client: Ray Data's executor needs a worker of the cluster, so it runs in a task there and the
        # blocks stream back as the task yields them.
        task = ray.remote(num_cpus=0, num_returns="streaming")(window_blocks)
        for ref in task.remote(self.engine, window):
            yield ray.get(ref)

    def put(self, message: tuple[str, Any]) -> bool:
        while not self.closing.is_set():
            try:
                self.messages.put(message, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        self.closing.set()


def window_blocks(engine: RayEngine, window: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """One window through Ray Data: its output blocks as they finish, in any order."""
    yield from engine.dataset(window).iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)


def engine_error(exc: BaseException) -> BaseException:
    """The error a failed Ray run is reported as: the model's or device's own error when an actor raised one
    (exit 2 names it), else EngineError with Ray's first line."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OWN_ERRORS):
        cause = getattr(cause, "cause", None) or cause.__cause__
    if cause is not None:
        return cause
    for line in reversed(str(exc).splitlines()):  # an actor that died in __init__ passes on only its traceback
        for kind in OWN_ERRORS:
            name = f"{kind.__module__}.{kind.__name__}: "
            if line.startswith(name):
                return kind(line[len(name):])
    return EngineError(f"ray: {first_line(exc)}")


OWN_ERRORS = (ArtifactError, DeviceError, MissingExtra)


def open_ray(manifest: Manifest, options: InferOptions, paths: list[str], actors: int | None = None,
             split: bool | None = None) -> RayEngine:
    """Connect (or start Ray), check the device against the cluster, and ship the model. Raises MissingExtra,
    EngineError, DeviceError or ArtifactError before any output is written."""
    started = connect(options.ray_address)
    ray = import_ray()
    quiet_ray_data()
    try:
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        if options.device == Device.cuda and not gpus:
            raise DeviceError("cuda was requested, but the Ray cluster has no GPU")
        use_gpus = options.device != Device.cpu and gpus > 0
        engine = RayEngine(ship_model(ray, manifest, options), options, list(paths), cpus,
                           gpus if use_gpus else 0, started, actors, use_gpus if split is None else split)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return engine

