"""The review report: one self-contained HTML page to check a digits-infer batch by eye, doubtful images first.

`write_report` streams the CSV once (infer.review_data), draws pictures only for the review queue and the
confusion cells (infer.review_images), and writes the page (infer.review_render) atomically. Used by
`digits-report` (infer.review_cli) and by `digits-infer --report` (infer.run). Needs only the base install.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from infer.options import EXIT_OK, EXIT_USAGE, ReportOptions
from infer.review_data import Card, ReportError, RunFacts, Tally, read_job, read_labels, scan_csv
from infer.review_images import Pictures, pictures
from infer.review_render import render, when

__all__ = ["Built", "ReportError", "RunFacts", "report_main", "write_report"]


@dataclass(frozen=True)
class Built:
    output: Path
    bytes: int
    rows: int
    cards: int  # cards in the review queue
    pictures: int  # files drawn (review queue and confusion cells together)
    seconds: float


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_paths(predictions: Path, options: ReportOptions) -> None:
    """The page must never overwrite what the user gave it."""
    for given, what in ((predictions, "the predictions CSV"), (options.labels, "the labels file")):
        if given is not None and same_file(options.output, given):
            raise ReportError(f"{options.output}: is {what}; choose another output (-o)")
    if options.output.is_dir():
        raise ReportError(f"{options.output}: is a folder; give the page's file name (-o report.html)")


def shown_cards(tally: Tally) -> list[Card]:
    """Every card the page holds: the review queue and the kept members of each confusion cell."""
    cards = {card.line: card for card in tally.review}
    for label, prediction in list(tally.matrix):
        cards.update((card.line, card) for card in tally.cell(label, prediction))
    return list(cards.values())


def write_atomic(path: Path, text: str) -> int:
    data = text.encode("utf-8")
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportError(f"{path}: cannot write the report ({exc.strerror})") from None
    return len(data)


def write_report(predictions: Path, options: ReportOptions, facts: RunFacts | None = None) -> Built:
    """Build the page for `predictions` into options.output. `facts` come from the run itself
    (digits-infer --report); without them they are read from the job sidecar beside the CSV, when present."""
    started = time.perf_counter()
    check_paths(predictions, options)
    labels = read_labels(options.labels) if options.labels is not None else None
    tally = scan_csv(predictions, Tally(options.review, options.cell_images, options.failed_listed, labels))
    facts_note = ""
    if facts is None:
        facts, facts_note = read_job(predictions)
    if facts is not None and facts.started is not None:
        reference, reference_text = facts.started.timestamp(), f"the run's start ({when(facts.started)})"
    else:  # no start time: a file newer than the finished CSV has certainly changed since the run
        reference = predictions.stat().st_mtime
        reference_text = f"the CSV was written ({when(datetime.fromtimestamp(reference, timezone.utc))})"
    roots = [options.root] if options.root is not None else list(dict.fromkeys([Path(), predictions.parent]))
    paths = list(dict.fromkeys(card.path for card in shown_cards(tally)))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # OpenCV releases the GIL
        drawn: dict[str, Pictures] = dict(zip(paths, pool.map(
            lambda path: pictures(path, roots, options.max_pixels, reference), paths), strict=True))
    html = render(tally, predictions, facts, facts_note, reference_text, drawn, datetime.now(timezone.utc))
    size = write_atomic(options.output, html)
    return Built(options.output, size, tally.rows, len(tally.review), len(drawn), time.perf_counter() - started)


def report_main(predictions: Path, options: ReportOptions) -> int:
    """digits-report: write the page and say so in one line on stderr; returns the exit code."""
    try:
        built = write_report(predictions, options)
    except ReportError as exc:
        print(f"digits-report: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    print(f"digits-report: wrote {built.output} ({built.bytes / 1e6:.2f} MB): {built.rows:,} rows, "
          f"{built.cards:,} cards to review, {built.pictures:,} images drawn, in {built.seconds:.1f} s",
          file=sys.stderr, flush=True)
    return EXIT_OK
