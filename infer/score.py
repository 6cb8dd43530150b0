"""Score a predictions CSV against a labels CSV (file,label): `python -m infer.score PRED LABELS`.

Files are matched by name, so it works for samples/ and for the MNIST PNG folders the tests and bench write.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def accuracy(predictions: Path, labels: Path) -> tuple[int, int]:
    """(correct, total) over the labelled files; a missing or failed prediction counts as wrong."""
    with labels.open(newline="") as f:
        truth = {row["file"]: row["label"] for row in csv.DictReader(f)}
    with predictions.open(newline="", encoding="utf-8") as f:
        predicted = {Path(row["path"]).name: row["prediction"] for row in csv.DictReader(f)}
    correct = sum(predicted.get(name) == label for name, label in truth.items())
    return correct, len(truth)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m infer.score PREDICTIONS.csv LABELS.csv")
    correct, total = accuracy(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"accuracy {correct}/{total} = {correct / max(total, 1):.1%} ({sys.argv[1]} against {sys.argv[2]})")


if __name__ == "__main__":
    main()
