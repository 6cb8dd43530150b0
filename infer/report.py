"""What the user sees on stderr: a rich progress bar with images/s, then a one-line summary or error."""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from infer.artifacts import ModelError
from infer.backends import DeviceError
from infer.csvout import OutputError
from infer.run import InferOptions, Interrupted, Summary, classify_paths


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} images/s")


def describe(summary: Summary) -> str:
    where = "stdout" if summary.output is None else str(summary.output)
    resumed = f", {summary.resumed} kept from before" if summary.resumed else ""
    return (f"classified {summary.classified}, failed {summary.failed}, skipped {summary.skipped} non-image files"
            f"{resumed}; {summary.images_per_second:,.0f} images/s on {summary.device}; wrote {where}")


def run_with_progress(paths: list[str], quiet: bool = False, **options) -> int:
    """Run classify_paths with a progress bar; returns the process exit code (documented in the CLI help)."""
    console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    try:
        if quiet:
            summary = classify_paths(paths, InferOptions(**options))
        else:
            columns = (SpinnerColumn(), TextColumn("{task.completed:,.0f} images"), RateColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task("classify", total=None)
                summary = classify_paths(paths, InferOptions(**options),
                                         on_batch=lambda rows: progress.advance(task, len(rows)))
    except (ModelError, DeviceError, OutputError) as exc:
        console.print(f"digits-infer: error: {exc}")
        return 2
    except KeyboardInterrupt:  # before the first image: nothing was written
        console.print("digits-infer: interrupted before classifying anything")
        return 130
    except Interrupted as stop:
        where = f"kept in {stop.partial}" if stop.partial else "already written"
        console.print(f"digits-infer: interrupted after {stop.summary.classified + stop.summary.failed} images; "
                      f"rows so far are {where}. Run the same command with --resume to finish.")
        return 130
    if not quiet:
        console.print(describe(summary))
    return 1 if summary.any_failed else 0
