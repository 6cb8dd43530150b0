"""digits-infer on messy folders, interruptions and untrustworthy artifacts: every file accounted for."""

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from infer.contract import file_sha256
from infer.csvout import partial_path, read_complete_rows
from infer.pipeline import Preparer, read_file
from infer.run import InferOptions, classify_paths
from tests.badfiles import write_cases
from tests.conftest import BIN, REPO, assert_clean_failure, run_cli
from trainer.data import load_split


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def digit(data_dir):
    return load_split(data_dir, train=False).subset(1).images[0].numpy()


def test_every_bad_input_gets_exactly_one_row(artifacts, digit, tmp_path):
    folder = tmp_path / "messy"
    expected = write_cases(folder, digit)
    out = tmp_path / "out.csv"
    proc = run_cli("digits-infer", folder, "--model-dir", artifacts, "-o", out)
    assert_clean_failure(proc, 1, "skipped 1 non-image")
    assert proc.stderr.count("\n") == 1  # the summary alone: no decoder warnings, no per-file noise
    rows = read_rows(out)
    frame = pd.read_csv(out, keep_default_na=False)
    assert len(frame) == len(rows) == len(expected)
    by_name = {os.path.basename(r["path"]): r for r in rows}
    assert set(by_name) == set(expected)
    for name, outcome in expected.items():
        row = by_name[name]
        if outcome == "ok":
            assert row["prediction"] in list("0123456789") and row["error"] == "", (name, row)
            assert abs(sum(float(row[f"p{d}"]) for d in range(10)) - 1) < 1e-4
        else:
            assert row["prediction"] == "" and outcome in row["error"], (name, row["error"])
            assert "\n" not in row["error"]


def test_a_read_error_and_a_file_deleted_after_discovery(artifacts, digit, tmp_path):
    import cv2

    folder = tmp_path / "scans"
    folder.mkdir()
    png = cv2.imencode(".png", cv2.resize(digit, (56, 56)))[1].tobytes()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(png)

    def read_with_trouble(path, limit):
        if path.endswith("a.png"):
            (folder / "c.png").unlink()  # c.png was discovered; it disappears before it is read
        if path.endswith("b.png"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # root reads anything: simulate a disk error
        return read_file(path, limit)

    out = tmp_path / "out.csv"
    summary = classify_paths([str(folder)], InferOptions(model_dir=artifacts, output=out),
                             preparer=Preparer(read=read_with_trouble))
    rows = {os.path.basename(r["path"]): r for r in read_rows(out)}
    assert rows["a.png"]["prediction"] and rows["b.png"]["error"] == "Input/output error"
    assert rows["c.png"]["error"] == "No such file or directory"
    assert (summary.classified, summary.failed, summary.any_failed) == (1, 2, True)


@pytest.fixture(scope="module")
def many_pngs(mnist_pngs, tmp_path_factory):
    """4000 real PNG files in four folders."""
    root = tmp_path_factory.mktemp("many")
    for copy in range(4):
        shutil.copytree(mnist_pngs, root / f"set{copy}", ignore=shutil.ignore_patterns("*.csv"))
    return root


@pytest.fixture(scope="module")
def clean_run(artifacts, many_pngs, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "clean.csv"
    proc = run_cli("digits-infer", many_pngs, "--model-dir", artifacts, "-o", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    return {r["path"]: r for r in read_rows(out)}


def start_slow_run(artifacts, many_pngs, out):
    """digits-infer with small batches and one worker, so that it can be stopped part-way."""
    return subprocess.Popen([str(BIN / "digits-infer"), str(many_pngs), "--model-dir", str(artifacts), "-o", str(out),
                             "--batch-size", "8", "--workers", "1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_rows(process, partial, rows: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if partial.exists() and partial.read_bytes().count(b"\n") > rows:
            return
        assert process.poll() is None, "finished before it could be interrupted"
        time.sleep(0.002)
    raise AssertionError("no progress")


@pytest.mark.parametrize("after_rows", [37, 1900])
def test_kill_9_then_resume_gives_every_file_once_with_clean_results(artifacts, many_pngs, clean_run, tmp_path,
                                                                     after_rows):
    out = tmp_path / "out.csv"
    process = start_slow_run(artifacts, many_pngs, out)
    wait_for_rows(process, partial_path(out), after_rows)
    process.kill()
    process.wait()
    assert not out.exists() and partial_path(out).exists()  # never a half-written final CSV
    kept = len(read_complete_rows(partial_path(out).read_text(encoding="utf-8")))
    assert 0 < kept < len(clean_run)
    resumed = run_cli("digits-infer", many_pngs, "--model-dir", artifacts, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept} kept from before" in resumed.stderr
    rows = read_rows(out)
    assert len(rows) == len(clean_run) == len({r["path"] for r in rows})
    for row in rows:
        assert row == clean_run[row["path"]]
    assert not partial_path(out).exists()


def test_torn_last_line_is_dropped(tmp_path):
    text = "path,prediction,confidence,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9,error\n" \
           "a.png,1,0.9,0,0.9,0,0,0,0,0,0,0,0.1,\n" \
           "b.png,,,,,,,,,,,,,empty file\n" \
           '"c\nd.png",7,0.8,0,0,0,0,0'
    assert [r[0] for r in read_complete_rows(text)] == ["a.png", "b.png"]
    assert [r[0] for r in read_complete_rows(text[: text.index('"c')] + '"c\n')] == ["a.png", "b.png"]


def test_ctrl_c_keeps_rows_says_how_to_resume_and_exits_130(artifacts, many_pngs, clean_run, tmp_path):
    out = tmp_path / "out.csv"
    process = start_slow_run(artifacts, many_pngs, out)
    wait_for_rows(process, partial_path(out), 100)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr
    assert "--resume" in stderr and str(partial_path(out)) in stderr
    assert len(read_complete_rows(partial_path(out).read_text(encoding="utf-8"))) >= 100
    refused = run_cli("digits-infer", many_pngs, "--model-dir", artifacts, "-o", out)
    assert_clean_failure(refused, 2, "--resume")  # an interrupted run's rows are never silently dropped
    resumed = run_cli("digits-infer", many_pngs, "--model-dir", artifacts, "-o", out, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(clean_run)


def rewrite_manifest(folder, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def tiny_onnx(path, input_shape, classes) -> None:
    """A valid ONNX model of another shape: global pooling then a constant-weight layer and softmax."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, classes], np.ones(classes, np.float32))
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "other",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.mark.parametrize("case,needle", [
    ("newer_schema", "newer than this digits"),
    ("input_shape", "expected [N, 1, 28, 28]"),
    ("outputs", "expected [N, 1, 28, 28] → [N, 10]"),
    ("parity_failed", "failed its parity check"),
    ("torchscript_tampered", "digit.torchscript.pt"),
])
def test_untrustworthy_artifacts_exit_2(artifacts, tmp_path, case, needle):
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    backend = ["--backend", "onnx"]
    if case == "newer_schema":
        rewrite_manifest(copy, lambda m: m.update(schema_version=2))
    elif case in ("input_shape", "outputs"):
        tiny_onnx(copy / "digit.onnx", [1, 32, 32] if case == "input_shape" else [1, 28, 28],
                  10 if case == "input_shape" else 5)
        digest, size = file_sha256(copy / "digit.onnx"), (copy / "digit.onnx").stat().st_size
        rewrite_manifest(copy, lambda m: m["artifacts"]["onnx"].update(sha256=digest, bytes=size))
    elif case == "parity_failed":
        rewrite_manifest(copy, lambda m: m["parity"].update(passed=False))
    else:
        backend = ["--backend", "torch", "--torch-format", "torchscript"]  # pt2 is the default torch format
        with open(copy / "digit.torchscript.pt", "r+b") as f:
            f.seek(100)
            f.write(b"tampered")
    proc = run_cli("digits-infer", REPO / "samples", "--model-dir", copy, *backend, "-o", tmp_path / "o.csv")
    assert_clean_failure(proc, 2, needle)
    assert not (tmp_path / "o.csv").exists()


def test_a_few_thousand_files_with_bad_ones_mixed_in(artifacts, many_pngs, clean_run, digit, tmp_path):
    bad = tmp_path / "bad"
    expected = write_cases(bad, digit)
    out = tmp_path / "out.csv"
    proc = run_cli("digits-infer", many_pngs, bad, "--model-dir", artifacts, "-o", out, "--quiet")
    assert proc.returncode == 1 and proc.stderr == ""
    rows = read_rows(out)
    assert len(rows) == len(clean_run) + len(expected) == 4000 + len(expected)
    assert [r for r in rows if r["path"] in clean_run] == list(clean_run.values())  # good files: as a clean run
    failures = [name for name, outcome in expected.items() if outcome != "ok"]
    assert sum(1 for r in rows if r["error"]) == len(failures)
