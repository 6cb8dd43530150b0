"""A rich progress bar per epoch and one summary line per epoch, on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trainer.train import EpochRecord


class RichReporter:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task = None

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        self._progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=True, disable=not self.console.is_terminal,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps)

    def step(self) -> None:
        self._progress.advance(self._task)

    def epoch_finished(self, record: EpochRecord) -> None:
        self._progress.stop()
        val = "-" if record.val_accuracy is None else f"{record.val_accuracy:.4f}"
        self.console.print(
            f"epoch {record.epoch:3d}  train loss {record.train_loss:.4f}  val acc {val}  {record.seconds:.1f}s",
            highlight=False,
        )
