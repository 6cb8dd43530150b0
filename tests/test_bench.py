import json
import subprocess
import sys

import pytest
import torch

from bench.arith import growth, pipeline_limit, rate, ratio
from bench.run import main
from tests.conftest import REPO, run_cli


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
          "--repeats", "1", "--no-train", "--no-ray",
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
    assert len(suite["vs_decode_per_turn"]) == 1 and suite["vs_decode_per_turn"][0] > 0  # --repeats 1: one turn
    for name, images in (("mnist", results["images"]), ("styles", suite["images"])):  # confidence ranking
        for mode in ("default", "tta"):
            figures = results["ranking"][name][mode]
            assert figures["rows"] == images and 0 <= figures["ece"] <= 1 and 0 <= figures["lowest_5"] <= 1
    printed = capsys.readouterr().out
    assert "digits-infer end to end" in printed and "import torch" in printed and "confidence ranking" in printed
    assert "model formats" in printed and "fastest here: model only" in printed


@pytest.mark.slow
def test_ray_bench_on_100_and_300_files(artifacts, data_dir, tmp_path, capsys):
    """The ray rows of `make bench` on a small folder: both engines run, and the projection follows from the
    measured rates."""
    from rich.console import Console

    from bench.mnist_png import write_mnist_pngs
    from bench.ray_bench import measure_ray, show_ray

    folder = tmp_path / "png"
    write_mnist_pngs(data_dir, folder, 100)
    r = measure_ray(folder, artifacts, 32, tmp_path, linked=300)
    assert list(r["runs"]) == ["100", "300"]
    for row in r["runs"].values():
        assert row["local"]["images_per_s"] > 0 and row["ray"]["images_per_s"] > 0
        assert row["ray_vs_local"] == pytest.approx(row["ray"]["images_per_s"] / row["local"]["images_per_s"])
    assert r["ray_startup_s"] == pytest.approx(r["one_image_s"]["ray"] - r["one_image_s"]["local"])
    assert r["actor"]["images_per_s"] > 0 and r["driver_images_per_s"] > r["actor"]["images_per_s"]
    assert r["nodes_at_driver_limit"] == pytest.approx(
        r["driver_images_per_s"] / (r["cores"] * r["actor"]["images_per_s"]))
    show_ray(Console(), r)
    assert "the driver is the bottleneck at about" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run `make gpu-check` itself")
def test_gpu_check_without_a_gpu_exits_2_at_once():
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_gradient_exchange_is_the_parameter_volume_per_step():
    from bench.arith import ring_allreduce_bytes, transfer_seconds
    from bench.training import gradient_exchange

    assert ring_allreduce_bytes(1000, 1) == 0.0 and ring_allreduce_bytes(1000, 2) == 1000.0
    assert ring_allreduce_bytes(1000, 4) == 1500.0 and transfer_seconds(125e6, 1.0) == pytest.approx(1.0)
    row = gradient_exchange(2, 55000, 64)
    # conv1 260 + conv2 1,820 + fc1 1,000,500 + fc2 5,010 parameters, 4 bytes each
    assert row["parameters"] == 1_007_590 and row["gradient_mb_per_step"] == pytest.approx(4.03036)
    assert row["steps_per_epoch"] == 860 and row["sent_mb_per_process_per_step"] == pytest.approx(4.03036)
    assert row["network_s_per_epoch_1gbit"] == pytest.approx(860 * 4.03036e6 * 8 / 1e9)


@pytest.mark.slow
def test_data_parallel_bench_runs_torchrun_and_reports(data_dir, capsys):
    from rich.console import Console

    from bench.training import measure_data_parallel, show_data_parallel

    row = measure_data_parallel(data_dir, "cpu", one_process_epoch_s=1.0, train_limit=6000)
    assert row["processes"] == 2 and row["backend"] == "gloo" and 0 < row["epoch_s"] < row["wall_s"]
    assert row["steps_per_epoch"] == 16 and row["vs_one_process"] == pytest.approx(1.0 / row["epoch_s"])
    show_data_parallel(Console(width=400), row)
    assert "2 processes (gloo, torchrun)" in capsys.readouterr().out


def test_more_styles_writes_every_kind_and_digits_infer_reads_them(artifacts, data_dir, tmp_path):
    """bench/more_styles.py: every kind is written as real files with labels, and each file is read as a digit
    (a prediction or a one-line error row, never a traceback), one row per image."""
    import csv

    from bench.more_styles import KINDS, write_more_styles
    from bench.styles import accuracy_by_style

    folder = tmp_path / "more"
    write_more_styles(data_dir, folder, per_kind=2)
    with (folder / "labels.csv").open(newline="") as f:
        labels = list(csv.DictReader(f))
    assert sorted({r["style"] for r in labels}) == sorted(KINDS) and len(labels) == 2 * len(KINDS)
    assert all((folder / r["file"]).stat().st_size > 0 for r in labels)
    out = tmp_path / "more.csv"
    proc = run_cli("digits-infer", folder, "--model-dir", artifacts, "-o", out, "--quiet")
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    table = accuracy_by_style(out, folder / "labels.csv")
    assert table["all"]["images"] == len(labels)
    assert all("not a readable image" not in row.get("error", "") for row in csv.DictReader(out.open()))
