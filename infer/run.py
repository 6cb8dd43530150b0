"""`classify_paths`: the whole digits-infer job as a library call (the CLI only parses flags and prints)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from infer.backends import choose_format, open_model
from infer.contract import Manifest, read_manifest
from infer.csvout import CsvSink, OutputError, Target, check_output, partial_path
from infer.discover import Walk, display_path
from infer.job import JobRecord, input_roots
from infer.options import InferOptions, ReportOptions, cores
from infer.pipeline import Preparer, Row, classify_batches
from infer.stop import PAUSE_IMAGES_ENV, PAUSE_ROWS_ENV, Pause, StopFlag, Stopped, exit_code, stop_signals
from infer.uris import Inputs, refuse_uris


@dataclass
class Summary:
    classified: int = 0
    failed: int = 0
    skipped: int = 0  # non-image files inside the folders
    skipped_folders: int = 0  # subfolders left out by --no-recursive
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

    @property
    def rows(self) -> int:
        """Rows in the CSV: none means no image file was found under the paths."""
        return self.classified + self.failed + self.resumed


class Interrupted(Exception):
    """SIGINT or SIGTERM: finished rows are kept in the partial file; carries the summary up to that point."""

    def __init__(self, summary: Summary, partial: Path | None, signum: int) -> None:
        super().__init__("interrupted")
        self.summary, self.partial, self.signum = summary, partial, signum

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


def classify_paths(paths: list[str], options: InferOptions,
                   on_batch: Callable[[list[Row]], None] | None = None,
                   preparer: Preparer | None = None, stop: StopFlag | None = None) -> Summary:
    """Classify every image under `paths` into options.output. Raises OptionError/ModelError/DeviceError/
    OutputError before any work when an option, the model, the device or the output is unusable; OutputError
    when the output fails during the run; Interrupted on SIGINT/SIGTERM (or when `stop` is requested)."""
    started, started_at = time.perf_counter(), datetime.now(timezone.utc)
    options.check()
    check_report_path(options)
    target = check_output(options.output, paths, options.resume, options.recursive)
    if options.engine != "ray":
        refuse_uris(paths)
    with stop_signals(stop) as stop:
        producer: Producer | None = None
        try:
            with stop.immediately():
                manifest = read_manifest(options.model_dir)
                fmt = choose_format(options.backend, options.torch_format, manifest)
                producer = open_producer(manifest, options, paths, preparer, stop)
            record = JobRecord(manifest.entry(fmt.name).sha256, options.backend,
                               fmt.name if options.backend == "torch" else None, producer.device,
                               options.result_options(), input_roots(paths))
            sink = CsvSink.open(target, manifest.labels, record, options.resume, options.excel_safe, stop)
        except Stopped as stopped:
            if producer is not None:
                producer.close()
            raise Interrupted(Summary(output=target.path), None, stopped.signum) from None
        except BaseException:
            if producer is not None:
                producer.close()
            raise
        summary = Summary(resumed=sink.kept, resumed_failed=sink.kept_failed, device=producer.device,
                          output=target.path)
        _run(producer, sink, summary, started, stop, on_batch)
    if options.report is not None:
        from infer.review import RunFacts, write_report  # the page's modules load only when a page is asked for

        facts = RunFacts("this run", record.model_sha256, f"{options.backend} ({fmt.name})", started_at,
                         datetime.now(timezone.utc), summary.images_per_second, summary.skipped)
        summary.report = write_report(target.path, ReportOptions(output=options.report,
                                                                 max_pixels=options.max_pixels), facts).output
    return summary


@dataclass
class Producer:
    """Where row batches come from: this process's threads (infer.pipeline) or Ray Data actors
    (infer.ray_engine). Everything else of a run (walk, sink, job record, stops) is the same for both."""

    device: str
    walk: Walk | Inputs
    batches: Callable[[Iterator[str]], Iterator[list[Row]]]
    close: Callable[[], None] = lambda: None


def open_producer(manifest: Manifest, options: InferOptions, paths: list[str], preparer: Preparer | None,
                  stop: StopFlag) -> Producer:
    """Open the model (or connect to Ray and ship it) before anything is written."""
    if options.engine == "ray":
        from infer.ray_engine import open_ray

        engine = open_ray(manifest, options, paths)
        return Producer(engine.device, Inputs(paths, options.recursive),
                        lambda todo: engine.batches(todo, stop), engine.close)
    # The model's threads sleep while idle (no spinning), so it can have half the cores even though the
    # preprocessing threads take them all whenever the model waits for them (infer.pipeline.Balance).
    opened = open_model(manifest, options.backend, options.torch_format, options.device, max(1, cores() // 2))
    classify = opened.classify
    if options.tta:
        from infer.tta import with_tta  # the zoomed views' module loads only when they are asked for

        classify = with_tta(classify)
    preparer = preparer or Preparer(options.max_pixels)
    images = Pause(PAUSE_IMAGES_ENV, stop)

    def batches(todo: Iterator[str]) -> Iterator[list[Row]]:
        return classify_batches(todo, classify, options.batch_size, options.workers, preparer, display_path, stop,
                                images.add if images else None)

    return Producer(opened.device, Walk(paths, options.recursive), batches)


def _run(producer: Producer, sink: CsvSink, summary: Summary, started: float, stop: StopFlag,
         on_batch: Callable[[list[Row]], None] | None) -> Summary:
    """The loop: walk, classify, write; then finish the CSV, or keep it for --resume and raise."""
    walk = producer.walk
    todo = (p for p in walk if os.fsencode(p) not in sink.done) if sink.done else iter(walk)
    rows_written = Pause(PAUSE_ROWS_ENV, stop)
    batches = producer.batches(todo)

    def counted() -> Summary:
        summary.skipped, summary.skipped_folders = walk.skipped, walk.skipped_folders
        summary.seconds = time.perf_counter() - started
        return summary

    try:
        for rows in batches:
            sink.write(rows)
            failed = sum(1 for r in rows if r.error)
            summary.failed += failed
            summary.classified += len(rows) - failed
            if on_batch is not None:
                on_batch(rows)
            if rows_written:
                rows_written.add(len(rows))
    except Stopped as stopped:  # a second signal: stop at once; rows written so far are kept
        batches.close()
        sink.stop(counted().skipped)
        raise Interrupted(summary, partial_of(sink.target), stopped.signum) from None
    except BaseException:
        batches.close()
        sink.stop(counted().skipped)
        raise
    if stop.requested:
        sink.stop(counted().skipped)
        raise Interrupted(summary, partial_of(sink.target), stop.signum)
    counted()
    sink.finish(summary.images_per_second, summary.skipped)
    return summary


def partial_of(target: Target) -> Path | None:
    return None if target.stream else partial_path(target.path)


def check_report_path(options: InferOptions) -> None:
    """--report reads the finished CSV back, so it needs one, and must not overwrite it."""
    if options.report is None:
        return
    if options.output is None:
        raise OutputError("--report needs an output file (-o PATH), not stdout")
    if options.report.resolve() == Path(options.output).resolve():
        raise OutputError(f"--report {options.report}: is the CSV's own path; choose another file")
