"""PyTorch 2 archives (`torch.export` programs and AOTInductor packages, both `.pt2` zips), opened without
ever running the unpickler.

torch.export.save stores weights as raw bytes described by JSON, but torch's loader still unpickles any
member its JSON marks as pickled (torch.load with weights_only=False), and tries the sample inputs with
torch.load, falling back to weights_only=False when that fails. digits writes archives with none of those
(no pickled payloads, empty sample inputs). Before torch reads an archive, `check_pickle_free` walks its
members against the short list of parts digits writes and refuses anything else, so a load here never reaches
torch.load or pickle. The sha256 against the manifest is checked before this; this check is what lets the
formats be documented as pickle-free whatever bytes a manifest vouches for.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infer.contract import ArtifactError

MAX_CONFIG_BYTES = 16 << 20  # a real weights config is about 3 kB
# Parts of an archive (below its root folder) that torch reads without unpickling: bookkeeping, the program's
# JSON, raw tensors, extra files, and AOTInductor's compiled files.
_PLAIN = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[^/]+\.json|data/weights/weight_\d+|data/constants/tensor_\d+|extra/.+"
    r"|data/aotinductor/[^/]+/(?!weights_config\.json$)[^/]+"
)
_CONFIG = re.compile(r"data/(weights|constants)/[^/]+_(weights|constants)_config\.json")
_SAMPLE_INPUTS = re.compile(r"data/sample_inputs/[^/]+\.pt")
_RAW_PAYLOAD = {"weights": "weight_", "constants": "tensor_"}


def check_pickle_free(path: Path) -> None:
    """Raise ArtifactError unless every member of the archive is one that torch loads without unpickling."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_member(path, archive, info)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"{path}: not a readable .pt2 archive ({exc})") from None


def _check_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    root, _, name = info.filename.partition("/")
    if info.is_dir() or _PLAIN.fullmatch(name):
        return
    if _SAMPLE_INPUTS.fullmatch(name):
        if info.file_size:
            raise ArtifactError(f"{path}: {info.filename} holds pickled sample inputs; digits loads .pt2 files "
                                "only when nothing in them is pickled")
        return
    config = _CONFIG.fullmatch(name)
    if config is None or not root:
        raise ArtifactError(f"{path}: {info.filename} is not a part digits writes into a .pt2 archive; "
                            "refusing to load it")
    if info.file_size > MAX_CONFIG_BYTES:
        raise ArtifactError(f"{path}: {info.filename} is larger than {MAX_CONFIG_BYTES} bytes; refusing it")
    try:
        entries = json.loads(archive.read(info)).get("config", {})
    except (ValueError, AttributeError) as exc:
        raise ArtifactError(f"{path}: {info.filename} is not a valid payload config ({exc})") from None
    prefix = _RAW_PAYLOAD[config.group(1)]
    for key, entry in _items(entries):
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False \
                or not str(entry.get("path_name", "")).startswith(prefix):
            raise ArtifactError(f"{path}: {info.filename} stores {key!r} pickled; digits loads .pt2 files only "
                                "when every tensor is raw bytes")


def _items(entries: Any) -> list[tuple[str, Any]]:
    return list(entries.items()) if isinstance(entries, dict) else [("config", entries)]


@contextmanager
def quiet_cuda_home_notice():
    """Importing torch's C++ extension helpers logs "No CUDA runtime is found, using CUDA_HOME=..." on machines
    with a CUDA folder but no GPU; a CPU package does not need CUDA, so the notice is held back here only."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_exported_program(path: Path):
    """The ExportedProgram in a `torch.export.save` archive, after check_pickle_free."""
    check_pickle_free(path)
    import torch

    try:
        return torch.export.load(path)
    except Exception as exc:  # torch raises RuntimeError, KeyError, ValueError... for archives it cannot read
        raise ArtifactError(f"{path}: torch.export.load cannot read it ({_first_line(exc)})") from None


def load_aoti_package(path: Path):
    """The compiled model in an AOTInductor package (CPU), after check_pickle_free."""
    check_pickle_free(path)
    with quiet_cuda_home_notice():
        import torch._inductor

        try:
            return torch._inductor.aoti_load_package(str(path))
        except Exception as exc:  # the C++ loader raises RuntimeError; a bad .so, OSError
            raise ArtifactError(f"{path}: the AOTInductor package cannot be loaded ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
