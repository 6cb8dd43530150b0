"""`classify_paths`: the whole digits-infer job as a library call (the CLI only parses flags and prints)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from infer.backends import choose_format, open_model
from infer.contract import read_manifest
from infer.csvout import CsvSink, OutputError, partial_path
from infer.discover import Walk, display_path
from infer.options import InferOptions, ReportOptions, cores
from infer.pipeline import Preparer, Row, classify_batches
from infer.review_data import RunFacts
from infer.tta import with_tta
from infer.uris import Inputs, refuse_uris


@dataclass
class Summary:
    classified: int = 0
    failed: int = 0
    skipped: int = 0
    resumed: int = 0  # rows kept from an earlier run
    resumed_failed: int = 0
    seconds: float = 0.0
    device: str = ""
    output: Path | None = None
    report: Path | None = None  # the review page written at the end (--report)

    @property
    def images_per_second(self) -> float:
        return (self.classified + self.failed) / self.seconds if self.seconds > 0 else 0.0

    @property
    def any_failed(self) -> bool:
        return self.failed + self.resumed_failed > 0


class Interrupted(Exception):
    """Ctrl-C: rows so far are kept in the partial file; carries the summary up to that point."""

    def __init__(self, summary: Summary, partial: Path | None) -> None:
        super().__init__("interrupted")
        self.summary, self.partial = summary, partial


def classify_paths(paths: list[str], options: InferOptions,
                   on_batch: Callable[[list[Row]], None] | None = None,
                   preparer: Preparer | None = None) -> Summary:
    """Classify every image under `paths` into options.output. Raises ModelError/DeviceError/OutputError
    before any work when the model, device or output is unusable, and Interrupted on Ctrl-C."""
    started, started_at = time.perf_counter(), datetime.now(timezone.utc)
    check_report_path(options)
    manifest = read_manifest(options.model_dir)
    if options.engine == "ray":  # the same job on Ray Data actors: only the producer of row batches differs
        from infer.ray_engine import open_ray

        engine = open_ray(manifest, options, paths)  # connects, and checks the model, before anything is written
        walk, produce, device = Inputs(paths, options.recursive), engine.batches, engine.device
    else:
        refuse_uris(paths)
        # The model's threads sleep while idle (no spinning), so it can have half the cores even though the
        # preprocessing threads take them all whenever the model waits for them (infer.pipeline.Balance).
        opened = open_model(manifest, options.backend, options.torch_format, options.device, max(1, cores() // 2))
        walk, device = Walk(paths, options.recursive), opened.device
        classify = with_tta(opened.classify) if options.tta else opened.classify

        def produce(todo: Iterator[str]) -> Iterator[list[Row]]:
            return classify_batches(todo, classify, options.batch_size, options.workers,
                                    preparer or Preparer(options.max_pixels), display_path)

    sink = CsvSink(options.output, manifest.labels, options.resume).open()
    summary = Summary(resumed=len(sink.done), resumed_failed=sink.previous_errors, device=device,
                      output=options.output)
    todo = (p for p in walk if display_path(p) not in sink.done) if sink.done else iter(walk)
    batches = produce(todo)
    try:
        for rows in batches:
            sink.write(rows)
            failed = sum(1 for r in rows if r.error)
            summary.failed += failed
            summary.classified += len(rows) - failed
            if on_batch is not None:
                on_batch(rows)
    except KeyboardInterrupt:
        batches.close()
        sink.close_partial()
        summary.skipped, summary.seconds = walk.skipped, time.perf_counter() - started
        raise Interrupted(summary, None if options.output is None else partial_path(options.output)) from None
    sink.finish()
    summary.skipped, summary.seconds = walk.skipped, time.perf_counter() - started
    if options.report is not None:
        from infer.review import write_report  # the page's modules load only when a page is asked for

        fmt = choose_format(options.backend, options.torch_format, manifest)
        facts = RunFacts("this run", manifest.entry(fmt.name).sha256, f"{options.backend} ({fmt.name})", started_at,
                         datetime.now(timezone.utc), summary.images_per_second, summary.skipped)
        summary.report = write_report(options.output, ReportOptions(output=options.report,
                                                                     max_pixels=options.max_pixels), facts).output
    return summary


def check_report_path(options: InferOptions) -> None:
    """--report reads the finished CSV back, so it needs one, and must not overwrite it."""
    if options.report is None:
        return
    if options.output is None:
        raise OutputError("--report needs an output file (-o PATH), not stdout")
    if options.report.resolve() == options.output.resolve():
        raise OutputError(f"--report {options.report}: is the CSV's own path; choose another file")

