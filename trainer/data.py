"""MNIST as tensors: found through torchvision, checked, decoded once instead of per sample per epoch."""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from infer.contract import file_sha256

DATA_DIR_ENV = "DIGITS_DATA_DIR"
DEFAULT_DATA_DIR = "./data"
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_RAW_FILES = RAW_FILES["train"] + RAW_FILES["test"]
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


class DataError(Exception):
    """A one-line, user-facing problem with the dataset (missing, undownloadable, corrupt)."""


@dataclass(frozen=True)
class Split:
    """One MNIST split: uint8 images N×28×28 and int64 labels N."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: int | None) -> Split:
        """The first `count` examples (all when None), for quick runs and tests."""
        return self if count is None else Split(self.images[:count], self.labels[:count])


def resolve_data_dir(flag: str | os.PathLike | None = None) -> Path:
    """The dataset root: the flag, else $DIGITS_DATA_DIR, else ./data (torchvision's MNIST/raw lives under it)."""
    return Path(flag or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _missing_message(root: Path, reason: str) -> str:
    return (
        f"MNIST not found in {raw_dir(root)} ({reason}); expected {', '.join(ALL_RAW_FILES)}. "
        f"Point --data-dir or {DATA_DIR_ENV} at a folder holding MNIST/raw/."
    )


def ensure_present(root: Path, download: bool = True) -> None:
    """Download through torchvision when the raw files are absent; a failure becomes one DataError line."""
    if all((raw_dir(root) / name).is_file() for name in ALL_RAW_FILES):
        return
    if not download:
        raise DataError(_missing_message(root, "download disabled"))
    try:
        # torchvision prints each failed mirror; the user gets our single line instead.
        with contextlib.redirect_stdout(io.StringIO()):
            MNIST(str(root), train=True, download=True)
            MNIST(str(root), train=False, download=True)
    except Exception as exc:  # any network or filesystem failure of the download
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(_missing_message(root, f"download failed: {first_line}")) from None


def check_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> int:
    """Validate an IDX file's header against its size; returns the item count. Catches truncation and corruption."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            header = f.read(4 + 4 * (1 + len(item_shape)))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if len(header) < 8 + 4 * len(item_shape):
        raise DataError(f"{path}: corrupt or truncated IDX file (only {size} bytes)")
    found_magic, count = struct.unpack(">ii", header[:8])
    if found_magic != magic:
        raise DataError(f"{path}: corrupt IDX file (magic number {found_magic}, expected {magic})")
    dims = struct.unpack(f">{len(item_shape)}i", header[8:])
    if dims != item_shape:
        raise DataError(f"{path}: corrupt IDX file (item shape {dims}, expected {item_shape})")
    expected = len(header) + count * math.prod(item_shape)
    if size != expected:
        raise DataError(f"{path}: corrupt or truncated IDX file ({size} bytes, its header says {expected})")
    return count


def load_split(root: Path, train: bool, download: bool = True) -> Split:
    """Load one split through torchvision's MNIST after checking the files, as tensors."""
    ensure_present(root, download)
    image_name, label_name = RAW_FILES["train" if train else "test"]
    images_path, labels_path = raw_dir(root) / image_name, raw_dir(root) / label_name
    n_images = check_idx(images_path, IMAGE_MAGIC, (28, 28))
    n_labels = check_idx(labels_path, LABEL_MAGIC, ())
    if n_images != n_labels:
        raise DataError(f"{images_path}: {n_images} images but {labels_path.name} has {n_labels} labels")
    dataset = MNIST(str(root), train=train, download=False)
    labels = dataset.targets.long()
    if labels.numel() and int(labels.max()) > 9:
        raise DataError(f"{labels_path}: corrupt labels (found {int(labels.max())}, expected 0-9)")
    return Split(dataset.data, labels)


def dataset_sha256(root: Path) -> dict[str, str]:
    """sha256 of the four raw files, recorded in the checkpoint so a model names the data it saw."""
    return {name: file_sha256(raw_dir(root) / name) for name in ALL_RAW_FILES}


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×28×28 → float32 N×1×28×28 in [0,1] (ToTensor, done once for the whole split)."""
    return images.unsqueeze(1).float().div_(255.0)
