"""What the user sees on stderr: the progress bar (infer.progress), then one summary, warning or error line.

The library's errors say what is wrong; this is where they get the name of the flag that caused them, and
where each outcome becomes its documented exit code (infer.options EXIT_*).
"""

from __future__ import annotations

import signal
import sys

from infer.contract import ArtifactError
from infer.csvout import OutputError
from infer.devices import DeviceError
from infer.extras import MissingExtra
from infer.options import (
    EXIT_INTERRUPTED,
    EXIT_NO_IMAGES,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    InferOptions,
    OptionError,
)
from infer.run import Interrupted, Summary, classify_paths


def loaded_error(module: str, name: str) -> tuple[type[Exception], ...]:
    """The exception class `name` of `module` if that module is loaded, else none (an except that catches
    nothing): the Ray engine and the review page are imported only when a run uses them, and one not imported
    cannot raise."""
    loaded = sys.modules.get(module)
    return (getattr(loaded, name),) if loaded is not None else ()


def describe(summary: Summary) -> str:
    where = "stdout" if summary.output is None else str(summary.output)
    resumed = f", {summary.resumed} kept from before" if summary.resumed else ""
    report = f"; review page {summary.report}" if summary.report else ""
    return (f"classified {summary.classified}, failed {summary.failed}, skipped {summary.skipped} non-image files"
            f"{_folders(summary)}{resumed}; {summary.images_per_second:,.0f} images/s on {summary.device}; "
            f"wrote {where}{report}")


def _folders(summary: Summary) -> str:
    count = summary.skipped_folders
    return f" and {count} subfolder{'s' * (count != 1)} (--no-recursive)" if count else ""


def no_images(paths: list[str], summary: Summary) -> str:
    where = "stdout" if summary.output is None else str(summary.output)
    return (f"digits-infer: warning: no image files found under {' '.join(paths)} (skipped {summary.skipped} "
            f"non-image files{_folders(summary)}); wrote a header-only CSV to {where}")


def stopped(stop: Interrupted) -> str:
    how = "terminated (SIGTERM)" if stop.signum == signal.SIGTERM else "interrupted"
    done = stop.summary.classified + stop.summary.failed
    if stop.partial is None and done == 0:
        return f"digits-infer: {how} before classifying anything"
    where = f"kept in {stop.partial}" if stop.partial else "already written"
    return (f"digits-infer: {how} after {done} images; rows so far are {where}. "
            "Run the same command with --resume to finish.")


def run_with_progress(paths: list[str], options: InferOptions, quiet: bool = False) -> int:
    """Run classify_paths with a progress bar; returns the process exit code (documented in the CLI help)."""
    try:
        if quiet:  # rich is not even imported: batch jobs start faster
            summary = classify_paths(paths, options)
        else:
            from infer.progress import progress_bar

            with progress_bar() as advance:
                summary = classify_paths(paths, options, on_batch=lambda rows: advance(len(rows)))
    except DeviceError as exc:
        say(f"digits-infer: error: --device {options.device}: {exc}")
        return EXIT_USAGE
    except (ArtifactError, OutputError, MissingExtra, OptionError, *loaded_error("infer.ray_engine", "EngineError")) \
            as exc:
        say(f"digits-infer: error: {exc}")
        return EXIT_USAGE
    except loaded_error("infer.review_data", "ReportError") as exc:  # the CSV is complete; only the page failed
        say(f"digits-infer: error: --report: {exc} ({options.output} is complete)")
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the run installed its handlers: nothing was written
        say("digits-infer: interrupted before classifying anything")
        return EXIT_INTERRUPTED
    except Interrupted as stop:
        say(stopped(stop))
        return stop.exit_code
    if summary.rows == 0:
        say(no_images(paths, summary))
        return EXIT_NO_IMAGES
    if not quiet:
        say(describe(summary))
    return EXIT_SOME_FAILED if summary.any_failed else 0


def say(line: str) -> None:
    """One plain line on stderr (paths may hold brackets, so no rich markup here)."""
    print(line, file=sys.stderr, flush=True)
