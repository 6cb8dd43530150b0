"""Everything a run leaves in --out: checkpoint, metrics.json, curves.png, confusion.png."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from trainer.checkpoint import save_checkpoint
from trainer.data import dataset_sha256
from trainer.model import ARCHITECTURE, MNIST_MEAN, MNIST_STD
from trainer.train import TrainResult

CHECKPOINT_NAME = "digit.safetensors"
METRICS_NAME = "metrics.json"


def write_json(document: object, path: Path) -> None:
    """Write JSON atomically, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


def checkpoint_metadata(result: TrainResult, data_dir: Path) -> dict[str, object]:
    return {
        "architecture": ARCHITECTURE,
        "normalize_mean": MNIST_MEAN,
        "normalize_std": MNIST_STD,
        "epochs": result.config.epochs,
        "best_epoch": result.chosen_epoch,
        "seed": result.config.seed,
        "torch_version": torch.__version__,
        "data_sha256": dataset_sha256(data_dir),
        "test_accuracy": result.test.accuracy,
    }


def plot_curves(result: TrainResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r.epoch for r in result.history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r.train_loss for r in result.history], marker="o")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="NLL")
    val = [(r.epoch, r.val_accuracy) for r in result.history if r.val_accuracy is not None]
    if val:
        acc_ax.plot(*zip(*val, strict=True), marker="o", label="validation")
    acc_ax.axhline(result.test.accuracy, color="tab:red", linestyle="--", label="test (chosen epoch)")
    acc_ax.set(title="accuracy", xlabel="epoch", ylabel="accuracy")
    acc_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """10×10 counts, rows = true digit, columns = predicted digit."""
    return torch.bincount(labels * 10 + predictions, minlength=100).reshape(10, 10)


def plot_confusion(result: TrainResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = confusion_matrix(result.test_labels, result.test.predictions).numpy()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    image = ax.imshow(matrix, cmap="Blues")
    for (row, col), count in ((rc, matrix[rc]) for rc in zip(*matrix.nonzero(), strict=True)):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > matrix.max() / 2 else "black")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
           title=f"test confusion ({result.test.accuracy:.2%} correct)")
    fig.colorbar(image)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(result: TrainResult, out_dir: Path, data_dir: Path) -> dict[str, Path]:
    """Write the four outputs into out_dir; returns their paths by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "checkpoint": out_dir / CHECKPOINT_NAME,
        "metrics": out_dir / METRICS_NAME,
        "curves": out_dir / "curves.png",
        "confusion": out_dir / "confusion.png",
    }
    save_checkpoint(result.model, paths["checkpoint"], checkpoint_metadata(result, data_dir))
    write_json(result.metrics(), paths["metrics"])
    plot_curves(result, paths["curves"])
    plot_confusion(result, paths["confusion"])
    return paths
