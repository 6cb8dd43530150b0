"""The rich progress bar of digits-infer: images so far, images/s, elapsed time, on stderr."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} images/s")


@contextmanager
def progress_bar() -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; the bar disappears when the block ends, leaving room for the summary line.
    Shown on a terminal only: a log file gets the summary alone."""
    columns = (SpinnerColumn(), TextColumn("{task.completed:,.0f} images"), RateColumn(), TimeElapsedColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("classify", total=None)
        yield lambda count: progress.advance(task, count)
