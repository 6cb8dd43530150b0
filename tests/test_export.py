import io
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import exporter.export as export_module
from exporter.export import ParitySettings, export, parity_images
from exporter.formats import ONNX_OPSET
from exporter.wrapper import DeployedDigit
from infer.contract import file_sha256
from infer.options import InferOptions
from infer.run import classify_paths
from tests.conftest import REPO, Unpickling, assert_clean_failure, run_cli
from trainer.checkpoint import load_checkpoint
from trainer.outputs import write_outputs


def probabilities(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    return session.run(["probabilities"], {"image": images})[0]


def test_onnx_takes_any_batch_and_returns_probabilities(artifacts):
    session = ort.InferenceSession(str(artifacts / "digit.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 7, 256):
        out = probabilities(session, rng.random((batch, 1, 28, 28), dtype=np.float32))
        assert out.shape == (batch, 10) and out.dtype == np.float32
        assert np.allclose(out.sum(1), 1.0, atol=1e-5) and (out >= 0).all()


def test_dropout_stays_out_of_the_exported_models(artifacts):
    """The tiny model trained with dropout (the default); what is exported is the seed's eval graph: no dropout
    node in the ONNX, TorchScript or pt2 graph, not even one that does nothing."""
    ops = {node.op_type for node in onnx.load(str(artifacts / "digit.onnx")).graph.node}
    assert {"Conv", "Gemm"} <= ops and "Dropout" not in ops
    scripted = str(torch.jit.load(str(artifacts / "digit.torchscript.pt")).inlined_graph)
    assert "aten::linear" in scripted and "dropout" not in scripted
    program = torch.export.load(str(artifacts / "digit.pt2"))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert any("conv2d" in t for t in targets) and not any("dropout" in t for t in targets)


def test_every_backend_agrees_with_eager_on_1000_real_images(artifacts, tiny_run, data_dir):
    images, labels = parity_images(ParitySettings(data_dir, samples=1000))
    with torch.no_grad():
        eager = DeployedDigit(tiny_run[0].model)(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(str(artifacts / "digit.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(artifacts / "digit.torchscript.pt"))
    with torch.no_grad():
        for out in (probabilities(session, images), scripted(torch.from_numpy(images)).numpy()):
            assert np.abs(out - eager).max() <= 1e-5
            assert np.array_equal(out.argmax(1), eager.argmax(1))
    assert (eager.argmax(1) == labels).mean() == pytest.approx(tiny_run[0].test.accuracy, abs=1e-6)
    report = json.loads((artifacts / "parity.json").read_text())
    assert report["passed"] and report["samples"] == 1000
    assert {(r["backend"], r["device"]) for r in report["rows"]} == {
        ("eager", "cpu"), ("torchscript", "cpu"), ("onnx", "cpu"), ("pt2", "cpu")}
    for row in report["rows"]:
        assert row["max_abs_diff"] <= 1e-5 and row["top1_agreement"] == 1.0 and row["passed"]
        assert row["accuracy"] == pytest.approx(tiny_run[0].test.accuracy, abs=1e-6)


def test_manifest_and_onnx_metadata_hold_the_contract(artifacts, tiny_run):
    manifest = json.loads((artifacts / "manifest.json").read_text())
    checkpoint = tiny_run[1] / "digit.safetensors"
    assert manifest["schema_version"] == 1
    assert manifest["input"] == {"name": "image", "shape": ["N", 1, 28, 28], "dtype": "float32", "range": [0.0, 1.0],
                                 "polarity": "white ink on black background (MNIST)"}
    assert manifest["labels"] == [str(d) for d in range(10)]
    assert set(manifest["artifacts"]) == {"onnx", "torchscript", "pt2"}  # the session export has no aoti
    for fmt, name in (("onnx", "digit.onnx"), ("torchscript", "digit.torchscript.pt"), ("pt2", "digit.pt2")):
        assert manifest["artifacts"][fmt]["file"] == name
        assert manifest["artifacts"][fmt]["sha256"] == file_sha256(artifacts / name)
    assert manifest["source"]["sha256"] == file_sha256(checkpoint)
    assert manifest["source"]["metrics"]["test_accuracy"] == tiny_run[0].test.accuracy
    assert manifest["versions"] == {"torch": torch.__version__, "onnx": onnx.__version__,
                                    "onnxruntime": ort.__version__}
    assert manifest["parity"]["passed"] is True and manifest["parity"]["samples"] == 1000

    model = onnx.load(str(artifacts / "digit.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == ONNX_OPSET
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["labels"]) == manifest["labels"]
    assert json.loads(props["normalization"]) == {"mean": 0.1307, "std": 0.3081, "inside_graph": True}
    assert json.loads(props["input"]) == manifest["input"]
    assert props["checkpoint_sha256"] == file_sha256(checkpoint)
    assert json.loads(props["test_accuracy"]) == tiny_run[0].test.accuracy
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # a symbolic, dynamic batch axis


@pytest.mark.slow
def test_verify_passes_on_a_good_export(artifacts, data_dir):
    proc = run_cli("digits-export", "verify", artifacts, "--data-dir", data_dir, "--parity-samples", "300")
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout and "onnx" in proc.stdout and "torchscript" in proc.stdout and "pt2" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digit.onnx", "digit.torchscript.pt", "digit.pt2"])
def test_verify_catches_a_tampered_file(artifacts, tmp_path, data_dir, name):
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    proc = run_cli("digits-export", "verify", copy, "--data-dir", data_dir, "--parity-samples", "100")
    assert_clean_failure(proc, 1, name, "sha256")


@pytest.mark.slow
def test_verify_catches_a_parity_break(artifacts, tmp_path, data_dir):
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    model = onnx.load(str(copy / "digit.onnx"))
    weights = next(t for t in model.graph.initializer if numpy_helper.to_array(t).ndim == 2)
    changed = numpy_helper.to_array(weights) * 1.01
    weights.CopyFrom(numpy_helper.from_array(changed.astype(np.float32), weights.name))
    onnx.save(model, str(copy / "digit.onnx"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["artifacts"]["onnx"].update(sha256=file_sha256(copy / "digit.onnx"),  # re-hashed: integrity passes
                                         bytes=(copy / "digit.onnx").stat().st_size)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("digits-export", "verify", copy, "--data-dir", data_dir, "--parity-samples", "300")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "FAIL" in proc.stdout and "FAILED" in proc.stdout


@pytest.mark.slow
def test_export_cli_writes_a_passing_folder(tiny_run, tmp_path, data_dir):
    out = tmp_path / "artifacts"
    # No C++ compiler here: the AOTInductor package (on by default) is left out with one line saying why.
    proc = run_cli("digits-export", "--checkpoint", tiny_run[1] / "digit.safetensors", "--out", out,
                   "--data-dir", data_dir, "--parity-samples", "200", env={"CXX": str(tmp_path / "no-such-g++")})
    assert proc.returncode == 0, proc.stderr
    assert "parity passed" in proc.stdout and "Traceback" not in proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("skipped")] == [
        f"skipped aoti: not built: no C++ compiler ({tmp_path / 'no-such-g++'}) found; install one or set CXX"]
    assert sorted(p.name for p in out.iterdir()) == [
        "digit.onnx", "digit.pt2", "digit.torchscript.pt", "manifest.json", "parity.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


@pytest.mark.slow
def test_missing_or_corrupt_checkpoint_is_one_line_exit_2(tmp_path, data_dir):
    missing = run_cli("digits-export", "--checkpoint", tmp_path / "nope.safetensors", "--out", tmp_path / "a",
                      "--data-dir", data_dir)
    assert_clean_failure(missing, 2, "nope.safetensors", "not found")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    corrupt = run_cli("digits-export", "--checkpoint", bad, "--out", tmp_path / "a", "--data-dir", data_dir)
    assert_clean_failure(corrupt, 2, "bad.safetensors")
    assert len(corrupt.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_cuda_parity_without_cuda_exits_2(tiny_run, tmp_path, data_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error path cannot happen here")
    proc = run_cli("digits-export", "--checkpoint", tiny_run[1] / "digit.safetensors", "--out", tmp_path / "a",
                   "--data-dir", data_dir, "--device", "cuda")
    assert_clean_failure(proc, 2, "CUDA")


@pytest.mark.slow
def test_interrupted_export_leaves_the_previous_folder_intact(tiny_run, artifacts, tmp_path, data_dir, monkeypatch):
    out = tmp_path / "artifacts"
    shutil.copytree(artifacts, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "check_parity", boom)
    with pytest.raises(KeyboardInterrupt):
        export(tiny_run[1] / "digit.safetensors", out, ParitySettings(data_dir, samples=50))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["artifacts"]


@pytest.mark.slow
def test_training_outputs_export_and_inference_never_unpickle(tiny_run, data_dir, tmp_path, monkeypatch):
    """torch.load without weights_only=True and pickle.load/loads raise (and are recorded) while a checkpoint is
    written and read, exported to every format, and classified through every backend."""
    guard = Unpickling(monkeypatch)
    with pytest.raises(RuntimeError):  # the guard is live: a pickled file would fail this test
        torch.load(io.BytesIO(b"not read"))
    guard.forbidden.clear()
    checkpoint = tmp_path / "checkpoints" / "digit.safetensors"
    write_outputs(tiny_run[0], checkpoint.parent, data_dir)
    model, metadata = load_checkpoint(checkpoint)
    assert metadata["architecture"] == "Digit" and not model.training
    artifacts = tmp_path / "artifacts"
    export(checkpoint, artifacts, ParitySettings(data_dir, samples=200), aoti=False)
    for backend, fmt in (("onnx", None), ("torch", "torchscript"), ("torch", "pt2")):
        summary = classify_paths([str(REPO / "samples")], InferOptions(
            backend=backend, torch_format=fmt, model_dir=artifacts, output=tmp_path / f"{backend}-{fmt}.csv"))
        assert summary.classified == 32
    assert guard.forbidden == []
