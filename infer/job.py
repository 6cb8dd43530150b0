"""The job behind an output file: what it is (its identity, which --resume must match), its record beside the
CSV (`OUTPUT.job.json`), and the lock that lets one run at a time write it (an advisory `flock` on
`OUTPUT.partial`). Used by the CSV sink (infer.csvout) and by any engine that writes one.

The record, written atomically when a run starts and again when it ends:
    {"format": 1, "model_sha256", "backend", "torch_format", "device", "options", "inputs",
     "started", "finished", "images_per_second", "classified", "failed", "skipped", "pid"}
`model_sha256` is the sha256 of the model file used; `options` the options that change rows (InferOptions
fields marked RESULT); `inputs` each PATH as given and as its real path (display text, infer.discover);
`started` and `finished` ISO times (`finished` null until the CSV is complete); `images_per_second` of the run
that finished it; the counts cover the whole CSV. The identity is format, model_sha256, backend, torch_format,
options and inputs; the rest is bookkeeping (the device too: a job stopped on a GPU node may finish on a CPU one).

The lock: the kernel drops a `flock` when its holder dies, so a killed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from infer.discover import display_path

JOB_FORMAT = 1
MAX_RECORD_BYTES = 1 << 20
IDENTITY = ("format", "model_sha256", "backend", "torch_format", "options", "inputs")


class OutputError(Exception):
    """The output cannot be written or resumed. One line; digits-infer exits 2."""


class OutputInUse(OutputError):
    """Another run holds the output's lock."""


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def job_path(output: Path) -> Path:
    return output.with_name(output.name + ".job.json")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def input_roots(paths: list[str]) -> list[dict[str, str]]:
    """Each PATH as given and as its real path: the same folder named another way, or the same name from another
    working folder, is another job (its rows' paths differ). A URI (s3://…) is its own real path."""
    from infer.uris import is_uri

    return [{"given": display_path(p), "real": display_path(p if is_uri(p) else os.path.realpath(p))} for p in paths]


@dataclass
class JobRecord:
    """OUTPUT.job.json (module docstring)."""

    model_sha256: str
    backend: str
    torch_format: str | None
    device: str
    options: dict[str, Any]
    inputs: list[dict[str, str]]
    started: str = field(default_factory=now)
    finished: str | None = None
    images_per_second: float | None = None
    classified: int = 0
    failed: int = 0
    skipped: int = 0
    pid: int = field(default_factory=os.getpid)
    format: int = JOB_FORMAT

    def identity(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in IDENTITY}

    def differences(self, earlier: JobRecord) -> list[str]:
        """What differs from an earlier run's identity, one short phrase each ("backend onnx, now torch")."""
        said: list[str] = []
        mine, theirs = self.identity(), earlier.identity()
        for name in IDENTITY:
            if name == "options":
                keys = sorted(set(mine["options"]) | set(theirs["options"]))
                said += [f"--{key.replace('_', '-')} {_text(theirs['options'].get(key))}, now "
                         f"{_text(mine['options'].get(key))}" for key in keys
                         if mine["options"].get(key) != theirs["options"].get(key)]
            elif name == "inputs" and mine[name] != theirs[name]:
                said.append(f"inputs {_inputs(theirs[name])}, now {_inputs(mine[name])}")
            elif mine[name] != theirs[name]:
                said.append(f"{name.replace('_', ' ')} {_text(theirs[name])}, now {_text(mine[name])}")
        return said

    def write(self, output: Path) -> None:
        """Replace OUTPUT.job.json atomically (a reader sees the old record or the new one, never a torn one)."""
        path = job_path(output)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            try:
                write_all(fd, (json.dumps(asdict(self), indent=1) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except OSError as exc:
            _unlink_quietly(temporary)
            raise OutputError(f"{path}: cannot write ({exc.strerror})") from None

    @classmethod
    def read(cls, output: Path) -> JobRecord | None:
        """The record beside `output`; None when there is none. OutputError when it is not one this digits wrote."""
        path = job_path(output)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OutputError(f"{path}: cannot read ({exc.strerror})") from None
        try:
            document = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_RECORD_BYTES else None
            record = cls(**document) if isinstance(document, dict) else None
        except (ValueError, TypeError, RecursionError):
            record = None
        if record is None or record.format != JOB_FORMAT or not _well_typed(record):
            raise OutputError(f"{path}: not a job record this digits-infer wrote; delete it and the CSV beside it "
                              "to start over")
        return record


def _well_typed(record: JobRecord) -> bool:
    strings = (record.model_sha256, record.backend, record.device, record.started)
    return (all(isinstance(s, str) for s in strings) and isinstance(record.options, dict)
            and isinstance(record.inputs, list) and isinstance(record.torch_format, (str, type(None)))
            and all(type(n) is int for n in (record.classified, record.failed, record.skipped)))


def _text(value: object) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _inputs(inputs: list[dict[str, str]]) -> str:
    return " ".join(item.get("real", "?") if isinstance(item, dict) else "?" for item in inputs) or "none"


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a pipe or a signal may take them in parts)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:  # a non-blocking stdout: wait until it takes more
            import select

            select.select([], [fd], [])


@dataclass
class LockedPartial:
    """OUTPUT.partial, open for reading and writing, with this process holding its lock."""

    path: Path
    fd: int
    created: bool  # made by this run (empty), rather than left by an earlier one

    def close(self) -> None:
        """Close it; the kernel drops the lock with the last descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lock_partial(output: Path) -> LockedPartial:
    """Open OUTPUT.partial, creating it when absent, and take its lock. OutputInUse names the holder's pid.

    A new partial appears already locked (made under a temporary name, locked, then linked into place), so a
    second run never finds it unlocked; and the lock is checked to be on the file the name still points to."""
    partial = partial_path(output)
    while True:
        try:
            fd = os.open(partial, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = _create_locked(partial)
            if fd is None:
                continue  # another run made it first: lock that one (or find it in use)
            return LockedPartial(partial, fd, created=True)
        except OSError as exc:
            raise OutputError(f"{partial}: cannot open ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = lock_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                pid = f"pid {holder or _recorded_pid(output) or 'unknown'}"
                raise OutputInUse(f"{output}: in use by another digits-infer ({pid}); wait for it to finish, "
                                  "or write to another -o") from None
            raise OutputError(f"{partial}: cannot lock ({exc.strerror})") from None
        if _same_file(fd, partial):
            return LockedPartial(partial, fd, created=False)
        os.close(fd)  # renamed or replaced between open and lock (a run finishing): look again


def _create_locked(partial: Path) -> int | None:
    temporary = partial.with_name(f".{partial.name}.{os.getpid()}.new")
    try:
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise OutputError(f"{partial}: cannot write ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.link(temporary, partial)
        return fd
    except FileExistsError:
        os.close(fd)
        return None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            os.close(fd)
            raise OutputError(f"{partial}: cannot write ({exc.strerror})") from None
        os.close(fd)  # a file system without hard links: create in place, lock at once
        return _create_in_place(partial)
    finally:
        _unlink_quietly(temporary)


def _create_in_place(partial: Path) -> int | None:
    try:
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        return None
    except OSError as exc:
        raise OutputError(f"{partial}: cannot write ({exc.strerror})") from None
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _recorded_pid(output: Path) -> int | None:
    try:
        record = JobRecord.read(output)
    except OutputError:
        return None
    return record.pid if record is not None and type(record.pid) is int else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def lock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file open as `fd`, from /proc/locks (Linux); None when not known."""
    info = os.fstat(fd)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
                    return int(fields[4]) or None
    except (OSError, ValueError):
        pass
    return None


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
