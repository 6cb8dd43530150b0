"""The confidence ranking: the bench's figures come from the rows digits-infer wrote; --tta keeps the model's
predictions and probabilities and changes only the confidence, to the mean over the zoomed views."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from bench.ranking import expected_calibration_error, share_of_errors_in_lowest, suite_figures
from infer.contract import read_manifest
from infer.preprocess import preprocess_bytes
from infer.tta import ZOOMS, zoomed
from tests.conftest import run_cli
from tests.review_run import SAMPLES


def from_csv(predictions, labels) -> dict[str, float]:
    """The figures recomputed straight from the CSV file with pandas, independently of bench.ranking."""
    frame = pd.read_csv(predictions, keep_default_na=False, dtype={"prediction": str})
    truth = pd.read_csv(labels, dtype={"label": str}).set_index("file")["label"]
    classified = frame[frame["error"] == ""].copy()
    classified["right"] = classified["prediction"].to_numpy() == \
        truth.loc[classified["path"].map(lambda p: p.rsplit("/", 1)[-1])].to_numpy()
    classified["confidence"] = classified["confidence"].astype(float)
    ordered = classified.sort_values("confidence", kind="stable")
    errors = int((~classified["right"]).sum())
    result = {"rows": len(frame), "classified": len(classified), "failed": len(frame) - len(classified),
              "errors": errors}
    for percent in (5, 10):
        lowest = ordered.head(math.ceil(percent / 100 * len(ordered)))
        result[f"lowest_{percent}"] = int((~lowest["right"]).sum()) / errors
    bins = pd.cut(classified["confidence"], np.linspace(0, 1, 16), include_lowest=True)
    grouped = classified.groupby(bins, observed=True).agg(n=("right", "size"), acc=("right", "mean"),
                                                          conf=("confidence", "mean"))
    result["ece"] = float((grouped["n"] * (grouped["acc"] - grouped["conf"]).abs()).sum() / len(classified))
    return result


@pytest.fixture(scope="module")
def folder(mnist_pngs, tmp_path_factory):
    """500 MNIST PNGs, the 32 samples and a file that fails, with labels: a real batch with errors and a failure."""
    where = tmp_path_factory.mktemp("ranking")
    labels = pd.read_csv(mnist_pngs / "labels.csv", dtype=str).head(500)
    for name in labels["file"]:
        shutil.copy(mnist_pngs / name, where / name)
    samples = pd.read_csv(SAMPLES / "labels.csv", dtype=str)
    for name in samples["file"]:
        shutil.copy(SAMPLES / name, where / name)
    (where / "broken.png").write_bytes(b"not an image")
    pd.concat([labels, samples, pd.DataFrame({"file": ["broken.png"], "label": ["3"]})]).to_csv(
        where / "labels.csv", index=False)
    return where


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "tta"])
def test_bench_figures_come_from_the_rows_the_csv_holds(folder, artifacts, tmp_path, mode):
    out = tmp_path / "ranking.csv"
    figures = suite_figures(folder, artifacts, out, mode)
    expected = from_csv(out, folder / "labels.csv")
    assert expected["rows"] == 533 and expected["failed"] == 1 and expected["errors"] > 0
    for key, value in expected.items():
        assert figures[key] == pytest.approx(value, abs=1e-12), key


def test_share_and_ece_on_a_ranking_worked_by_hand():
    confidence = np.array([0.95, 0.2, 0.99, 0.6, 0.9, 0.97, 0.35, 0.999, 0.92, 0.98])
    correct = np.array([True, False, True, False, True, True, True, True, False, True])
    # lowest 10% = 1 row (0.2: wrong) → 1 of 3 errors; lowest 50% = 0.2, 0.35, 0.6, 0.9, 0.92 → all 3.
    assert share_of_errors_in_lowest(confidence, correct, 0.10) == pytest.approx(1 / 3)
    assert share_of_errors_in_lowest(confidence, correct, 0.50) == 1.0
    assert share_of_errors_in_lowest(confidence, np.ones(10, bool), 0.05) == 1.0
    # Bins of 1/15: 0.2, 0.35 and 0.6 each alone; 0.9 and 0.92 share (0.867, 0.933]; the five from 0.95 up share
    # the last bin, all right. (rows, mean confidence, accuracy) per bin:
    top = (0.95 + 0.99 + 0.97 + 0.999 + 0.98) / 5
    by_bin = [(1, 0.2, 0.0), (1, 0.35, 1.0), (1, 0.6, 0.0), (2, 0.91, 0.5), (5, top, 1.0)]
    assert expected_calibration_error(confidence, correct) == pytest.approx(
        sum(n * abs(c - a) for n, c, a in by_bin) / 10)


@pytest.mark.slow
def test_tta_keeps_the_model_probabilities_and_averages_the_zoomed_views(folder, artifacts, tmp_path):
    plain, tta = tmp_path / "plain.csv", tmp_path / "tta.csv"
    for out, flags in ((plain, []), (tta, ["--tta"])):
        proc = run_cli("digits-infer", folder, "--model-dir", artifacts, "-o", out, "--quiet", *flags)
        assert proc.returncode == 1, proc.stderr  # broken.png
    a = pd.read_csv(plain, keep_default_na=False, dtype=str)
    b = pd.read_csv(tta, keep_default_na=False, dtype=str)
    columns = ["path", "prediction", *(f"p{d}" for d in range(10)), "error"]
    assert a[columns].equals(b[columns])
    ok = a["error"] == ""
    probabilities = a.loc[ok, [f"p{d}" for d in range(10)]].astype(float).to_numpy()
    assert np.allclose(a.loc[ok, "confidence"].astype(float), probabilities.max(1), atol=1e-6)
    confidence = b.loc[ok, "confidence"].astype(float).to_numpy()
    assert ((confidence >= 0) & (confidence <= 1)).all() and not np.allclose(confidence, probabilities.max(1))
    # Recomputed apart from the pipeline: the model on each preprocessed file and its two zoomed views.
    model = read_manifest(artifacts).trusted_file("onnx")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    frames = np.stack([preprocess_bytes(Path(p).read_bytes(), 10**8) for p in a.loc[ok, "path"]])
    images = frames.astype(np.float32)[:, None] / 255
    views = [session.run(None, {"image": v})[0] for v in (images, *(zoomed(images, s) for s in ZOOMS))]
    predicted = views[0].argmax(1)
    expected = np.mean([v[np.arange(len(v)), predicted] for v in views], 0)
    assert np.abs(confidence - expected).max() < 1e-5


def test_zoom_is_a_bilinear_zoom_about_the_centre(mnist_pngs):
    frames = np.stack([cv2.imread(str(mnist_pngs / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE) for i in range(50)])
    images = frames.astype(np.float32)[:, None] / 255
    assert np.array_equal(zoomed(images, 1.0), images)
    for scale in ZOOMS:
        matrix = cv2.getRotationMatrix2D((13.5, 13.5), 0, scale)
        opencv = np.stack([cv2.warpAffine(f, matrix, (28, 28), flags=cv2.INTER_LINEAR) for f in images[:, 0]])
        assert np.abs(zoomed(images, scale)[:, 0] - opencv).max() < 0.02  # OpenCV rounds its weights to 1/32
