"""PyTorch 2 artifacts: the torch.export archive (.pt2) and the AOTInductor package, exported for real from the
tiny model, compared with eager PyTorch and ONNX Runtime on real MNIST images, loaded by digits-infer, and
never unpickled on the way."""

import csv
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from exporter.export import ParitySettings, export, parity_images
from exporter.formats import FORMATS, cxx_compiler, export_pt2, exported_program, pt2_runner
from exporter.manifest import graph_metadata, integrity_problems
from exporter.wrapper import DeployedDigit
from infer.backends import MODEL_FORMATS
from infer.cli import TorchFormat
from infer.contract import ArtifactError, file_sha256, read_manifest
from infer.options import TORCH_FORMATS, InferOptions
from infer.pt2archive import check_pickle_free, load_aoti_package, load_exported_program
from infer.run import classify_paths
from tests.conftest import REPO, Unpickling, assert_clean_failure, run_cli

SAMPLES = REPO / "samples"


def read_probabilities(path) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return ([r["path"] for r in rows], [r["prediction"] for r in rows],
            np.array([[float(r[f"p{d}"]) for d in range(10)] for r in rows]))


def eager_probabilities(model, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return DeployedDigit(model)(torch.from_numpy(images)).numpy()


def test_the_format_tables_agree():
    assert {f.value for f in TorchFormat} == set(TORCH_FORMATS)
    assert {f.name for f in MODEL_FORMATS.values() if f.backend == "torch"} == set(TORCH_FORMATS)
    assert set(MODEL_FORMATS) <= {f.name for f in FORMATS}
    assert [f.name for f in FORMATS if f.optional] == ["aoti"]


def test_pt2_matches_eager_on_real_images_at_any_batch(artifacts, tiny_run, data_dir):
    images, labels = parity_images(ParitySettings(data_dir, samples=1000))
    eager = eager_probabilities(tiny_run[0].model, images)
    module = load_exported_program(artifacts / "digit.pt2").module()
    with torch.inference_mode():
        for batch in (1, 7, 1000):
            out = module(torch.from_numpy(images[:batch])).numpy()
            assert out.shape == (batch, 10)
            assert np.abs(out - eager[:batch]).max() <= 1e-5
            assert np.array_equal(out.argmax(1), eager[:batch].argmax(1))
    assert (eager.argmax(1) == labels).mean() == pytest.approx(tiny_run[0].test.accuracy, abs=1e-6)

    manifest = json.loads((artifacts / "manifest.json").read_text())
    assert manifest["artifacts"]["pt2"] == {"file": "digit.pt2", "sha256": file_sha256(artifacts / "digit.pt2"),
                                            "bytes": (artifacts / "digit.pt2").stat().st_size}
    assert "aoti" not in manifest["artifacts"]  # the session export is built with aoti=False
    row = next(r for r in json.loads((artifacts / "parity.json").read_text())["rows"] if r["backend"] == "pt2")
    assert row["device"] == "cpu" and row["passed"] and row["max_abs_diff"] <= 1e-5 and row["top1_agreement"] == 1.0
    extra = {"metadata.json": ""}
    torch.export.load(artifacts / "digit.pt2", extra_files=extra)
    assert json.loads(extra["metadata.json"])["checkpoint_sha256"] == manifest["source"]["sha256"]


def test_pt2_holds_nothing_pickled_and_a_pickled_one_is_refused(artifacts, tiny_run, tmp_path):
    check_pickle_free(artifacts / "digit.pt2")
    with zipfile.ZipFile(artifacts / "digit.pt2") as archive:
        samples = [i for i in archive.infolist() if "/data/sample_inputs/" in i.filename]
    assert samples and all(i.file_size == 0 for i in samples)
    # torch.export.save's own default keeps the example inputs, pickled: such a file is refused before torch reads it.
    plain = tmp_path / "with_inputs.pt2"
    torch.export.save(exported_program(DeployedDigit(tiny_run[0].model)), str(plain))
    with pytest.raises(ArtifactError, match="pickled sample inputs"):
        load_exported_program(plain)


def test_pt2_export_and_inference_never_unpickle(tiny_run, artifacts, data_dir, tmp_path, monkeypatch):
    images, _ = parity_images(ParitySettings(data_dir, samples=300))
    guard = Unpickling(monkeypatch)
    path = tmp_path / "digit.pt2"
    export_pt2(DeployedDigit(tiny_run[0].model), path, graph_metadata("0" * 64, None))
    probabilities = pt2_runner(path, "cpu")(images)
    assert np.abs(probabilities - eager_probabilities(tiny_run[0].model, images)).max() <= 1e-5
    summary = classify_paths([str(SAMPLES)], InferOptions(backend="torch", torch_format="pt2", model_dir=artifacts,
                                                          output=tmp_path / "p.csv", workers=1))
    assert summary.classified == 32 and not summary.any_failed
    assert guard.forbidden == []


@pytest.fixture(scope="module")
def onnx_csv(artifacts, mnist_pngs, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "onnx.csv"
    proc = run_cli("digits-infer", mnist_pngs, "--model-dir", artifacts, "--backend", "onnx", "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out


def assert_same_as_onnx(csv_path, onnx_csv) -> None:
    paths, predictions, probabilities = read_probabilities(csv_path)
    onnx_paths, onnx_predictions, onnx_probabilities = read_probabilities(onnx_csv)
    assert len(paths) == 1000 and paths == onnx_paths
    assert predictions == onnx_predictions
    assert np.abs(probabilities - onnx_probabilities).max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_each_torch_format_gives_onnx_predictions_on_1000_pngs(artifacts, mnist_pngs, onnx_csv, tmp_path, fmt):
    out = tmp_path / f"{fmt}.csv"
    proc = run_cli("digits-infer", mnist_pngs, "--model-dir", artifacts, "--backend", "torch", "--torch-format", fmt,
                   "-o", out, "--quiet")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert_same_as_onnx(out, onnx_csv)


def keep_only(artifacts, tmp_path, keep: set[str]):
    """A copy of the export whose manifest lists (and whose folder holds) only the formats in `keep`."""
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for name in set(manifest["artifacts"]) - keep:
        (copy / manifest["artifacts"].pop(name)["file"]).unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.slow
def test_torch_backend_prefers_pt2_and_falls_back_to_torchscript(artifacts, tmp_path):
    pt2_only = keep_only(artifacts, tmp_path / "a", {"onnx", "pt2"})
    proc = run_cli("digits-infer", SAMPLES, "--model-dir", pt2_only, "--backend", "torch", "-o", tmp_path / "a.csv")
    assert proc.returncode == 0, proc.stderr  # no TorchScript file there: the .pt2 ran
    missing = run_cli("digits-infer", SAMPLES, "--model-dir", pt2_only, "--backend", "torch", "--torch-format",
                      "torchscript", "-o", tmp_path / "b.csv")
    assert_clean_failure(missing, 2, "manifest.json", "no torchscript artifact listed")
    older = keep_only(artifacts, tmp_path / "c", {"onnx", "torchscript"})  # an export made before .pt2 existed
    proc = run_cli("digits-infer", SAMPLES, "--model-dir", older, "--backend", "torch", "-o", tmp_path / "c.csv")
    assert proc.returncode == 0, proc.stderr
    assert read_probabilities(tmp_path / "a.csv")[1] == read_probabilities(tmp_path / "c.csv")[1]


@pytest.mark.slow
def test_a_format_missing_from_the_manifest_or_the_wrong_backend_is_one_line_exit_2(artifacts, tmp_path):
    proc = run_cli("digits-infer", SAMPLES, "--model-dir", artifacts, "--backend", "torch", "--torch-format", "aoti",
                   "-o", tmp_path / "o.csv")
    assert_clean_failure(proc, 2, "no aoti artifact listed", "--torch-format")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.csv").exists()
    proc = run_cli("digits-infer", SAMPLES, "--model-dir", artifacts, "--torch-format", "pt2", "-o", tmp_path / "o.csv")
    assert_clean_failure(proc, 2, "--torch-format pt2 applies to --backend torch only")


def test_tampered_pt2_is_refused_by_digits_infer(artifacts, tmp_path):
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    data = bytearray((copy / "digit.pt2").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 can tell
    (copy / "digit.pt2").write_bytes(bytes(data))
    proc = run_cli("digits-infer", SAMPLES, "--model-dir", copy, "--backend", "torch", "-o", tmp_path / "o.csv")
    assert_clean_failure(proc, 2, "digit.pt2", "sha256 differs")
    assert not (tmp_path / "o.csv").exists()


def test_pt2_is_required_and_aoti_optional_in_a_manifest(artifacts, tmp_path):
    assert integrity_problems(read_manifest(artifacts)) == []  # no aoti listed: fine
    older = keep_only(artifacts, tmp_path, {"onnx", "torchscript"})
    assert [p for p in integrity_problems(read_manifest(older)) if "no pt2 artifact listed" in p]


@pytest.fixture(scope="module")
def aoti_export(tiny_run, data_dir, tmp_path_factory):
    """A real export with the AOTInductor package (a C++ build), run with unpickling forbidden."""
    if cxx_compiler() is None:  # never a silent skip: the CI machines have g++
        pytest.fail("a C++ compiler ($CXX or g++) is needed to build the AOTInductor package in this test")
    out = tmp_path_factory.mktemp("aoti") / "artifacts"
    with pytest.MonkeyPatch.context() as monkeypatch:
        guard = Unpickling(monkeypatch)
        manifest, report = export(tiny_run[1] / "digit.safetensors", out, ParitySettings(data_dir, samples=1000),
                                  aoti=True)
        summary = classify_paths([str(SAMPLES)], InferOptions(backend="torch", torch_format="aoti", model_dir=out,
                                                              output=out.parent / "guarded.csv", workers=1))
    assert guard.forbidden == []
    assert summary.classified == 32
    return out, manifest, report


@pytest.mark.slow
def test_aoti_package_builds_and_matches_eager(aoti_export, tiny_run, data_dir):
    out, manifest, report = aoti_export
    assert report.passed and report.skipped == []
    row = next(r for r in report.rows if r.backend == "aoti")
    assert row.device == "cpu" and row.max_abs_diff <= 1e-5 and row.top1_agreement == 1.0
    assert row.accuracy == pytest.approx(tiny_run[0].test.accuracy, abs=1e-6)
    assert manifest["artifacts"]["aoti"] == {"file": "digit.aoti.pt2", "sha256": file_sha256(out / "digit.aoti.pt2"),
                                             "bytes": (out / "digit.aoti.pt2").stat().st_size}
    check_pickle_free(out / "digit.aoti.pt2")
    metadata = load_aoti_package(out / "digit.aoti.pt2").get_metadata()
    assert metadata["checkpoint_sha256"] == manifest["source"]["sha256"] and metadata["AOTI_DEVICE_KEY"] == "cpu"
    proc = run_cli("digits-export", "verify", out, "--data-dir", data_dir, "--parity-samples", "300")
    assert proc.returncode == 0, proc.stderr
    assert "aoti" in proc.stdout and "pt2" in proc.stdout and "verified" in proc.stdout


@pytest.mark.slow
def test_aoti_gives_onnx_predictions_on_1000_pngs(aoti_export, mnist_pngs, onnx_csv, artifacts, tmp_path):
    out = tmp_path / "aoti.csv"
    proc = run_cli("digits-infer", mnist_pngs, "--model-dir", aoti_export[0], "--backend", "torch",
                   "--torch-format", "aoti", "-o", out, "--quiet")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert_same_as_onnx(out, onnx_csv)  # both exports come from the same checkpoint


@pytest.mark.slow
def test_a_failed_aoti_build_is_one_line_and_the_rest_lands(tiny_run, tmp_path, data_dir):
    out = tmp_path / "artifacts"
    proc = run_cli("digits-export", "--checkpoint", tiny_run[1] / "digit.safetensors", "--out", out,
                   "--data-dir", data_dir, "--parity-samples", "200", "--aoti", env={"CXX": "/bin/false"})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("skipped")]
    assert len(lines) == 1 and lines[0].startswith("skipped aoti: not built: the AOTInductor build failed"), proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "digit.onnx", "digit.pt2", "digit.torchscript.pt", "manifest.json", "parity.json"]
    assert set(json.loads((out / "manifest.json").read_text())["artifacts"]) == {"torchscript", "onnx", "pt2"}
