"""`digits-train`: flags in, fit() and write_outputs() called, one-line errors out. No logic lives here."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from infer.devices import Device, DeviceError
from trainer.checkpoint import CheckpointError
from trainer.data import DATA_DIR_ENV, DataError, resolve_data_dir
from trainer.distributed import PeerLost, World, leave_together
from trainer.outputs import write_outputs
from trainer.progress import RichReporter
from trainer.train import TrainConfig, fit

EXIT_HELP = ("Exit codes: 0 trained; 1 another process of a torchrun job failed; 2 bad usage, missing or corrupt "
             "data, or an unusable device; 130 interrupted. Under torchrun it trains data-parallel and --batch-size "
             "is the global batch.")

app = typer.Typer(add_completion=False, help=f"Train the Digit CNN on MNIST. {EXIT_HELP}")
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
DEFAULTS = TrainConfig()


class Schedule(str, Enum):
    onecycle = "onecycle"
    constant = "constant"


@app.command()
def main(
    epochs: int = typer.Option(DEFAULTS.epochs, min=1, help="Passes over the training images."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, min=1, help="Images per optimiser step, over all "
                                    "processes under torchrun."),
    lr: float = typer.Option(DEFAULTS.lr, min=0.0, help="Adam learning rate (the peak with onecycle)."),
    schedule: Schedule = typer.Option(Schedule(DEFAULTS.schedule), help="Learning-rate schedule."),
    weight_decay: float = typer.Option(DEFAULTS.weight_decay, min=0.0, help="Adam weight decay."),
    augment: bool = typer.Option(DEFAULTS.augment, help="Random shifts, rotations and scalings of training images."),
    style_augment: bool = typer.Option(DEFAULTS.style_augment,
                                       help="Random pen widths and low-resolution copies of training images."),
    dropout: bool = typer.Option(DEFAULTS.dropout,
                                 help="Dropout before fc1 and fc2 while training, at pytorch/examples' rates."),
    device: Device = typer.Option(Device(DEFAULTS.device), help="auto picks CUDA when available."),
    seed: int = typer.Option(DEFAULTS.seed, help="Same seed and device give the same numbers on CPU."),
    val_size: int = typer.Option(DEFAULTS.val_size, min=0, help="Training images held out to pick the best epoch; "
                                  "0 trains on all 60k and keeps the last."),
    data_dir: Path | None = typer.Option(None, help="Folder holding MNIST/raw/ "
                                           f"(default: ${DATA_DIR_ENV} or ./data); downloaded there when absent."),
    download: bool = typer.Option(True, help="Download MNIST into --data-dir when it is not there."),
    out: Path = typer.Option(Path("checkpoints"), help="Where the checkpoint, metrics and plots go."),
    train_limit: int | None = typer.Option(None, min=1, help="Use only the first N training images (quick runs)."),
    test_limit: int | None = typer.Option(None, min=1, help="Test on only the first N test images (quick runs)."),
) -> None:
    """Train Digit, keep the best validation epoch, write digit.safetensors, metrics.json and the plots."""
    config = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, device=device.value, seed=seed, val_size=val_size,
        schedule=schedule.value, weight_decay=weight_decay, augment=augment, style_augment=style_augment,
        dropout=dropout, train_limit=train_limit, test_limit=test_limit,
    )
    root = resolve_data_dir(data_dir)
    try:
        result = fit(config, root, RichReporter(err), download=download)
        if not result.world.is_main:
            return  # under torchrun, rank 0 alone writes the outputs and the summary
        paths = write_outputs(result, out, root)
    except (DataError, DeviceError, CheckpointError, ValueError) as exc:
        prefix = f"--device {device.value}: " if isinstance(exc, DeviceError) else ""
        err.print(f"digits-train: error: {prefix}{exc}", soft_wrap=True)
        if isinstance(exc, DeviceError):
            leave_together(World.from_env())  # every rank says it before torchrun ends the job
        raise typer.Exit(2) from None
    except PeerLost as exc:
        err.print(f"digits-train: error: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("digits-train: interrupted", soft_wrap=True)
        raise typer.Exit(130) from None
    summary = (
        f"test accuracy {result.test.accuracy:.4f} (epoch {result.chosen_epoch}, {len(result.test_labels)} images) "
        f"in {result.total_seconds:.0f}s on {result.device}"
        f"{f' × {result.world.size} processes ({result.backend})' if result.backend else ''}; "
        f"wrote {paths['checkpoint']}"
    )
    err.print(summary, soft_wrap=True)
