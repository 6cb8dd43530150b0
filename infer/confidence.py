"""The CSV's `confidence` column: one probability per row, the number a reviewer sorts by (infer.review ranks
the review queue by it, bench.ranking measures how many errors its lowest rows hold).

The rule, chosen by measurement (README, "Confidence"; bench/ranking.py):
- by default, the model's probability of the predicted digit. Neither the margin between the two best
  probabilities, nor their entropy, nor a blend of the two, nor the preprocessing statistics tried, put
  reliably more errors into the lowest rows; and it is already calibrated (ECE 0.15% on MNIST test, 0.41% on
  the style suite), so no rescaling is added;
- with `digits-infer --tta`, the mean probability of the predicted digit over the image and two zoomed views
  (infer.tta), handed over as an 11th value after p0..p9.
"""

from __future__ import annotations

from typing import Sequence

CLASSES = 10


def confidence(values: Sequence[float]) -> float:
    """values: the model's 10 probabilities, then the augmented views' confidence when --tta ran."""
    return values[CLASSES] if len(values) > CLASSES else max(values[:CLASSES])
