"""The options of a digits-infer run, their defaults and ranges, and the exit codes: one source for the CLI and
for library callers. Light on purpose: the CLI imports it before anything heavy (OpenCV, numpy) is loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_NO_IMAGES = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM: what shells report for them
EXIT_HELP = (
    f"Exit codes: {EXIT_OK} every image classified; {EXIT_SOME_FAILED} some images failed (their rows, with the "
    f"reason, are still written); {EXIT_USAGE} bad usage, or an unusable model, device or output (also an "
    f"output that fails during the run, another run using it, or --resume of another job); {EXIT_NO_IMAGES} no "
    f"image files found under the paths (a header-only CSV is written); {EXIT_INTERRUPTED} interrupted (SIGINT, "
    f"Ctrl-C) and {EXIT_TERMINATED} terminated (SIGTERM): rows so far kept in OUTPUT.partial, re-run with --resume."
)

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: a 10000×10000 scan is fine, a decompression bomb is refused
MAX_PIXELS_LIMIT = 1 << 40  # the largest --max-pixels accepted (OpenCV's own cap is set to it)
MAX_BATCH_SIZE = 1 << 16
WORKERS_PER_CORE = 4  # --workers at most this many per core: more threads only contend
OPENCV_PIXEL_LIMIT_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
TORCH_FORMATS = ("pt2", "aoti", "torchscript")  # the artifacts --backend torch can load
DEFAULT_TORCH_FORMATS = ("pt2", "torchscript")  # without --torch-format: the first the manifest lists
ENGINES = ("local", "ray")  # local: threads in this process; ray: Ray Data actors (infer.ray_engine)
RESULT = {"result": True}  # field metadata: the option changes the CSV's rows, so --resume must match it


class OptionError(Exception):
    """Options out of range or that do not go together: one line naming them."""


def cores() -> int:
    return os.cpu_count() or 1


def default_workers() -> int:
    """A preprocessing thread per core; infer.pipeline.Balance lets one fewer run while the model is busy."""
    return cores()


@dataclass(frozen=True)
class InferOptions:
    """Every option of a run, with its default: the CLI takes its defaults from here. Fields marked RESULT
    change the rows, so they are part of the job identity that --resume checks (infer.job)."""

    backend: str = "onnx"
    torch_format: str | None = None  # --backend torch only; None: the first of DEFAULT_TORCH_FORMATS listed
    device: str = "auto"
    model_dir: Path = Path("artifacts")
    # None: stdout. A str is kept as given, so that an empty -o is refused (Path("") would mean ".").
    output: Path | str | None = Path("predictions.csv")
    batch_size: int = 256
    workers: int = field(default_factory=default_workers)
    recursive: bool = field(default=True, metadata=RESULT)
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=RESULT)
    resume: bool = False
    # confidence from the image and two zoomed views (infer.tta): errors rank lower, 3× the model's work
    tta: bool = field(default=False, metadata=RESULT)
    report: Path | None = None  # also write the review page (infer.review) here once the CSV is complete
    engine: str = "local"
    ray_address: str | None = None  # --engine ray: None means RAY_ADDRESS, else an embedded Ray on this machine
    excel_safe: bool = field(default=False, metadata=RESULT)  # cells starting = + - @ get a ' first (OWASP)

    def check(self) -> None:
        """OptionError naming the flag when a value is out of its range."""
        ranges = (("--batch-size", self.batch_size, MAX_BATCH_SIZE, ""),
                  ("--workers", self.workers, WORKERS_PER_CORE * cores(),
                   f" ({WORKERS_PER_CORE} per core, {cores()} cores here)"),
                  ("--max-pixels", self.max_pixels, MAX_PIXELS_LIMIT, " (2^40)"))
        for flag, value, most, why in ranges:
            if type(value) is not int or not 1 <= value <= most:
                raise OptionError(f"{flag} {value}: out of range, expected 1 to {most}{why}")

    def result_options(self) -> dict[str, Any]:
        """The options that change the rows (besides the model, backend and device), by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("result")}


REPORT_EXIT_HELP = (
    f"Exit codes: {EXIT_OK} report written; {EXIT_USAGE} bad input (a CSV that digits-infer did not write, a missing "
    "or malformed labels file, an output that cannot be written)."
)


@dataclass(frozen=True)
class ReportOptions:
    """Every option of digits-report (and of digits-infer --report), with its default."""

    output: Path = Path("report.html")
    labels: Path | None = None  # file,label CSV; rows matched by path, else by file name
    review: int = 200  # the lowest-confidence images shown as cards
    cell_images: int = 24  # images kept per confusion-matrix cell (lowest confidence first)
    failed_listed: int = 1000  # failed files listed by name; the rest are counted
    root: Path | None = None  # where the CSV's relative paths start; None: the current folder, then the CSV's
    max_pixels: int = DEFAULT_MAX_PIXELS
