"""Find and trust the exported model: manifest.json read, contract checked, sha256 of the file verified.

digits-infer reads only what the manifest names, and only after its hash matches (no torch imported here).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "manifest.json"
SUPPORTED_SCHEMA = 1
INPUT_SHAPE = ["N", 1, 28, 28]
CLASSES = 10


class ModelError(Exception):
    """The model folder cannot be trusted or used. One line; digits-infer exits 2."""


@dataclass(frozen=True)
class Artifact:
    path: Path
    labels: list[str]
    input_name: str
    output_name: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(model_dir: Path) -> dict:
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"{path}: no manifest; run `make export` (or point --model-dir at an artifacts folder)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{path}: manifest is not a JSON object")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SUPPORTED_SCHEMA:
        raise ModelError(f"{path}: manifest schema {version!r} is newer than this digits-infer understands "
                         f"({SUPPORTED_SCHEMA}); upgrade digits")
    return manifest


def locate(model_dir: Path, fmt: str) -> Artifact:
    """The artifact of format `fmt` ('onnx' or 'torchscript') after every check passes."""
    manifest = read_manifest(model_dir)
    where = model_dir / MANIFEST_NAME
    try:
        entry = manifest["artifacts"][fmt]
        file_name, expected = entry["file"], entry["sha256"]
        contract, output = manifest["input"], manifest["output"]
        labels = [str(label) for label in manifest["labels"]]
    except (KeyError, TypeError):
        raise ModelError(f"{where}: manifest has no complete entry for {fmt}") from None
    if contract.get("shape") != INPUT_SHAPE or contract.get("dtype") != "float32":
        raise ModelError(f"{where}: model input is {contract.get('shape')} {contract.get('dtype')}, "
                         f"expected {INPUT_SHAPE} float32")
    if output.get("shape") != ["N", CLASSES] or len(labels) != CLASSES:
        raise ModelError(f"{where}: model output is {output.get('shape')}, expected ['N', {CLASSES}]")
    if not manifest.get("parity", {}).get("passed", False):
        raise ModelError(f"{where}: this export failed its parity check; fix and re-run `make export`")
    path = model_dir / file_name
    if not path.is_file():
        raise ModelError(f"{path}: listed in the manifest but missing")
    if sha256_of(path) != expected:
        raise ModelError(f"{path}: sha256 differs from the manifest; refusing to load a changed model")
    return Artifact(path, labels, contract.get("name", "image"), output.get("name", "probabilities"))
