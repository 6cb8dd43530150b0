"""Writing manifest.json: the exporter's side of the artifact contract (infer.contract owns the rules)."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnxruntime
import torch

from exporter.formats import FORMATS, Format
from exporter.parity import ParityReport
from infer.contract import (
    INPUT_CONTRACT,
    LABELS,
    OUTPUT_CONTRACT,
    PARITY_NAME,
    SCHEMA_VERSION,
    ArtifactError,
    Manifest,
    file_sha256,
)
from trainer.model import ARCHITECTURE, MNIST_MEAN, MNIST_STD

NORMALIZATION = {"mean": MNIST_MEAN, "std": MNIST_STD, "inside_graph": True}


def graph_metadata(checkpoint_sha256: str, test_accuracy: object) -> dict[str, str]:
    """Key/value strings carried inside the ONNX file (metadata_props), the TorchScript and .pt2 extra files and
    the AOTInductor package's metadata."""
    entries = {
        "labels": json.dumps(list(LABELS)),
        "normalization": json.dumps(NORMALIZATION),
        "input": json.dumps(INPUT_CONTRACT),
        "output": json.dumps(OUTPUT_CONTRACT),
        "checkpoint_sha256": checkpoint_sha256,
        "test_accuracy": json.dumps(test_accuracy),
    }
    return {**entries, "json": json.dumps(entries)}


def build_manifest(staging: Path, final: Path, checkpoint: Path, checkpoint_sha256: str,
                   metrics: dict[str, object], report: ParityReport,
                   formats: Sequence[Format] = FORMATS) -> dict[str, object]:
    """The manifest of the files in `staging` (one entry per format written), which will be renamed to `final`:
    the checkpoint's path is stored relative to `final`, so `verify` finds it from any working folder."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": ARCHITECTURE,
        "labels": list(LABELS),
        "input": INPUT_CONTRACT,
        "output": OUTPUT_CONTRACT,
        "normalization": NORMALIZATION,
        "artifacts": {
            fmt.name: {"file": fmt.file, "sha256": file_sha256(staging / fmt.file),
                       "bytes": (staging / fmt.file).stat().st_size}
            for fmt in formats
        },
        "source": {"checkpoint": os.path.relpath(checkpoint.resolve(), final.resolve()),
                   "sha256": checkpoint_sha256, "metrics": metrics},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "parity": {"passed": report.passed, "report": PARITY_NAME,
                   "atol": {r.device: r.atol for r in report.rows}, "samples": report.samples},
    }


def integrity_problems(manifest: Manifest) -> list[str]:
    """One line per format of the table that is unlisted (optional formats may be), missing, resized or changed
    since export."""
    problems = []
    for fmt in FORMATS:
        if fmt.optional and fmt.name not in manifest.artifacts:
            continue
        try:
            manifest.verified_file(fmt.name)
        except ArtifactError as exc:
            problems.append(str(exc))
    return problems
