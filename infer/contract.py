"""The artifact contract: what digits-export writes into an artifacts folder and what its readers trust.

One small, torch-free module owns it, so the writer (exporter) and the readers (digits-infer, `digits-export
verify`, the benchmark) cannot disagree: the manifest's name, schema and version rules, the model's input and
output contract, the labels, sha256, and the validation and confinement of every file the manifest names.
Nothing in an artifacts folder is used unless the manifest names it, it resolves inside the folder, and its
size and sha256 match.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
PARITY_NAME = "parity.json"
SCHEMA_VERSION = 1  # readers accept 1..SCHEMA_VERSION; a newer manifest asks for a newer digits
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is about 2 kB
MAX_DEPTH = 12  # a real manifest nests 4 levels

LABELS = tuple(str(digit) for digit in range(10))
CLASSES = len(LABELS)
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"
INPUT_SHAPE = ["N", 1, 28, 28]
OUTPUT_SHAPE = ["N", CLASSES]
INPUT_CONTRACT = {
    "name": INPUT_NAME,
    "shape": INPUT_SHAPE,
    "dtype": "float32",
    "range": [0.0, 1.0],
    "polarity": "white ink on black background (MNIST)",
}
OUTPUT_CONTRACT = {"name": OUTPUT_NAME, "shape": OUTPUT_SHAPE, "dtype": "float32", "meaning": "softmax probabilities"}

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ArtifactError(Exception):
    """An artifacts folder that cannot be trusted or used: one line naming the file and the reason."""


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (artifacts, checkpoints and datasets are hashed the same way)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ArtifactEntry:
    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A validated manifest.json. `document` is the whole JSON object, for reports."""

    folder: Path
    labels: tuple[str, ...]
    artifacts: dict[str, ArtifactEntry]
    parity_passed: bool
    source_checkpoint: str | None
    source_sha256: str | None
    document: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    def entry(self, fmt: str) -> ArtifactEntry:
        if fmt not in self.artifacts:
            raise ArtifactError(f"{self.path}: no {fmt} artifact listed (export again with this version of digits)")
        return self.artifacts[fmt]

    def verified_file(self, fmt: str) -> Path:
        """The file of format `fmt`, after it is found inside the folder with the listed size and sha256."""
        entry = self.entry(fmt)
        path = confined(self.folder, entry.file, self.path)
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != entry.bytes:
            raise ArtifactError(f"{path}: {path.stat().st_size} bytes, the manifest says {entry.bytes}; "
                                "refusing a changed model")
        if file_sha256(path) != entry.sha256:
            raise ArtifactError(f"{path}: sha256 differs from the manifest; refusing a changed model")
        return path

    def trusted_file(self, fmt: str) -> Path:
        """What a consumer loads: verified, and only from an export whose parity check passed."""
        if not self.parity_passed:
            raise ArtifactError(f"{self.path}: this export failed its parity check; fix it and export again")
        return self.verified_file(fmt)

    def checkpoint_path(self) -> Path | None:
        """The source checkpoint, resolved relative to the manifest's folder (never the working folder)."""
        if self.source_checkpoint is None:
            return None
        return self.folder / self.source_checkpoint


def confined(folder: Path, name: str, where: Path) -> Path:
    """folder/name when `name` is a plain file name that stays inside `folder` once symlinks are followed."""
    if os.sep in name or (os.altsep and os.altsep in name) or name in (".", "..") or "\0" in name:
        raise ArtifactError(f"{where}: artifact file {name!r} is not a plain file name inside the folder")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ArtifactError(f"{where}: artifact file {name!r} resolves outside {folder}")
    return path


def read_manifest(folder: Path) -> Manifest:
    """Read and validate folder/manifest.json; every defect is one ArtifactError line naming the file."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{path}: no manifest; run `make export` (or point at an artifacts folder)")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not a manifest digits wrote")
    try:
        document = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ArtifactError(f"{path}: nested too deeply; not a manifest digits wrote") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    return validate(document, folder)


def validate(document: object, folder: Path) -> Manifest:
    """Check types, ranges, version, depth and the model contract before anything uses the manifest."""
    where = folder / MANIFEST_NAME
    check = _Checker(where)
    check.depth(document)
    top = check.object(document, "manifest")
    version = top.get("schema_version")
    if type(version) is not int or version < 1:
        check.fail(f"schema_version is {version!r}, expected an integer >= 1")
    if version > SCHEMA_VERSION:
        check.fail(f"schema version {version} is newer than this digits understands ({SCHEMA_VERSION}); "
                   "upgrade digits")
    labels = check.array(top.get("labels"), "labels")
    if len(labels) != CLASSES or not all(isinstance(label, str) and label for label in labels):
        check.fail(f"labels must be {CLASSES} non-empty strings")
    contract_in = check.object(top.get("input"), "input")
    contract_out = check.object(top.get("output"), "output")
    if contract_in.get("shape") != INPUT_SHAPE or contract_in.get("dtype") != "float32":
        check.fail(f"model input is {contract_in.get('shape')!r} {contract_in.get('dtype')!r}, "
                   f"expected {INPUT_SHAPE} float32")
    if contract_out.get("shape") != OUTPUT_SHAPE:
        check.fail(f"model output is {contract_out.get('shape')!r}, expected {OUTPUT_SHAPE}")
    artifacts = {}
    for fmt, raw_entry in check.object(top.get("artifacts"), "artifacts").items():
        entry = check.object(raw_entry, f"artifacts.{fmt}")
        name, digest, size = entry.get("file"), entry.get("sha256"), entry.get("bytes")
        if not isinstance(name, str) or not name:
            check.fail(f"artifacts.{fmt}.file must be a file name")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            check.fail(f"artifacts.{fmt}.sha256 must be 64 lowercase hex digits")
        if type(size) is not int or size < 0:
            check.fail(f"artifacts.{fmt}.bytes must be a non-negative integer")
        confined(folder, name, where)
        artifacts[fmt] = ArtifactEntry(name, digest, size)
    passed = check.object(top.get("parity"), "parity").get("passed")
    if not isinstance(passed, bool):
        check.fail("parity.passed must be true or false")
    source = top.get("source", {})
    source = check.object(source, "source")
    checkpoint, source_sha = source.get("checkpoint"), source.get("sha256")
    if checkpoint is not None and not isinstance(checkpoint, str):
        check.fail("source.checkpoint must be a path")
    if source_sha is not None and not (isinstance(source_sha, str) and _SHA256.fullmatch(source_sha)):
        check.fail("source.sha256 must be 64 lowercase hex digits")
    return Manifest(folder, tuple(labels), artifacts, passed, checkpoint, source_sha, top)


class _Checker:
    def __init__(self, where: Path) -> None:
        self.where = where

    def fail(self, reason: str) -> None:
        raise ArtifactError(f"{self.where}: {reason}")

    def object(self, value: object, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(f"{name} must be a JSON object, found {type(value).__name__}")
        return value

    def array(self, value: object, name: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(f"{name} must be a JSON array, found {type(value).__name__}")
        return value

    def depth(self, document: object) -> None:
        """Refuse documents nested deeper than MAX_DEPTH (walked without recursion)."""
        stack = [(document, 1)]
        while stack:
            value, level = stack.pop()
            if level > MAX_DEPTH:
                self.fail(f"nested deeper than {MAX_DEPTH} levels; not a manifest digits wrote")
            children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
            stack.extend((child, level + 1) for child in children)
