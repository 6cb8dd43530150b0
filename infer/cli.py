"""`digits-infer`: flags → InferOptions → infer.console.run_with_progress(). No logic lives here; every default
comes from InferOptions, and flag names are added to the library's errors by infer.console."""

from __future__ import annotations

import contextlib
import os
import sys
from enum import Enum
from pathlib import Path
from typing import List

import typer

from infer.devices import Device
from infer.options import EXIT_HELP, MAX_BATCH_SIZE, WORKERS_PER_CORE, InferOptions

DEFAULTS = InferOptions()
app = typer.Typer(add_completion=False, rich_markup_mode=None)


class Backend(str, Enum):
    onnx = "onnx"
    torch = "torch"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class TorchFormat(str, Enum):
    pt2 = "pt2"
    aoti = "aoti"
    torchscript = "torchscript"


@app.command(help=f"Classify digit images (files and folders) into a CSV.\n\n{EXIT_HELP}")
def main(
    paths: List[str] = typer.Argument(..., help="Image files and/or folders.", show_default=False),
    backend: Backend = typer.Option(DEFAULTS.backend, help="onnx: ONNX Runtime, no torch needed; torch: PyTorch."),
    torch_format: TorchFormat | None = typer.Option(
        DEFAULTS.torch_format, show_default=False, help="With --backend torch: pt2 (torch.export), aoti "
        "(AOTInductor, CPU) or torchscript [default: pt2 when the manifest lists it, else torchscript]."),
    device: Device = typer.Option(DEFAULTS.device, help="auto uses CUDA when it works; cuda without it exits 2."),
    model_dir: Path = typer.Option(DEFAULTS.model_dir, help="Folder written by digits-export (manifest.json)."),
    output: str = typer.Option(str(DEFAULTS.output), "--output", "-o", help="CSV to write (a device or FIFO is "
                               "written through); - for stdout."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, help=f"Images per model call (1 to {MAX_BATCH_SIZE})."),
    workers: int = typer.Option(DEFAULTS.workers, help=f"Threads decoding and preprocessing; for "
                                f"heavy images (scans, photos), as many processes (1 to {WORKERS_PER_CORE} per core)."),
    recursive: bool = typer.Option(DEFAULTS.recursive, help="Walk folders recursively."),
    max_pixels: int = typer.Option(DEFAULTS.max_pixels, help="Refuse images with more pixels (error row); at "
                                   "most 2^40."),
    resume: bool = typer.Option(DEFAULTS.resume, help="Keep the rows of OUTPUT.partial (or OUTPUT) when "
                                "OUTPUT.job.json shows the same job; do the rest."),
    excel_safe: bool = typer.Option(DEFAULTS.excel_safe, help="Cells starting with = + - @ get a leading ' so "
                                    "spreadsheets show them as text (CSV injection)."),
    tta: bool = typer.Option(DEFAULTS.tta, help="Confidence from the image and two zoomed views: ranks errors "
                             "lower (README, Confidence); 3x the model's work."),
    report: Path | None = typer.Option(DEFAULTS.report, help="Also write the review page (as digits-report) "
                                       "here once the CSV is complete."),
    engine: Engine = typer.Option(DEFAULTS.engine, help="local: threads in this process; ray: Ray Data actors on "
                                  "an embedded Ray or a cluster (needs digits[ray]; reads s3:// gs:// abfs:// too)."),
    ray_address: str | None = typer.Option(DEFAULTS.ray_address, show_default=False, help="With --engine ray: the "
                                           "cluster (HOST:PORT or ray://HOST:PORT) [default: $RAY_ADDRESS, else an "
                                           "embedded Ray on this machine]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
) -> None:
    from infer.console import run_with_progress

    options = InferOptions(
        backend=backend.value, torch_format=torch_format.value if torch_format else None, device=device.value,
        model_dir=model_dir, output=None if output == "-" else output, batch_size=batch_size, workers=workers,
        recursive=recursive, max_pixels=max_pixels, resume=resume, excel_safe=excel_safe, tta=tta,
        report=report, engine=engine.value, ray_address=ray_address,
    )
    raise typer.Exit(run_with_progress(paths, options, quiet=quiet))


def run() -> None:
    """The console script: run the app, then leave without the interpreter's teardown of numpy, OpenCV and
    ONNX Runtime (about a tenth of a 10,000-image run). Every file is closed and every stream flushed first.

    numpy is imported before typer parses the flags: imported after (typer builds pydantic adapters for them),
    numpy's typing modules take about 50 ms longer to load, measured on the one-image start-up."""
    import numpy  # noqa: F401

    try:
        app()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, AttributeError):  # a reader that went away; None: started closed
            stream.flush()
    os._exit(code)
