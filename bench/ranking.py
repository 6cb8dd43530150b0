"""The confidence ranking in `make bench`: a reviewer who checks only the lowest-confidence 5% (or 10%) of the
rows, what share of all the wrong answers do they see? And how well calibrated is the confidence (expected
calibration error, 15 equal bins)? Measured on MNIST test (the bench's PNGs) and on the style suite, with the
default confidence and with `--tta`, from the rows that digits-infer wrote into its CSV: its `confidence` and
`prediction` columns, against the labels, files matched by name.

Rows of failed files have no confidence; they are counted apart (the report lists them on their own). Ties in
confidence keep the CSV's order.

How the rule of infer.confidence was chosen: on a development suite made by the same style generators from the
5,000 training digits the model held out for validation (never from the style suite's test digits), the margin
between the two best probabilities, their entropy, blends of the two, fourteen preprocessing statistics (ink box,
stroke width, fill, grey levels, ...) combined by logistic regression, and test-time augmentations (1-px
shifts, ±10° rotations, zooms, dilation, erosion, blur) were compared; zooms of 0.9 and 1.1 gained most there,
without losing on MNIST (README, "Confidence").
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.styles import write_styles

BIN = Path(sys.executable).parent
LOWEST = (0.05, 0.10)
ECE_BINS = 15
MODES = {"default": [], "tta": ["--tta"]}


@dataclass(frozen=True)
class Ranked:
    """The classified rows of a CSV, in its order: confidence and whether the prediction was right."""

    confidence: np.ndarray
    correct: np.ndarray
    failed: int  # rows of files that failed (no confidence)


def read_ranked(predictions: Path, labels: Path) -> Ranked:
    with labels.open(newline="") as f:
        truth = {row["file"]: row["label"] for row in csv.DictReader(f)}
    confidence, correct, failed = [], [], 0
    with predictions.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["error"]:
                failed += 1
                continue
            confidence.append(float(row["confidence"]))
            correct.append(row["prediction"] == truth[Path(row["path"]).name])
    return Ranked(np.array(confidence, np.float64), np.array(correct, bool), failed)


def share_of_errors_in_lowest(confidence: np.ndarray, correct: np.ndarray, fraction: float) -> float:
    """Share of all errors found among the ceil(fraction × rows) lowest-confidence rows (1.0 without errors)."""
    errors = int((~correct).sum())
    if errors == 0:
        return 1.0
    lowest = np.argsort(confidence, kind="stable")[: math.ceil(fraction * len(confidence))]
    return int((~correct[lowest]).sum()) / errors


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ over equal-width bins of (rows in bin / rows) × |mean confidence − accuracy|; bins are (a, b], the
    first also holds 0."""
    if len(confidence) == 0:
        return 0.0
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(confidence[members].mean() - correct[members].mean())
    return total / len(confidence)


def figures(predictions: Path, labels: Path) -> dict[str, float]:
    ranked = read_ranked(predictions, labels)
    result = {"rows": len(ranked.confidence) + ranked.failed, "classified": len(ranked.confidence),
              "failed": ranked.failed, "errors": int((~ranked.correct).sum()),
              "accuracy": float(ranked.correct.mean()) if len(ranked.correct) else 0.0,
              "ece": expected_calibration_error(ranked.confidence, ranked.correct)}
    for fraction in LOWEST:
        result[f"lowest_{round(fraction * 100)}"] = share_of_errors_in_lowest(ranked.confidence, ranked.correct,
                                                                              fraction)
    return result


def suite_figures(folder: Path, model_dir: Path, out: Path, mode: str, batch_size: int = 256) -> dict[str, float]:
    """Run digits-infer (onnx, cpu) on the folder in this mode, then compute the figures from the CSV it wrote."""
    command = [str(BIN / "digits-infer"), str(folder), "--model-dir", str(model_dir), "-o", str(out),
               "--backend", "onnx", "--device", "cpu", "--batch-size", str(batch_size), "--quiet", *MODES[mode]]
    start = time.perf_counter()
    code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if code.returncode not in (0, 1):  # 1: some files failed, their rows are written
        raise SystemExit(f"bench: digits-infer {' '.join(MODES[mode])} failed on {folder}: {code.stderr.strip()}")
    result = figures(out, folder / "labels.csv")
    result["images_per_s"] = result["rows"] / seconds if seconds > 0 else 0.0
    return result


def measure(mnist_folder: Path, data_dir: Path, cache: Path, per_style: int, model_dir: Path, batch_size: int,
            scratch: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{suite: {mode: figures}} on the MNIST PNGs and, unless per_style is 0, on the style suite (cached)."""
    suites = {"mnist": mnist_folder}
    if per_style:
        suites["styles"] = cache / f"styles_{per_style}"
        write_styles(data_dir, suites["styles"], per_style)
    return {suite: {mode: suite_figures(folder, model_dir, scratch / f"ranking_{suite}_{mode}.csv", mode, batch_size)
                    for mode in MODES}
            for suite, folder in suites.items()}


def goals(ranking: dict) -> list[tuple[str, bool, str]]:
    rows = []
    for mode in MODES:
        mnist, styles = ranking["mnist"][mode], ranking.get("styles", {}).get(mode)
        if styles is not None:
            rows.append((f"styles, {mode}: lowest 5% hold ≥ 90% of errors", bool(styles["lowest_5"] >= 0.9),
                         f"{styles['lowest_5']:.1%}"))
            rows.append((f"ECE {mode}: ≤ 3% on the styles", bool(styles["ece"] <= 0.03), f"{styles['ece']:.2%}"))
        rows.append((f"ECE {mode}: ≤ 1% on MNIST", bool(mnist["ece"] <= 0.01), f"{mnist['ece']:.2%}"))
    return rows


def show(console, ranking: dict) -> None:
    from rich.table import Table

    table = Table(title="confidence ranking (from digits-infer's CSV rows; failed files apart)")
    for column in ("suite", "confidence", "rows", "errors", "failed", "errors in lowest 5%", "in lowest 10%",
                   "ECE (15 bins)", "images/s"):
        table.add_column(column, justify="left" if column in ("suite", "confidence") else "right")
    for suite, modes in ranking.items():
        for mode, f in modes.items():
            table.add_row(suite, mode, f"{f['rows']:,}", f"{f['errors']:,}", f"{f['failed']:,}",
                          f"{f['lowest_5']:.1%}", f"{f['lowest_10']:.1%}", f"{f['ece']:.2%}",
                          f"{f['images_per_s']:,.0f}")
    console.print(table)
