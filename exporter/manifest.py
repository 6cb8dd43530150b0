"""manifest.json: the contract between the exporter and every consumer of artifacts/.

digits-infer trusts nothing in the folder that this file does not name with a matching sha256.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import onnx
import onnxruntime
import torch

from exporter.formats import FORMATS
from exporter.parity import ParityReport
from exporter.wrapper import INPUT_NAME, LABELS, OUTPUT_NAME
from trainer.data import file_sha256
from trainer.model import ARCHITECTURE, MNIST_MEAN, MNIST_STD

MANIFEST_NAME = "manifest.json"
PARITY_NAME = "parity.json"
SCHEMA_VERSION = 1

INPUT_CONTRACT = {
    "name": INPUT_NAME,
    "shape": ["N", 1, 28, 28],
    "dtype": "float32",
    "range": [0.0, 1.0],
    "polarity": "white ink on black background (MNIST)",
}
OUTPUT_CONTRACT = {"name": OUTPUT_NAME, "shape": ["N", 10], "dtype": "float32", "meaning": "softmax probabilities"}


class ManifestError(Exception):
    """A one-line problem with an artifacts folder: missing, unreadable or not matching its files."""


def graph_metadata(checkpoint_sha256: str, test_accuracy: object) -> dict[str, str]:
    """Key/value strings carried inside the ONNX file (metadata_props) and the TorchScript extra files."""
    entries = {
        "labels": json.dumps(LABELS),
        "normalization": json.dumps({"mean": MNIST_MEAN, "std": MNIST_STD, "inside_graph": True}),
        "input": json.dumps(INPUT_CONTRACT),
        "output": json.dumps(OUTPUT_CONTRACT),
        "checkpoint_sha256": checkpoint_sha256,
        "test_accuracy": json.dumps(test_accuracy),
    }
    return {**entries, "json": json.dumps(entries)}


def build_manifest(folder: Path, checkpoint: Path, checkpoint_sha256: str, metrics: dict[str, object],
                   report: ParityReport) -> dict[str, object]:
    return {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": ARCHITECTURE,
        "labels": LABELS,
        "input": INPUT_CONTRACT,
        "output": OUTPUT_CONTRACT,
        "normalization": {"mean": MNIST_MEAN, "std": MNIST_STD, "inside_graph": True},
        "artifacts": {
            fmt.name: {"file": fmt.file, "sha256": file_sha256(folder / fmt.file),
                       "bytes": (folder / fmt.file).stat().st_size}
            for fmt in FORMATS
        },
        "source": {"checkpoint": str(checkpoint), "sha256": checkpoint_sha256, "metrics": metrics},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "parity": {"passed": report.passed, "report": PARITY_NAME,
                   "atol": {r.device: r.atol for r in report.rows}, "samples": report.samples},
    }


def read_manifest(folder: Path) -> dict[str, object]:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest (run `make export` first)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema version {manifest.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return manifest


def integrity_problems(folder: Path, manifest: dict[str, object]) -> list[str]:
    """One line per artifact that is missing or whose sha256 differs from the manifest."""
    problems = []
    for fmt in FORMATS:
        entry = manifest["artifacts"].get(fmt.name)
        path = folder / (entry["file"] if entry else fmt.file)
        if entry is None:
            problems.append(f"{path}: not listed in the manifest")
        elif not path.is_file():
            problems.append(f"{path}: missing")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest (file changed after export)")
    return problems
