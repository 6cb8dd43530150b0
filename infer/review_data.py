"""The review report's numbers, gathered in one pass over a digits-infer CSV.

Memory stays flat whatever the CSV's length: the N lowest-confidence rows live in a heap, counts and the
confidence histogram are running totals, each confusion-matrix cell keeps at most `cell_size` rows, and only a
bounded number of failed files is listed by name. Also here: the labels file and the run's facts, read from
the job sidecar (`OUTPUT.job.json`) that digits-infer leaves beside its CSV.
"""

from __future__ import annotations

import csv
import heapq
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from infer.csvout import HEADER
from infer.job import job_path

DIGITS = tuple(str(digit) for digit in range(10))
HISTOGRAM_BINS = 20  # confidence bins of 0.05
REASONS_TRACKED = 50  # distinct failure reasons counted by name; the rest are counted as "other reasons"


class ReportError(Exception):
    """Input the report cannot use: one line naming the file and the reason (digits-report exits 2)."""


@dataclass(frozen=True)
class Card:
    """One classified row, as a card shows it."""

    line: int  # line in the CSV: identifies the row and breaks ties by order
    path: str
    prediction: str
    confidence: float
    second: str  # the second most probable digit
    second_probability: float
    label: str | None  # the right answer, when a labels file names this row


@dataclass(frozen=True)
class RunFacts:
    """What the CSV alone cannot tell: from the run itself (digits-infer --report) or from its job sidecar."""

    source: str  # "this run", or the sidecar's path
    model_sha256: str | None = None
    backend: str | None = None
    started: datetime | None = None
    finished: datetime | None = None
    images_per_second: float | None = None
    skipped: int | None = None


def read_job(predictions: Path) -> tuple[RunFacts | None, str]:
    """(facts, note): the sidecar's facts when it is there and readable; otherwise None and why."""
    path = job_path(predictions)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"unknown: no {path.name} beside the CSV"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unknown: {path.name} is unreadable ({getattr(exc, 'strerror', None) or type(exc).__name__})"
    if not isinstance(document, dict):
        return None, f"unknown: {path.name} is not a JSON object"
    sha = document.get("model_sha256")
    return RunFacts(
        source=str(path),
        model_sha256=sha if isinstance(sha, str) else None,
        backend=document.get("backend") if isinstance(document.get("backend"), str) else None,
        started=iso_time(document.get("started")),
        finished=iso_time(document.get("finished")),
        images_per_second=number(document.get("images_per_second")),
        skipped=int(document["skipped"]) if isinstance(document.get("skipped"), int) else None,
    ), ""


def iso_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:  # Python 3.10's fromisoformat does not take a trailing Z
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.astimezone()  # a naive time is this machine's local time


def number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Labels:
    """The right answers: `file,label` rows, matched to CSV rows by path, else by file name when unique."""

    source: Path
    by_path: dict[str, str]  # the labels file's `file` (normalised) → label
    by_name: dict[str, str | None]  # for files named with a folder: name → its key; None: the name is not unique

    def find(self, path: str) -> tuple[str, str] | None:
        """(the labels row's key, label) for a CSV path, or None when no labels row matches."""
        key = os.path.normpath(path)
        if key not in self.by_path:
            key = os.path.basename(key)
            if key not in self.by_path:
                key = self.by_name.get(key)
                if key is None:
                    return None
        return key, self.by_path[key]

    def __len__(self) -> int:
        return len(self.by_path)


def read_labels(path: Path) -> Labels:
    """Read a `file,label` CSV (more columns are ignored); labels must be digits 0-9. Held in memory: one
    entry per labelled file (about 100 bytes each)."""
    by_path: dict[str, str] = {}
    by_name: dict[str, str | None] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
                raise ReportError(f"{path}: not a labels file (expected a header with columns file,label)")
            for row in reader:
                file, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
                if label not in DIGITS:
                    raise ReportError(f"{path}: line {reader.line_num}: label {label[:20]!r} is not a digit 0-9")
                if not file:
                    raise ReportError(f"{path}: line {reader.line_num}: empty file name")
                key = os.path.normpath(file)
                by_path[key] = DIGITS[int(label)]  # one shared string per digit, not one per row
                name = os.path.basename(key)
                if name != key:
                    by_name[name] = key if by_name.get(name, key) == key else None
    except FileNotFoundError:
        raise ReportError(f"{path}: labels file not found") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a folder, not a labels file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: cannot read labels ({getattr(exc, 'strerror', None) or exc})") from None
    return Labels(path, by_path, by_name)


@dataclass
class Tally:
    """Everything the page shows, gathered row by row with bounded memory."""

    review_size: int
    cell_size: int
    failed_size: int
    labels: Labels | None = None
    rows: int = 0
    classified: int = 0
    failed: int = 0
    predicted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIGITS, 0))
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    failed_rows: list[tuple[str, str]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    labelled: int = 0
    correct: int = 0
    matrix: dict[tuple[str, str], int] = field(default_factory=dict)  # (label, prediction or "failed") → rows
    matched: set[str] = field(default_factory=set)  # labels rows that a CSV row matched
    _review: list = field(default_factory=list)  # max-heap of (-confidence, -line, Card): the N lowest
    _cells: dict[tuple[str, str], list] = field(default_factory=dict)

    def add(self, record: list[str], line: int, where: Path) -> None:
        """Count one CSV record; a record digits-infer could not have written is a ReportError."""
        if len(record) != len(HEADER):
            raise ReportError(f"{where}: line {line}: {len(record)} fields, a digits-infer row has {len(HEADER)}")
        path, prediction, confidence_text, error = record[0], record[1], record[2], record[-1]
        self.rows += 1
        found = self.labels.find(path) if self.labels is not None else None
        if found is not None:
            self.matched.add(found[0])
            self.labelled += 1
        if error:
            self.failed += 1
            if len(self.failed_rows) < self.failed_size:
                self.failed_rows.append((path, error))
            reason = error if error in self.reasons or len(self.reasons) < REASONS_TRACKED else "other reasons"
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
            if found is not None:
                self._count((found[1], "failed"))
            return
        if prediction not in DIGITS:
            raise ReportError(f"{where}: line {line}: prediction {prediction[:20]!r} is not a digit 0-9")
        try:
            confidence = float(confidence_text)
        except ValueError:
            raise ReportError(f"{where}: line {line}: confidence {confidence_text[:20]!r} is not a number") from None
        if not 0.0 <= confidence <= 1.0:
            raise ReportError(f"{where}: line {line}: confidence {confidence_text[:20]} is outside [0, 1]")
        self.classified += 1
        self.predicted[prediction] += 1
        self.histogram[min(int(confidence * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
        label = None if found is None else found[1]
        if label is not None:
            self.correct += label == prediction
            self._count((label, prediction))
        key = (-confidence, -line)
        review_wanted = self.review_size > 0 and (len(self._review) < self.review_size or key > self._review[0][:2])
        cell = self._cells.setdefault((label, prediction), []) if label is not None else None
        cell_wanted = cell is not None and self.cell_size > 0 and (len(cell) < self.cell_size or key > cell[0][:2])
        if not (review_wanted or cell_wanted):
            return
        card = make_card(record, line, confidence, label, where)
        if review_wanted:
            keep(self._review, (*key, card), self.review_size)
        if cell_wanted:
            keep(cell, (*key, card), self.cell_size)

    def _count(self, cell: tuple[str, str]) -> None:
        self.matrix[cell] = self.matrix.get(cell, 0) + 1

    @property
    def review(self) -> list[Card]:
        """The review queue, lowest confidence first (ties in CSV order)."""
        return [entry[2] for entry in sorted(self._review, reverse=True)]

    def cell(self, label: str, prediction: str) -> list[Card]:
        return [entry[2] for entry in sorted(self._cells.get((label, prediction), []), reverse=True)]

    @property
    def labels_without_row(self) -> int:
        if self.labels is None:
            return 0
        return len(self.labels) - len(self.matched)


def keep(heap: list, entry: tuple, size: int) -> None:
    if len(heap) < size:
        heapq.heappush(heap, entry)
    else:
        heapq.heapreplace(heap, entry)


def make_card(record: list[str], line: int, confidence: float, label: str | None, where: Path) -> Card:
    try:
        probabilities = [float(value) for value in record[3:13]]
    except ValueError:
        raise ReportError(f"{where}: line {line}: p0..p9 are not all numbers") from None
    best = DIGITS.index(record[1])
    second = max((d for d in range(10) if d != best), key=probabilities.__getitem__)
    return Card(line, record[0], record[1], confidence, DIGITS[second], probabilities[second], label)


def scan_csv(predictions: Path, tally: Tally) -> Tally:
    """Stream the CSV through the tally; a file that is not a digits-infer CSV is a ReportError."""
    try:
        with predictions.open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
                if header != HEADER:
                    shown = "an empty file" if header is None else f"header {','.join(header)[:80]!r}"
                    raise ReportError(f"{predictions}: not a digits-infer CSV ({shown}; expected "
                                      "path,prediction,confidence,p0..p9,error)")
                for record in reader:
                    tally.add(record, reader.line_num, predictions)
            except csv.Error as exc:
                raise ReportError(f"{predictions}: line {reader.line_num}: not CSV ({exc})") from None
    except FileNotFoundError:
        raise ReportError(f"{predictions}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{predictions}: is a folder, not a CSV") from None
    except OSError as exc:
        raise ReportError(f"{predictions}: cannot read ({exc.strerror})") from None
    return tally
