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

from exporter.formats import FORMATS, Format, FormatUnavailable, chosen_formats
from exporter.manifest import build_manifest, graph_metadata, integrity_problems
from exporter.parity import CPU_ATOL, CUDA_ATOL, ParityReport, check_parity
from exporter.wrapper import DeployedDigit
from infer.contract import MANIFEST_NAME, PARITY_NAME, file_sha256, read_manifest
from infer.devices import Device, torch_device
from trainer.checkpoint import CheckpointError, load_checkpoint, metadata_value
from trainer.data import load_split, to_float


@dataclass(frozen=True)
class ParitySettings:
    data_dir: Path
    samples: int | None = None  # None: the full 10k test set
    device: str = Device.cpu  # cuda adds CUDA rows
    cpu_atol: float = CPU_ATOL
    cuda_atol: float = CUDA_ATOL

    def devices(self) -> list[str]:
        """The CPU always (the reference runs there), plus CUDA when asked for; DeviceError without it."""
        if self.device == Device.cpu:
            return ["cpu"]
        return ["cpu", "cuda"] if torch_device(self.device) == "cuda" else ["cpu"]


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


def write_formats(deployed: DeployedDigit, staging: Path, metadata: dict[str, str],
                  formats: tuple[Format, ...]) -> tuple[list[Format], list[str]]:
    """Write each format into `staging`: (the formats written, one line for each optional one that was not)."""
    written, not_built = [], []
    for fmt in formats:
        try:
            fmt.export(deployed, staging / fmt.file, metadata)
        except FormatUnavailable as exc:
            if not fmt.optional:
                raise
            not_built.append(f"{fmt.name}: not built: {exc}")
            continue
        written.append(fmt)
    return written, not_built


def export(checkpoint: Path, out: Path, settings: ParitySettings,
           aoti: bool = True) -> tuple[dict[str, object], ParityReport]:
    """Write every format, check parity, write parity.json and the manifest, then move the folder into place.

    The folder is built beside `out` and renamed, so an interrupted export leaves the previous one intact.
    A parity failure still writes the folder, with the manifest marking parity as failed. The AOTInductor
    package is built unless `aoti` is off; when it cannot be built, report.skipped says why in one line and
    the manifest lists only the formats written.
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
        written, not_built = write_formats(deployed, staging, metadata, chosen_formats(aoti))
        report = check_parity(staging, images, labels, devices, eager=deployed,
                              cpu_atol=settings.cpu_atol, cuda_atol=settings.cuda_atol, formats=written)
        report.skipped[:0] = not_built
        (staging / PARITY_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        manifest = build_manifest(staging, out, checkpoint, checkpoint_sha256, metrics, report, written)
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
    note: str = ""  # why the reference is not the source checkpoint, when it is not

    @property
    def passed(self) -> bool:
        return not self.problems and self.report is not None and self.report.passed


def reference_model(manifest, checkpoint: Path | None) -> tuple[DeployedDigit | None, str]:
    """The eager reference: the given checkpoint (which must be the source), else the manifest's source
    checkpoint resolved next to the manifest; None with the reason when it is not there."""
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise CheckpointError(f"{checkpoint}: checkpoint not found")
        if file_sha256(checkpoint) != manifest.source_sha256:
            raise CheckpointError(f"{checkpoint}: not the checkpoint this folder was exported from (sha256 differs)")
        return DeployedDigit(load_checkpoint(checkpoint)[0]), ""
    source = manifest.checkpoint_path()
    if source is None or not source.is_file():
        return None, f"source checkpoint {source} not found: TorchScript on the CPU is the reference"
    if file_sha256(source) != manifest.source_sha256:
        return None, f"{source} changed since export: TorchScript on the CPU is the reference"
    return DeployedDigit(load_checkpoint(source)[0]), ""


def verify(folder: Path, settings: ParitySettings, checkpoint: Path | None = None) -> Verification:
    """Re-check an artifacts folder: files and hashes, the ONNX checker, then parity on real test images of
    every format the manifest lists (an optional format, such as the AOTInductor package, may be absent).

    The eager reference is the source checkpoint (`checkpoint`, else the manifest's, found relative to the
    manifest) when it is present and unchanged; otherwise TorchScript on the CPU, and `note` says why.
    """
    devices = settings.devices()
    manifest = read_manifest(folder)
    problems = integrity_problems(manifest)
    if problems:
        return Verification(problems, None)
    onnx_path = manifest.verified_file("onnx")
    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except onnx.checker.ValidationError as exc:
        return Verification([f"{onnx_path}: ONNX checker failed ({str(exc).splitlines()[0]})"], None)
    eager, note = reference_model(manifest, checkpoint)
    images, labels = parity_images(settings)
    listed = [fmt for fmt in FORMATS if fmt.name in manifest.artifacts]
    report = check_parity(folder, images, labels, devices, eager=eager,
                          cpu_atol=settings.cpu_atol, cuda_atol=settings.cuda_atol, formats=listed)
    return Verification([], report, note)
