"""`digits-infer`: parse flags, call classify_paths(), show progress and a summary. No logic lives here."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import List

import typer

from infer.limits import DEFAULT_MAX_PIXELS, OPENCV_PIXEL_LIMIT_ENV, default_workers

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
HELP = f"""Classify digit images (files and folders) into a CSV.

Exit codes: {EXIT_OK} every image classified; {EXIT_SOME_FAILED} some images failed (their rows, with the
reason, are still written); {EXIT_USAGE} bad usage, or an unusable model, device or output;
{EXIT_INTERRUPTED} interrupted (rows so far kept in OUTPUT.partial: re-run with --resume)."""

app = typer.Typer(add_completion=False, rich_markup_mode=None)


class Backend(str, Enum):
    onnx = "onnx"
    torch = "torch"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@app.command(help=HELP)
def main(
    paths: List[str] = typer.Argument(..., help="Image files and/or folders.", show_default=False),
    backend: Backend = typer.Option(Backend.onnx, help="onnx: ONNX Runtime, no torch needed; torch: TorchScript."),
    device: Device = typer.Option(Device.auto, help="auto uses CUDA when it works; cuda without it exits 2."),
    model_dir: Path = typer.Option(Path("artifacts"), help="Folder written by digits-export (manifest.json)."),
    output: str = typer.Option("predictions.csv", "--output", "-o", help="CSV to write; - for stdout."),
    batch_size: int = typer.Option(256, min=1, help="Images per model call."),
    workers: int = typer.Option(default_workers(), min=1, help="Threads decoding and preprocessing; the model gets the other cores."),
    recursive: bool = typer.Option(True, help="Walk folders recursively."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1, help="Refuse images with more pixels (error row)."),
    resume: bool = typer.Option(False, help="Keep the rows of OUTPUT.partial (or OUTPUT) and classify the rest."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
) -> None:
    # OpenCV reads its decoder pixel limit once, at import: set it before anything imports cv2.
    os.environ[OPENCV_PIXEL_LIMIT_ENV] = str(max_pixels)
    from infer.report import run_with_progress

    raise typer.Exit(run_with_progress(
        paths, backend=backend.value, device=device.value, model_dir=model_dir,
        output=None if output == "-" else Path(output), batch_size=batch_size, workers=workers,
        recursive=recursive, max_pixels=max_pixels, resume=resume, quiet=quiet,
    ))


def run() -> None:
    """The console script: run the app, then leave without the interpreter's teardown of numpy, OpenCV and
    ONNX Runtime (about a tenth of a 10,000-image run). Every file is closed and every stream flushed first."""
    try:
        app()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a reader that went away (`digits-infer -o - | head`)
            pass
    os._exit(code)
