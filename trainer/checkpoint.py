"""The checkpoint file: a safetensors state_dict with string metadata. No pickle, ever."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from trainer.model import Digit


class CheckpointError(Exception):
    """A one-line, user-facing problem with a checkpoint file."""


def save_checkpoint(model: Digit, path: Path, metadata: dict[str, object]) -> None:
    """Write atomically; non-string metadata values are stored as JSON (safetensors only holds strings)."""
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=text)
    os.chmod(tmp, 0o644)  # safetensors writes 0600; a checkpoint is meant to be shared like any output
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[Digit, dict[str, str]]:
    """Rebuild Digit from a safetensors checkpoint; any defect becomes a CheckpointError naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (run `make train` first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    model = Digit()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the Digit model ({first})") from None
    return model.eval(), metadata


def metadata_value(metadata: dict[str, str], key: str) -> object:
    """Decode one metadata entry written by save_checkpoint (None when absent)."""
    raw = metadata.get(key, "null")
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw

