"""The predictions CSV: where it may go (`check_output`, before any work) and the sink that writes it.

A file output is written into `OUTPUT.partial`, locked for the run (infer.job), flushed per batch with plain
os.write (no hidden buffer, so a failed write leaves only complete rows and at most one torn one), and renamed
into place only when complete; its job record `OUTPUT.job.json` is written beside it. stdout, a device or a FIFO
is written through as a stream: never replaced, never resumed.

`--resume` keeps the complete rows of OUTPUT.partial (or of a finished OUTPUT), drops a torn last line, and
appends, after checking that the job record matches this run; rows are keyed by their files' real path bytes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from infer.confidence import confidence
from infer.discover import IMAGE_EXTENSIONS, escape_controls, path_bytes
from infer.job import (  # noqa: F401  (OutputError and partial_path: imported from here by callers)
    JobRecord,
    LockedPartial,
    OutputError,
    job_path,
    lock_partial,
    now,
    partial_path,
    write_all,
)
from infer.pipeline import Row
from infer.stop import StopFlag

HEADER = ["path", "prediction", "confidence", *(f"p{d}" for d in range(10)), "error"]
PROBABILITY_FORMAT = ",".join(["%.6g"] * 11)  # confidence and p0..p9, formatted in one operation
EXCEL_FIRST = ("=", "+", "-", "@", "\t", "\r", "'")  # OWASP's = + - @ TAB CR, and ' so the path reads back


def excel_cell(text: str) -> str:
    """--excel-safe: a cell a spreadsheet would run as a formula gets a leading ' (and so does one that
    already starts with ', so that `excel_text` gives the text back exactly)."""
    return "'" + text if text.startswith(EXCEL_FIRST) else text


def excel_text(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


def format_row(row: Row, labels: Sequence[str], excel_safe: bool = False) -> list[str]:
    """One CSV row; the prediction is written as the manifest's label of the most probable class, the confidence
    as infer.confidence rules. The path is already display text (infer.discover); labels and messages get their
    control characters escaped too."""
    text = excel_cell if excel_safe else _same
    if row.probabilities is None:
        return [text(row.path), "", "", *[""] * 10, text(escape_controls(row.error))]
    values = row.probabilities.tolist()  # Python floats format several times faster than numpy scalars
    probs = values[:10]  # with --tta an 11th value follows: the augmented views' confidence (infer.tta)
    best = max(range(10), key=probs.__getitem__)
    return [text(row.path), text(escape_controls(labels[best])),
            *(PROBABILITY_FORMAT % (confidence(values), *probs)).split(","), ""]


def _same(text: str) -> str:
    return text


def complete_rows(text: str) -> tuple[list[list[str]], int]:
    """The records of a CSV this tool wrote (header included) up to the last one that is complete, and where
    that one ends in `text`. A torn last record (unterminated, or cut inside a quote) is left out; ValueError
    when a record before the end cannot be parsed."""
    consumed = 0

    def lines():
        nonlocal consumed
        for line in io.StringIO(text, newline=""):
            consumed += len(line)
            yield line

    records: list[list[str]] = []
    end = 0
    reader = csv.reader(lines(), strict=True)
    try:
        for record in reader:
            if text[consumed - 1] not in "\r\n":
                break  # the last record, cut before its line end
            records.append(record)
            end = consumed
    except csv.Error:
        if consumed < len(text):
            raise ValueError(f"record {len(records) + 1} is not CSV") from None
    return records, end


def read_complete_rows(text: str) -> list[list[str]]:
    """The complete data rows of a CSV this tool wrote, without the header and a torn last line."""
    records, _ = complete_rows(text)
    if records and records[0] == HEADER:
        records = records[1:]
    return [r for r in records if len(r) == len(HEADER)]


@dataclass(frozen=True)
class Target:
    """Where the CSV goes: a file (through OUTPUT.partial), or a stream written through (path None: stdout)."""

    path: Path | None
    stream: bool

    @property
    def where(self) -> str:
        return "stdout" if self.path is None else str(self.path)


def check_output(output: Path | str | None, paths: Sequence[str], resume: bool, recursive: bool) -> Target:
    """Refuse, before any work, an output that cannot take a CSV or would destroy an input (OutputError)."""
    if output is None:
        if resume:
            raise OutputError("--resume needs an output file (-o PATH), not stdout")
        try:
            os.fstat(1)
        except OSError:
            raise OutputError("stdout is closed: give -o PATH, or run with a stdout") from None
        return Target(None, stream=True)
    text = os.fspath(output)
    if not text:
        raise OutputError("-o is empty: name a CSV file, or - for stdout")
    path = Path(text)
    if text.endswith(os.sep) or os.path.isdir(path):
        raise OutputError(f"-o {text}: is a folder; name a CSV file (for example {path / 'predictions.csv'})")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(f"-o {text}: {exc.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
            raise OutputError(f"-o {text}: not a regular file, a device or a FIFO")
        if resume:
            raise OutputError(f"-o {text}: a device or FIFO is written through; --resume needs a regular file")
        return Target(path, stream=True)
    for given in paths:
        if _would_read(text, given, recursive):
            raise OutputError(f"-o {text}: is one of the input images (under {given}); writing the CSV there "
                              "would replace it, so name another file")
    return Target(path, stream=False)


def _would_read(output: str, given: str, recursive: bool) -> bool:
    """Whether the walk of `given` reads `output` (or would, once it is written) as an image."""
    real, root = os.path.realpath(output), os.path.realpath(given)
    if not os.path.isdir(given):
        return real == root
    if os.path.splitext(real)[1].lower() not in IMAGE_EXTENSIONS:
        return False
    return real.startswith(root.rstrip(os.sep) + os.sep) if recursive else os.path.dirname(real) == root


@dataclass
class CsvSink:
    """The CSV of one run. `open` it (lock, checks, rows kept for --resume), `write` batches, then `finish`
    (complete: rename into place) or `stop` (interrupted or failed: OUTPUT.partial stays for --resume)."""

    target: Target
    labels: Sequence[str]
    record: JobRecord | None = None  # this run's job record; None for a stream
    excel_safe: bool = False
    done: set[bytes] = field(default_factory=set)  # real path bytes of the rows kept from an earlier run
    kept: int = 0
    kept_failed: int = 0
    written: int = 0
    written_failed: int = 0
    _fd: int = -1
    _locked: LockedPartial | None = None

    @classmethod
    def open(cls, target: Target, labels: Sequence[str], record: JobRecord | None, resume: bool = False,
             excel_safe: bool = False, stop: StopFlag | None = None) -> CsvSink:
        """Ready to write: OutputInUse when another run holds the output, OutputError when --resume finds
        another job's rows or the output cannot be written. No file is changed when it raises."""
        sink = cls(target, labels, record if not target.stream else None, excel_safe)
        if target.stream:
            sink._open_stream(stop or StopFlag())
            sink._write(_csv_text([HEADER]))
        else:
            sink._open_file(resume)
        return sink

    def _open_stream(self, stop: StopFlag) -> None:
        if self.target.path is None:
            self._fd = 1
            return
        try:
            with stop.immediately():  # a FIFO waits here for its reader: a signal must still stop the run
                self._fd = os.open(self.target.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise OutputError(f"{self.target.path}: cannot write ({exc.strerror})") from None

    def _open_file(self, resume: bool) -> None:
        output = self.target.path
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{output.parent}: cannot create the folder ({exc.strerror})") from None
        locked = lock_partial(output)
        try:
            self._take_over(locked, resume)
        except BaseException:
            if locked.created:
                os.unlink(locked.path)
            locked.close()
            raise
        self._locked, self._fd = locked, locked.fd

    def _take_over(self, locked: LockedPartial, resume: bool) -> None:
        """Keep what may be kept, then write the job record. The record is written last: until then, a failure
        leaves every file as it was (a partial made here is removed by the caller)."""
        output = self.target.path
        source = locked.path if not locked.created else output if resume and output.is_file() else None
        raw = _read(locked.fd if source == locked.path else source) if source is not None else b""
        text = raw.decode("utf-8", "surrogateescape")
        try:
            records, end = complete_rows(text)
        except ValueError:
            records, end = [[]], 0
        if records and records[0] != HEADER or any(len(r) != len(HEADER) for r in records[1:]):
            raise OutputError(f"{source}: not a CSV digits-infer wrote; delete it (or write to another -o)")
        rows = records[1:]
        if rows and not resume:
            raise OutputError(f"{source} holds the rows of an interrupted run: pass --resume to finish it, "
                              "or delete it to start over")
        if rows:
            self._check_same_job(source)
            self._keep(rows, source)
        kept = text[:end].encode("utf-8", "surrogateescape") if rows else _csv_text([HEADER])
        try:
            if source == locked.path and rows:
                os.ftruncate(locked.fd, len(kept))  # drops a torn last line
            else:
                os.ftruncate(locked.fd, 0)
                os.lseek(locked.fd, 0, os.SEEK_SET)
                write_all(locked.fd, kept)
            os.lseek(locked.fd, 0, os.SEEK_END)
        except OSError as exc:
            raise OutputError(f"{locked.path}: cannot write ({exc.strerror})") from None
        self.record.write(output)

    def _check_same_job(self, source: Path) -> None:
        output = self.target.path
        earlier = JobRecord.read(output)
        if earlier is None:
            raise OutputError(f"--resume: {source} has no job record ({job_path(output).name}) beside it, so it "
                              "cannot be checked to be this job; nothing was changed")
        if source == output and earlier.finished is None:  # the record is of a run whose .partial is gone
            raise OutputError(f"--resume: {job_path(output).name} is of a run that did not finish, not of {output}; "
                              "nothing was changed: run without --resume to start over")
        differences = self.record.differences(earlier)
        if differences:
            raise OutputError(f"--resume: {source} holds another job's rows ({'; '.join(differences)}); nothing "
                              "was changed: run the first command again, or write to another -o")
        self.record.started = earlier.started

    def _keep(self, rows: list[list[str]], source: Path) -> None:
        for number, row in enumerate(rows, start=2):
            try:
                self.done.add(path_bytes(excel_text(row[0]) if self.record.options.get("excel_safe") else row[0]))
            except ValueError:
                raise OutputError(f"{source}: line {number}: {row[0]!r} is not a path as digits-infer writes "
                                  "them; nothing was changed") from None
        self.kept = len(rows)
        self.kept_failed = sum(1 for r in rows if r[-1])

    def write(self, rows: list[Row]) -> None:
        """Append one batch, so that a crash loses at most the batch being written. OutputError when the output
        fails (a full disk, a closed pipe): the rows before it stay complete."""
        self._write(_csv_text([format_row(r, self.labels, self.excel_safe) for r in rows]))
        failed = sum(1 for r in rows if r.error)
        self.written += len(rows)
        self.written_failed += failed

    def _write(self, data: bytes) -> None:
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise OutputError(self._failure(exc)) from None

    def _failure(self, exc: OSError) -> str:
        reason = exc.strerror or type(exc).__name__
        if self.target.stream:
            closed = "closed by the reader; " if isinstance(exc, BrokenPipeError) else ""
            return f"{self.target.where}: {closed}cannot write ({reason}); stopped"
        return (f"{self._locked.path}: cannot write ({reason}); its complete rows are kept: fix the cause, then "
                "run the same command with --resume")

    def finish(self, images_per_second: float, skipped: int) -> None:
        """The CSV is complete: fsync it, record the job as finished, rename OUTPUT.partial over OUTPUT."""
        if self.target.stream:
            self.close()
            return
        output = self.target.path
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(self._failure(exc)) from None
        self._update(skipped, images_per_second)
        try:
            os.replace(self._locked.path, output)
        except OSError as exc:
            raise OutputError(f"{output}: cannot rename {self._locked.path.name} into place ({exc.strerror})") \
                from None
        finally:
            self.close()

    def stop(self, skipped: int) -> None:
        """Interrupted or failed: OUTPUT.partial keeps its rows for --resume; the record keeps the counts."""
        if self.record is not None and self._locked is not None:
            # The disk that failed the CSV may fail this too: then the record written at the start stays.
            with contextlib.suppress(OutputError):
                self._update(skipped, None)
        self.close()

    def _update(self, skipped: int, images_per_second: float | None) -> None:
        record = self.record
        record.classified = self.kept - self.kept_failed + self.written - self.written_failed
        record.failed = self.kept_failed + self.written_failed
        record.skipped = skipped
        if images_per_second is not None:
            record.images_per_second = round(images_per_second, 1)
            record.finished = now()
        record.write(self.target.path)

    def close(self) -> None:
        """Close the output (stdout stays open); the lock goes with the descriptor."""
        if self._locked is not None:
            self._locked.close()
        elif self._fd > 2:
            os.close(self._fd)
        self._fd = -1


def _csv_text(records: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(records)
    return buffer.getvalue().encode("utf-8", "backslashreplace")


def _read(source: int | Path) -> bytes:
    try:
        if isinstance(source, int):
            os.lseek(source, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(source, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        return source.read_bytes()
    except OSError as exc:
        raise OutputError(f"{source}: cannot read for --resume ({exc.strerror})") from None
