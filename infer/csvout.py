"""The predictions CSV: flushed per batch into `OUTPUT.partial`, renamed into place only when complete.

`--resume` reads a partial (or finished) file, keeps its complete rows, drops a torn last line, and appends.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, TextIO

from infer.confidence import confidence
from infer.pipeline import Row

HEADER = ["path", "prediction", "confidence", *(f"p{d}" for d in range(10)), "error"]
PROBABILITY_FORMAT = ",".join(["%.6g"] * 11)  # confidence and p0..p9, formatted in one operation


class OutputError(Exception):
    """The output cannot be written or resumed. One line; digits-infer exits 2."""


def format_row(row: Row, labels: Sequence[str]) -> list[str]:
    """One CSV row; the prediction is written as the manifest's label of the most probable class, the
    confidence as infer.confidence rules."""
    if row.probabilities is None:
        return [row.path, "", "", *[""] * 10, row.error]
    values = row.probabilities.tolist()  # Python floats format several times faster than numpy scalars
    probs = values[:10]  # with --tta an 11th value follows: the augmented views' confidence (infer.tta)
    best = max(range(10), key=probs.__getitem__)
    return [row.path, labels[best], *(PROBABILITY_FORMAT % (confidence(values), *probs)).split(","), ""]


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def read_complete_rows(text: str) -> list[list[str]]:
    """Rows of a CSV this tool wrote, minus a last row torn by a crash (unterminated, short, or unparseable)."""
    rows: list[list[str]] = []
    try:
        for record in csv.reader(io.StringIO(text, newline="")):
            rows.append(record)
    except csv.Error:
        pass  # an unterminated quote at the end: the torn row is simply not appended
    if rows and rows[0] == HEADER:
        rows = rows[1:]
    if rows and not text.endswith("\n"):
        rows.pop()
    return [r for r in rows if len(r) == len(HEADER)]


@dataclass
class CsvSink:
    """Where rows go: a file (via OUTPUT.partial) or stdout. Tracks what is already done for --resume."""

    output: Path | None  # None: stdout
    labels: Sequence[str]
    resume: bool = False
    done: set[str] = field(default_factory=set)
    previous_errors: int = 0
    _file: TextIO | None = None
    _writer: csv._writer | None = None

    def open(self) -> CsvSink:
        if self.output is None:
            if self.resume:
                raise OutputError("--resume needs an output file (-o PATH), not stdout")
            self._start(sys.stdout, [])
            return self
        partial = partial_path(self.output)
        kept: list[list[str]] = []
        if self.resume:
            source = partial if partial.exists() else self.output if self.output.exists() else None
            if source is not None:
                kept = read_complete_rows(self._read_text(source))
        elif partial.exists():
            raise OutputError(f"{partial} holds the rows of an interrupted run: pass --resume to finish it, "
                              "or delete it to start over")
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            handle = partial.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"{partial}: cannot write ({exc.strerror})") from None
        self._start(handle, kept)
        return self

    @staticmethod
    def _read_text(path: Path) -> str:
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise OutputError(f"{path}: cannot read for --resume ({exc.strerror})") from None

    def _start(self, handle: TextIO, kept: list[list[str]]) -> None:
        self._file = handle
        self._writer = csv.writer(handle, lineterminator="\n")
        self._writer.writerow(HEADER)
        self._writer.writerows(kept)
        self.done = {r[0] for r in kept}
        self.previous_errors = sum(1 for r in kept if r[-1])
        handle.flush()

    def write(self, rows: list[Row]) -> None:
        """Append one batch and flush it, so a crash loses at most the batch being written."""
        self._writer.writerows(format_row(r, self.labels) for r in rows)
        self._file.flush()

    def finish(self) -> None:
        """Make the output complete: fsync the partial file and rename it over OUTPUT."""
        if self.output is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(partial_path(self.output), self.output)

    def close_partial(self) -> None:
        """Interrupted: keep OUTPUT.partial as it is, for --resume."""
        if self.output is not None and self._file is not None and not self._file.closed:
            self._file.flush()
            self._file.close()
