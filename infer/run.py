"""`classify_paths`: the whole digits-infer job as a library call (the CLI only parses flags and prints)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from infer.backends import Classifier, choose_format, open_model
from infer.contract import read_manifest
from infer.csvout import CsvSink, Target, check_output, partial_path
from infer.discover import Walk, display_path
from infer.job import JobRecord, input_roots
from infer.options import InferOptions, cores
from infer.pipeline import Preparer, Row, classify_batches
from infer.stop import PAUSE_IMAGES_ENV, PAUSE_ROWS_ENV, Pause, StopFlag, Stopped, exit_code, stop_signals


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
    started = time.perf_counter()
    options.check()
    target = check_output(options.output, paths, options.resume, options.recursive)
    with stop_signals(stop) as stop:
        try:
            with stop.immediately():
                manifest = read_manifest(options.model_dir)
                fmt = choose_format(options.backend, options.torch_format, manifest)
                # The model's threads sleep while idle (no spinning), so it can have half the cores even though
                # the preprocessing threads take them all whenever the model waits (infer.pipeline.Balance).
                opened = open_model(manifest, options.backend, options.torch_format, options.device,
                                    max(1, cores() // 2))
            record = JobRecord(manifest.entry(fmt.name).sha256, options.backend,
                               fmt.name if options.backend == "torch" else None, opened.device,
                               options.result_options(), input_roots(paths))
            sink = CsvSink.open(target, manifest.labels, record, options.resume, options.excel_safe, stop)
        except Stopped as stopped:
            raise Interrupted(Summary(output=target.path), None, stopped.signum) from None
        summary = Summary(resumed=sink.kept, resumed_failed=sink.kept_failed, device=opened.device,
                          output=target.path)
        preparer = preparer or Preparer(options.max_pixels)
        return _run(paths, options, opened.classify, preparer, sink, summary, started, stop, on_batch)


def _run(paths: list[str], options: InferOptions, classify: Classifier, preparer: Preparer, sink: CsvSink,
         summary: Summary, started: float, stop: StopFlag, on_batch: Callable[[list[Row]], None] | None) -> Summary:
    """The loop: walk, preprocess, classify, write; then finish the CSV, or keep it for --resume and raise."""
    walk = Walk(paths, options.recursive)
    todo = (p for p in walk if os.fsencode(p) not in sink.done) if sink.done else iter(walk)
    images, rows_written = Pause(PAUSE_IMAGES_ENV, stop), Pause(PAUSE_ROWS_ENV, stop)
    batches = classify_batches(todo, classify, options.batch_size, options.workers, preparer, display_path, stop,
                               images.add if images else None)

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
