"""The options of a digits-infer run, their defaults and ranges, and the exit codes: one source for the CLI and
for library callers. Light on purpose: the CLI imports it before anything heavy (OpenCV, numpy) is loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_HELP = (
    f"Exit codes: {EXIT_OK} every image classified; {EXIT_SOME_FAILED} some images failed (their rows, with the "
    f"reason, are still written); {EXIT_USAGE} bad usage, or an unusable model, device or output; "
    f"{EXIT_INTERRUPTED} interrupted (rows so far kept in OUTPUT.partial: re-run with --resume)."
)

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: a 10000×10000 scan is fine, a decompression bomb is refused
MAX_PIXELS_LIMIT = 1 << 40  # the largest --max-pixels accepted (OpenCV's own cap is set to it)
OPENCV_PIXEL_LIMIT_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
TORCH_FORMATS = ("pt2", "aoti", "torchscript")  # the artifacts --backend torch can load
DEFAULT_TORCH_FORMATS = ("pt2", "torchscript")  # without --torch-format: the first the manifest lists
ENGINES = ("local", "ray")  # local: threads in this process; ray: Ray Data actors (infer.ray_engine)


class OptionError(Exception):
    """Options that do not go together: one line naming them."""


def cores() -> int:
    return os.cpu_count() or 1


def default_workers() -> int:
    """A preprocessing thread per core; infer.pipeline.Balance lets one fewer run while the model is busy."""
    return cores()


@dataclass(frozen=True)
class InferOptions:
    """Every option of a run, with its default: the CLI takes its defaults from here."""

    backend: str = "onnx"
    torch_format: str | None = None  # --backend torch only; None: the first of DEFAULT_TORCH_FORMATS listed
    device: str = "auto"
    model_dir: Path = Path("artifacts")
    output: Path | None = Path("predictions.csv")  # None: stdout
    batch_size: int = 256
    workers: int = field(default_factory=default_workers)
    recursive: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    resume: bool = False
    tta: bool = False  # confidence from the image and two zoomed views (infer.tta): errors rank lower, 3× model work
    report: Path | None = None  # also write the review page (infer.review) here once the CSV is complete
    engine: str = "local"
    ray_address: str | None = None  # --engine ray: None means RAY_ADDRESS, else an embedded Ray on this machine


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
