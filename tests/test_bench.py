import json
import subprocess
import sys

import pytest
import torch

from bench.arith import growth, pipeline_limit, rate, ratio
from bench.run import main
from tests.conftest import REPO


def test_pipeline_limit_is_the_harmonic_combination():
    assert pipeline_limit(100.0, 100.0) == pytest.approx(50.0)
    assert pipeline_limit(58000.0, 86000.0) == pytest.approx(1 / (1 / 58000 + 1 / 86000))
    assert pipeline_limit(0.0, 100.0) == 0.0


def test_rates_ratios_and_growth():
    assert rate(1000, 2.0) == 500.0 and rate(0, 1.0) == 0.0 and rate(10, 0.0) == 0.0
    assert ratio(30.0, 10.0) == 3.0 and ratio(1.0, 0.0) == 0.0
    assert growth(100.0, 115.0) == pytest.approx(0.15) and growth(0.0, 5.0) == 0.0


@pytest.mark.slow
def test_bench_smoke_run_on_200_images(artifacts, data_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["--images", "200", "--naive-images", "100", "--model-dir", str(artifacts), "--data-dir", str(data_dir),
          "--cache", str(tmp_path / "cache"), "--memory-files", "400", "--per-style", "8", "--no-large",
          "--repeats", "1", "--no-train",
          "--json", str(out)])
    results = json.loads(out.read_text())
    assert results["images"] == 200 and results["naive_images_per_s"] > 0
    for backend in ("onnx", "torch"):
        row = results["backends"][backend]
        assert row["model_images_per_s"] > 0 and row["end_to_end_images_per_s"] > 0
        assert row["limit_images_per_s"] == pytest.approx(
            pipeline_limit(results["decode_preprocess_images_per_s"], row["model_images_per_s"]))
        assert row["vs_naive"] == pytest.approx(row["end_to_end_images_per_s"] / results["naive_images_per_s"])
    formats = results["formats"]
    assert list(formats) == ["onnx", "pt2", "torchscript"]  # what the session export lists, ONNX first
    for row in formats.values():
        assert row["model_images_per_s"] > 0 and row["end_to_end_images_per_s"] > 0
        assert 0 < row["load_s"] < 60 and 0 < row["warm_load_s"] < 60
        assert row["mb"] > 1 and row["device"] == "cpu"
    assert results["memory"]["files_large"] == 400 and results["memory"]["rss_mib_small"] > 0
    assert results["startup"]["python_import_torch_s"] > 0
    suite = results["styles"]
    assert suite["images"] == 80 and suite["end_to_end_images_per_s"] > 0
    assert suite["decode_preprocess_images_per_s"] > 0
    assert set(suite["accuracy"]) == {"all", "mnist", "paper", "bold", "thin", "lowres", "cell", "photo", "colour",
                                      "faint", "specks"}
    assert suite["accuracy"]["all"]["images"] == 80 and suite["accuracy"]["all"]["accuracy"] > 0.5  # the tiny model
    assert suite["vs_decode"] == pytest.approx(
        suite["end_to_end_images_per_s"] / suite["decode_preprocess_images_per_s"])
    printed = capsys.readouterr().out
    assert "digits-infer end to end" in printed and "import torch" in printed
    assert "model formats" in printed and "fastest here: model only" in printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run `make gpu-check` itself")
def test_gpu_check_without_a_gpu_exits_2_at_once():
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
