"""digits-infer end to end: real artifacts, real image files, the real command."""

import csv
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from infer.csvout import HEADER
from infer.score import accuracy
from tests.conftest import REPO, assert_clean_failure, run_cli

SAMPLES = REPO / "samples"


def infer(artifacts, *args, **kwargs):
    return run_cli("digits-infer", *args, "--model-dir", artifacts, **kwargs)


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def probabilities(rows) -> np.ndarray:
    return np.array([[float(r[f"p{d}"]) for d in range(10)] for r in rows])


@pytest.fixture(scope="module")
def both_backends_on_pngs(artifacts, mnist_pngs, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred")
    results = {}
    for backend in ("onnx", "torch"):
        proc = infer(artifacts, mnist_pngs, "--backend", backend, "-o", out / f"{backend}.csv")
        assert proc.returncode == 0, proc.stderr
        results[backend] = out / f"{backend}.csv"
    return results


@pytest.mark.slow
def test_backends_agree_on_1000_mnist_pngs_and_keep_accuracy(both_backends_on_pngs, mnist_pngs, tiny_run):
    onnx_rows, torch_rows = (read_rows(both_backends_on_pngs[b]) for b in ("onnx", "torch"))
    assert len(onnx_rows) == len(torch_rows) == 1000
    assert [r["path"] for r in onnx_rows] == [r["path"] for r in torch_rows]
    assert [r["prediction"] for r in onnx_rows] == [r["prediction"] for r in torch_rows]
    assert np.abs(probabilities(onnx_rows) - probabilities(torch_rows)).max() <= 1e-5
    correct, total = accuracy(both_backends_on_pngs["onnx"], mnist_pngs / "labels.csv")
    assert total == 1000 and correct / total >= tiny_run[0].test.accuracy - 0.005


@pytest.mark.slow
def test_backends_agree_on_the_samples(artifacts, tmp_path, tiny_run):
    outputs = {}
    for backend in ("onnx", "torch"):
        proc = infer(artifacts, SAMPLES, "--backend", backend, "-o", tmp_path / f"{backend}.csv")
        assert proc.returncode == 0, proc.stderr
        outputs[backend] = read_rows(tmp_path / f"{backend}.csv")
    assert len(outputs["onnx"]) == 32
    assert [r["prediction"] for r in outputs["onnx"]] == [r["prediction"] for r in outputs["torch"]]
    assert np.abs(probabilities(outputs["onnx"]) - probabilities(outputs["torch"])).max() <= 1e-5
    correct, total = accuracy(tmp_path / "onnx.csv", SAMPLES / "labels.csv")
    assert total == 32 and correct / total >= tiny_run[0].test.accuracy - 0.15  # 32 images: a coarse check


def test_onnx_path_never_imports_torch(artifacts, tmp_path):
    code = (
        "import sys\n"
        "from infer.cli import app\n"
        f"sys.argv = ['digits-infer', {str(SAMPLES)!r}, '--model-dir', {str(artifacts)!r}, '-o', "
        f"{str(tmp_path / 'p.csv')!r}, '--quiet']\n"
        "try:\n    app()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print('exit', code, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.split() == ["exit", "0", "False"], proc.stderr
    assert len(read_rows(tmp_path / "p.csv")) == 32


def test_csv_round_trip_with_awkward_names(artifacts, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    source = (SAMPLES / "01_paper.png").read_bytes()
    names = ["with space.png", "comma,name.png", 'quote"d.png', "new\nline.png", "emoji 😀.png", "ÜMLAUT.PNG"]
    for name in names:
        (folder / name).write_bytes(source)
    with open(os.fsencode(folder) + b"/bad-\xff\xfe.png", "wb") as f:  # a name that is not valid UTF-8
        f.write(source)
    proc = infer(artifacts, folder, "-o", tmp_path / "out.csv")
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(tmp_path / "out.csv")
    frame = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert list(frame.columns) == HEADER and len(frame) == len(rows) == len(names) + 1
    paths = {r["path"] for r in rows}
    assert {str(folder / n).replace("\n", "\\n") for n in names} <= paths  # control characters escaped
    assert str(folder) + "/bad-\\xff\\xfe.png" in paths
    assert len({r["prediction"] for r in rows}) == 1  # the same image under every name


def test_stdout_output(artifacts):
    proc = infer(artifacts, SAMPLES / "00_mnist.png", "-o", "-")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 1 and rows[0]["path"].endswith("00_mnist.png") and rows[0]["prediction"]


def test_bad_files_give_error_rows_and_exit_1(artifacts, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(SAMPLES / "00_mnist.png", folder / "good.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image")
    (folder / "notes.txt").write_text("skipped")
    proc = infer(artifacts, folder, "-o", tmp_path / "out.csv")
    assert_clean_failure(proc, 1, "failed 2", "skipped 1")
    rows = {os.path.basename(r["path"]): r for r in read_rows(tmp_path / "out.csv")}
    assert set(rows) == {"good.png", "empty.png", "text.png"}
    assert rows["good.png"]["prediction"] and not rows["good.png"]["error"]
    assert rows["empty.png"]["error"] == "empty file" and rows["empty.png"]["prediction"] == ""
    assert "not a readable image" in rows["text.png"]["error"]


def test_missing_model_folder_exits_2_and_says_make_export(tmp_path):
    proc = run_cli("digits-infer", SAMPLES, "--model-dir", tmp_path / "none", "-o", tmp_path / "o.csv")
    assert_clean_failure(proc, 2, "make export")
    assert not (tmp_path / "o.csv").exists()


def test_tampered_artifact_is_refused_and_named(artifacts, tmp_path):
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    with open(copy / "digit.onnx", "ab") as f:
        f.write(b"\0")
    proc = infer(copy, SAMPLES, "-o", tmp_path / "o.csv")
    assert_clean_failure(proc, 2, "digit.onnx", "refusing a changed model")


@pytest.mark.slow
def test_cuda_without_cuda_exits_2(artifacts, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error path cannot happen here")
    for backend in ("onnx", "torch"):
        proc = infer(artifacts, SAMPLES, "--backend", backend, "--device", "cuda", "-o", tmp_path / "o.csv")
        assert_clean_failure(proc, 2, "--device cuda")


@pytest.mark.slow
def test_no_recursive_skips_subfolders(artifacts, tmp_path):
    (tmp_path / "top" / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "00_mnist.png", tmp_path / "top" / "a.png")
    shutil.copy(SAMPLES / "00_mnist.png", tmp_path / "top" / "sub" / "b.png")
    proc = infer(artifacts, tmp_path / "top", "--no-recursive", "-o", "-", "--quiet")
    assert proc.returncode == 0 and proc.stderr == ""
    assert [r["path"] for r in csv.DictReader(io.StringIO(proc.stdout))] == [str(tmp_path / "top" / "a.png")]
    walked = infer(artifacts, tmp_path / "top", "-o", "-", "--quiet")
    assert [r["path"] for r in csv.DictReader(io.StringIO(walked.stdout))] == [
        str(tmp_path / "top" / "a.png"), str(tmp_path / "top" / "sub" / "b.png")]


def test_help_documents_exit_codes():
    proc = run_cli("digits-infer", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for code in ("0 every image classified", "1 some images failed", "2 bad usage", "130 interrupted"):
        assert code in text


def test_reader_closing_stdout_early_is_not_a_traceback(artifacts, mnist_pngs):
    from tests.conftest import BIN

    # 1000 rows (~150 kB) overflow the pipe's buffer, so writes after the reader leaves must fail.
    process = subprocess.Popen([str(BIN / "digits-infer"), str(mnist_pngs), "--model-dir", str(artifacts), "-o", "-",
                                "--batch-size", "16"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("path,prediction")
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 2  # an output that fails: exit 2, one line (1 means images failed)
    assert "Traceback" not in stderr and "closed by the reader" in stderr and stderr.count("\n") == 1


def test_folders_read_the_other_names_and_formats_users_save(artifacts, tmp_path, data_dir):
    """Browsers save JPEGs as .jfif or .jpe; JPEG 2000 and AVIF are decoded too: in a folder, each is read (not
    skipped) and reads as the same digit as its PNG."""
    import cv2

    from trainer.data import load_split

    digit = cv2.resize(255 - load_split(data_dir, train=False).images[0].numpy(), (96, 96))
    cv2.imwrite(str(tmp_path / "digit.png"), digit)
    for name, ext in (("digit.jfif", ".jpg"), ("digit.jpe", ".jpg"), ("digit.jp2", ".jp2"), ("digit.avif", ".avif")):
        ok, data = cv2.imencode(ext, digit)
        assert ok, ext
        (tmp_path / name).write_bytes(data.tobytes())
    out = tmp_path / "out.csv"
    proc = infer(artifacts, tmp_path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    rows = {os.path.basename(r["path"]): r for r in read_rows(out)}
    assert sorted(rows) == ["digit.avif", "digit.jfif", "digit.jp2", "digit.jpe", "digit.png"]
    assert {r["prediction"] for r in rows.values()} == {rows["digit.png"]["prediction"]}
