"""Real batches for the review report's tests: real MNIST PNGs and the samples, classified by the real
digits-infer, with a labels file; and the numbers a reviewer should see, computed straight from the CSV."""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO, run_cli

SAMPLES = REPO / "samples"


@dataclass(frozen=True)
class Batch:
    folder: Path
    predictions: Path
    labels: Path


def make_batch(where: Path, artifacts: Path, mnist_pngs: Path, mnist: int, samples: int = 32,
               extra: dict[str, bytes] | None = None) -> Batch:
    """`mnist` MNIST PNGs and `samples` samples copied into where/batch (plus `extra` files), labels in
    where/labels.csv, classified into where/predictions.csv by digits-infer."""
    folder = where / "batch"
    folder.mkdir(parents=True)
    rows = []
    for source, count in ((mnist_pngs, mnist), (SAMPLES, samples)):
        with (source / "labels.csv").open(newline="") as f:
            for row in list(csv.DictReader(f))[:count]:
                shutil.copy(source / row["file"], folder / row["file"])
                rows.append((row["file"], row["label"]))
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)
    labels = where / "labels.csv"
    with labels.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "label"])
        writer.writerows(rows)
    predictions = where / "predictions.csv"
    proc = run_cli("digits-infer", folder, "--model-dir", artifacts, "-o", predictions, "--quiet")
    assert proc.returncode in (0, 1), proc.stderr
    return Batch(folder, predictions, labels)


def csv_rows(predictions: Path) -> list[dict]:
    with predictions.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def truth(labels: Path) -> dict[str, str]:
    with labels.open(newline="") as f:
        return {row["file"]: row["label"] for row in csv.DictReader(f)}


def labelled_rows(batch: Batch) -> list[tuple[int, dict, str]]:
    """(index in the CSV, row, label) for every row whose file name has a label."""
    answers = truth(batch.labels)
    return [(i, row, answers[Path(row["path"]).name]) for i, row in enumerate(csv_rows(batch.predictions))
            if Path(row["path"]).name in answers]


def page_data(report: Path) -> dict:
    """The JSON block the page's script reads."""
    found = re.search(r'<script id="report-data" type="application/json">(.*?)</script>', report.read_text(), re.S)
    assert found, "no data block in the page"
    return json.loads(found.group(1))


def report(batch: Batch, out: Path, *args: str, **kwargs):
    return run_cli("digits-report", batch.predictions, "-o", out, *args, **kwargs)
