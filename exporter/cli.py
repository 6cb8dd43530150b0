"""`digits-export` and `digits-export verify`: flags in, export()/verify() called, a parity table out."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from exporter.export import ParitySettings, export, verify
from exporter.parity import CPU_ATOL, CUDA_ATOL, ParityReport
from infer.contract import ArtifactError
from infer.devices import Device, DeviceError
from trainer.checkpoint import CheckpointError
from trainer.data import DATA_DIR_ENV, DataError, resolve_data_dir

EXIT_HELP = (
    "Exit codes: 0 parity holds; 1 parity failed or an artifact does not match its manifest; "
    "2 bad usage, missing or corrupt checkpoint/artifacts/data, or --device cuda without CUDA."
)
app = typer.Typer(add_completion=False, help="Export Digit to TorchScript, ONNX, torch.export (.pt2) and an "
                  f"AOTInductor package, and prove parity. {EXIT_HELP}")
out_console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def _settings(data_dir: Path | None, parity_samples: int | None, device: Device,
              atol: float | None, cuda_atol: float) -> ParitySettings:
    return ParitySettings(resolve_data_dir(data_dir), parity_samples, device.value,
                          CPU_ATOL if atol is None else atol, cuda_atol)


def _show(report: ParityReport) -> None:
    table = Table(title=f"parity on {report.samples} MNIST test images (reference {report.reference})")
    for column in ("backend", "device", "accuracy", "max |Δp|", "top-1 agree", "atol", "result"):
        table.add_column(column, justify="right" if column not in ("backend", "device") else "left")
    for r in report.rows:
        table.add_row(r.backend, r.device, f"{r.accuracy:.4%}", f"{r.max_abs_diff:.2e}", f"{r.top1_agreement:.4%}",
                      f"{r.atol:.0e}", "[green]pass[/]" if r.passed else "[red]FAIL[/]")
    out_console.print(table)
    for line in report.skipped:
        out_console.print(f"skipped {line}", markup=False)


def _fail(exc: Exception, device: Device) -> None:
    prefix = f"--device {device.value}: " if isinstance(exc, DeviceError) else ""
    err.print(f"digits-export: error: {prefix}{exc}")
    raise typer.Exit(2)


# Options shared by export and verify.
DATA_DIR = typer.Option(None, help="Folder holding MNIST/raw/ for the parity images "
                        f"(default: ${DATA_DIR_ENV} or ./data).")
PARITY_SAMPLES = typer.Option(None, min=1, help="Parity on the first N test images (default: all 10,000).")
DEVICE = typer.Option(Device.cpu, help="cuda adds eager-CUDA and CUDA rows for each format (exit 2 without CUDA); "
                      "auto adds them when CUDA works.")
ATOL = typer.Option(None, min=0.0, help=f"Max |Δ probability| allowed on the CPU (default: {CPU_ATOL:g}).")
CUDA_ATOL_OPTION = typer.Option(CUDA_ATOL, min=0.0, help="Max |Δ probability| allowed for CUDA rows "
                                "(fp32 with TF32 off; GPU kernels sum in another order).")


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    checkpoint: Path = typer.Option(Path("checkpoints/digit.safetensors"), help="The trainer's checkpoint."),
    out: Path = typer.Option(Path("artifacts"), help="The artifacts folder to write (replaced atomically)."),
    data_dir: Path | None = DATA_DIR,
    parity_samples: int | None = PARITY_SAMPLES,
    device: Device = DEVICE,
    atol: float | None = ATOL,
    cuda_atol: float = CUDA_ATOL_OPTION,
    aoti: bool = typer.Option(True, help="Also build the AOTInductor package (needs a C++ compiler, $CXX or g++; "
                              "without one, or if the build fails, one line says so and the rest is written)."),
) -> None:
    """Export the checkpoint into OUT (TorchScript, ONNX, .pt2, AOTInductor, manifest.json, parity.json) and
    check parity."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(data_dir, parity_samples, device, atol, cuda_atol)
    try:
        manifest, report = export(checkpoint, out, settings, aoti=aoti)
    except (CheckpointError, DataError, DeviceError) as exc:
        _fail(exc, device)
    _show(report)
    sizes = ", ".join(f"{v['file']} {v['bytes'] / 1e6:.2f} MB" for v in manifest["artifacts"].values())
    out_console.print(f"wrote {out}/ ({sizes}); parity {'passed' if report.passed else 'FAILED'}", markup=False)
    raise typer.Exit(0 if report.passed else 1)


@app.command("verify")
def verify_command(
    folder: Path = typer.Argument(Path("artifacts"), help="An artifacts folder written by digits-export."),
    checkpoint: Path | None = typer.Option(None, help="Eager reference (default: the manifest's source, if present)."),
    data_dir: Path | None = DATA_DIR,
    parity_samples: int | None = PARITY_SAMPLES,
    device: Device = DEVICE,
    atol: float | None = ATOL,
    cuda_atol: float = CUDA_ATOL_OPTION,
) -> None:
    """Re-check FOLDER: files present, sha256 as in the manifest, ONNX checker, parity on real test images."""
    settings = _settings(data_dir, parity_samples, device, atol, cuda_atol)
    try:
        result = verify(folder, settings, checkpoint)
    except (CheckpointError, DataError, DeviceError, ArtifactError) as exc:
        _fail(exc, device)
    if result.note:
        err.print(f"digits-export verify: note: {result.note}")
    for problem in result.problems:
        err.print(f"digits-export verify: {problem}")
    if result.report is not None:
        _show(result.report)
    out_console.print(f"{folder}: {'verified' if result.passed else 'FAILED'}", markup=False)
    raise typer.Exit(0 if result.passed else 1)
