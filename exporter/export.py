"""Export and verify: the library functions behind `digits-export`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from exporter.formats import FORMATS
from exporter.manifest import (
    MANIFEST_NAME, PARITY_NAME, build_manifest, graph_metadata, integrity_problems, read_manifest,
)
from exporter.parity import CPU_ATOL, CUDA_ATOL, ParityReport, check_parity, disable_tf32
from exporter.wrapper import DeployedDigit
from trainer.checkpoint import CheckpointError, load_checkpoint, metadata_value
from trainer.data import file_sha256, load_split, to_float


class ExportDeviceError(Exception):
    """--device cuda on a machine where CUDA cannot run."""


@dataclass(frozen=True)
class ParitySettings:
    data_dir: Path
    samples: int | None = None  # None: the full 10k test set
    device: str = "cpu"  # "cuda" adds CUDA rows
    cpu_atol: float = CPU_ATOL
    cuda_atol: float = CUDA_ATOL

    def devices(self) -> list[str]:
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ExportDeviceError("--device cuda was asked for, but torch sees no CUDA device on this machine")
            disable_tf32()
            return ["cpu", "cuda"]
        return ["cpu"]


def parity_images(settings: ParitySettings) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST test images as the deployed contract wants them: float32 pixels in [0,1]."""
    split = load_split(settings.data_dir, train=False).subset(settings.samples)
    return to_float(split.images).numpy(), split.labels.numpy()


def _read_metrics(checkpoint: Path) -> dict[str, object]:
    path = checkpoint.with_name("metrics.json")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: metrics[k] for k in ("test_accuracy", "test_loss", "chosen_epoch", "test_images") if k in metrics}


def _replace_dir(staging: Path, target: Path) -> None:
    """Swap the finished staging folder into place; the old folder is removed only after the swap."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(checkpoint: Path, out: Path, settings: ParitySettings) -> tuple[dict[str, object], ParityReport]:
    """Write every format, check parity, write parity.json and the manifest, then move the folder into place.

    The folder is built beside `out` and renamed, so an interrupted export leaves the previous one intact.
    A parity failure still writes the folder, with the manifest marking parity as failed.
    """
    devices = settings.devices()
    model, ckpt_meta = load_checkpoint(checkpoint)
    checkpoint_sha256 = file_sha256(checkpoint)
    metrics = _read_metrics(checkpoint)
    test_accuracy = metrics.get("test_accuracy", metadata_value(ckpt_meta, "test_accuracy"))
    deployed = DeployedDigit(model)
    metadata = graph_metadata(checkpoint_sha256, test_accuracy)
    images, labels = parity_images(settings)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the artifacts folder is meant to be shipped
    try:
        for fmt in FORMATS:
            fmt.export(deployed, staging / fmt.file, metadata)
        report = check_parity(staging, images, labels, devices, eager=deployed,
                              cpu_atol=settings.cpu_atol, cuda_atol=settings.cuda_atol)
        (staging / PARITY_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        manifest = build_manifest(staging, checkpoint, checkpoint_sha256, metrics, report)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest, report


@dataclass
class Verification:
    problems: list[str]
    report: ParityReport | None

    @property
    def passed(self) -> bool:
        return not self.problems and self.report is not None and self.report.passed


def verify(folder: Path, settings: ParitySettings, checkpoint: Path | None = None) -> Verification:
    """Re-check an artifacts folder: files and hashes, the ONNX checker, then parity on real test images.

    The eager reference is the source checkpoint (the manifest's path unless given) when it is present and its
    sha256 matches; otherwise TorchScript on the CPU is the reference and the report says so.
    """
    devices = settings.devices()
    manifest = read_manifest(folder)
    problems = integrity_problems(folder, manifest)
    if problems:
        return Verification(problems, None)
    onnx_path = folder / manifest["artifacts"]["onnx"]["file"]
    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except onnx.checker.ValidationError as exc:
        return Verification([f"{onnx_path}: ONNX checker failed ({str(exc).splitlines()[0]})"], None)
    eager = None
    source = checkpoint or Path(manifest["source"]["checkpoint"])
    if source.is_file() and file_sha256(source) == manifest["source"]["sha256"]:
        eager = DeployedDigit(load_checkpoint(source)[0])
    elif checkpoint is not None:
        raise CheckpointError(f"{checkpoint}: not the checkpoint this folder was exported from (sha256 differs)")
    images, labels = parity_images(settings)
    report = check_parity(folder, images, labels, devices, eager=eager,
                          cpu_atol=settings.cpu_atol, cuda_atol=settings.cuda_atol)
    return Verification([], report)

