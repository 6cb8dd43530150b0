"""The artifact contract and the defects found by reading the code (issue 11), each on real exports and files."""

from __future__ import annotations

import csv
import json
import shutil
import warnings

import cv2
import numpy as np
import pytest

from infer.backends import open_model
from infer.contract import read_manifest
from infer.options import DEFAULT_MAX_PIXELS, InferOptions
from infer.run import classify_paths
from tests.conftest import REPO, assert_clean_failure, run_cli

SAMPLES = REPO / "samples"


@pytest.mark.slow
def test_verify_says_a_missing_checkpoint_is_missing(artifacts, data_dir, tmp_path):
    proc = run_cli("digits-export", "verify", artifacts, "--checkpoint", tmp_path / "missing.safetensors",
                   "--data-dir", data_dir, "--parity-samples", "50")
    assert_clean_failure(proc, 2, "missing.safetensors", "not found")
    assert "sha256" not in proc.stderr


@pytest.mark.slow
def test_verify_finds_the_source_checkpoint_from_any_working_folder(artifacts, data_dir, tmp_path):
    """The manifest stores the checkpoint relative to itself: run from elsewhere, verify still uses it."""
    manifest = json.loads((artifacts / "manifest.json").read_text())
    assert not manifest["source"]["checkpoint"].startswith("/")
    proc = run_cli("digits-export", "verify", artifacts.resolve(), "--data-dir", data_dir.resolve(),
                   "--parity-samples", "100", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "reference eager/cpu" in " ".join(proc.stdout.split()) and "note" not in proc.stderr


def test_predictions_are_written_through_the_manifest_labels(artifacts, tmp_path):
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["labels"] = words
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(copy).labels == tuple(words)
    out = tmp_path / "p.csv"
    plain = tmp_path / "plain.csv"
    classify_paths([str(SAMPLES)], InferOptions(model_dir=copy, output=out))
    classify_paths([str(SAMPLES)], InferOptions(model_dir=artifacts, output=plain))
    with out.open(newline="") as f, plain.open(newline="") as g:
        named, digits = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert [r["prediction"] for r in named] == [words[int(r["prediction"])] for r in digits]


@pytest.mark.slow
def test_a_library_caller_may_raise_the_pixel_limit(artifacts, data_dir, tmp_path):
    """OpenCV reads its own pixel cap once, at import; the run's limit is enforced from the header instead, so a
    caller asking for more than the default gets a valid large image classified, not 'not a readable image'."""
    from trainer.data import load_split

    digit = load_split(data_dir, train=False).subset(1).images[0].numpy()
    page = np.full((10000, 12000), 255, np.uint8)  # 120 MP, over the default limit of 100 MP
    page[3000:7000, 4000:8000] = 255 - cv2.resize(digit, (4000, 4000))
    cv2.imwrite(str(tmp_path / "big.png"), page)
    out = tmp_path / "p.csv"
    refused = classify_paths([str(tmp_path / "big.png")], InferOptions(model_dir=artifacts, output=out))
    assert refused.failed == 1 and f"over the limit of {DEFAULT_MAX_PIXELS}" in out.read_text()
    summary = classify_paths([str(tmp_path / "big.png")],
                             InferOptions(model_dir=artifacts, output=out, max_pixels=2 * DEFAULT_MAX_PIXELS))
    assert summary.classified == 1 and not summary.any_failed


def test_only_torchscripts_own_deprecation_warning_is_silenced(artifacts, monkeypatch):
    import torch

    real_load = torch.jit.load

    def load_with_other_warnings(*args, **kwargs):
        warnings.warn("torch.jit.load is deprecated", FutureWarning, stacklevel=2)
        warnings.warn("some other library's future change", FutureWarning, stacklevel=2)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", load_with_other_warnings)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        open_model(read_manifest(artifacts), "torch", "torchscript", "cpu", 1)
    messages = [str(w.message) for w in seen if issubclass(w.category, FutureWarning)]
    assert "some other library's future change" in messages
    assert not any("torch.jit" in m for m in messages)
