"""`digits-report`: flags → ReportOptions → infer.review.report_main(). No logic lives here; every default comes
from ReportOptions."""

from __future__ import annotations

from pathlib import Path

import typer

from infer.options import REPORT_EXIT_HELP, ReportOptions

DEFAULTS = ReportOptions()
app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.command(help="Write one self-contained HTML page to review a digits-infer CSV: summary, charts, the "
                  "lowest-confidence images first, failed files, and with --labels accuracy and a confusion matrix. "
                  f"Type corrections on the page and download them as corrections.csv.\n\n{REPORT_EXIT_HELP}")
def main(
    predictions: Path = typer.Argument(..., help="CSV written by digits-infer.", show_default=False),
    labels: Path | None = typer.Option(DEFAULTS.labels, help="file,label CSV (matched by path or file name)."),
    output: Path = typer.Option(DEFAULTS.output, "--output", "-o", help="HTML page to write."),
    review: int = typer.Option(DEFAULTS.review, min=0, help="Lowest-confidence images shown as cards."),
    cell_images: int = typer.Option(DEFAULTS.cell_images, min=0, help="Images kept per confusion-matrix cell."),
    failed_listed: int = typer.Option(DEFAULTS.failed_listed, min=0, help="Failed files listed by name."),
    root: Path | None = typer.Option(DEFAULTS.root, help="Folder the CSV's relative paths start from "
                                        "[default: the current folder, then the CSV's folder]."),
) -> None:
    from infer.review import report_main

    options = ReportOptions(output=output, labels=labels, review=review, cell_images=cell_images,
                            failed_listed=failed_listed, root=root)
    raise typer.Exit(report_main(predictions, options))


def run() -> None:
    app()
