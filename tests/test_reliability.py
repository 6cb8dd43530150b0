"""digits-infer on messy folders, interruptions, hostile outputs and untrustworthy artifacts: every file accounted
for, once. Every stop and kill happens at a point the test controls (the DIGITS_INFER_PAUSE_AFTER_* hooks of
infer.stop), never by racing a timer."""

import csv
import errno
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import threading
import time

import cv2
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from infer.contract import file_sha256
from infer.csvout import HEADER, partial_path, read_complete_rows
from infer.discover import path_bytes
from infer.job import job_path
from infer.pipeline import Preparer, read_file
from infer.run import InferOptions, Interrupted, classify_paths
from infer.stop import StopFlag
from tests.badfiles import write_cases
from tests.conftest import BIN, REPO, assert_clean_failure, run_cli
from trainer.data import load_split

SAMPLES = REPO / "samples"
SAMPLE_IMAGES = 32


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def one_line_error(proc, code, *needles):
    """Exit `code`, nothing on stdout, and exactly one line on stderr (no traceback) holding every needle."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and not proc.stdout, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def infer(artifacts, *args, **kwargs):
    return run_cli("digits-infer", *args, "--model-dir", artifacts, **kwargs)


def start(artifacts, *args, pause_rows=None, pause_images=None, **popen):
    """digits-infer as a background process that pauses at a point the test chose (infer.stop's hooks)."""
    env = dict(os.environ)
    if pause_rows is not None:
        env["DIGITS_INFER_PAUSE_AFTER_ROWS"] = str(pause_rows)
    if pause_images is not None:
        env["DIGITS_INFER_PAUSE_AFTER_IMAGES"] = str(pause_images)
    return subprocess.Popen([str(BIN / "digits-infer"), *map(str, args), "--model-dir", str(artifacts)], cwd=REPO,
                            env=env, stdout=popen.pop("stdout", subprocess.DEVNULL), stderr=subprocess.PIPE,
                            text=True, **popen)


def wait_paused(process) -> None:
    """Block until the process says `paused <pid>`; fails (never hangs) if it ends without pausing."""
    seen = []
    for line in process.stderr:
        if line.startswith("paused "):
            assert int(line.split()[1]) == process.pid
            return
        seen.append(line)
    raise AssertionError(f"ended without pausing (exit {process.wait()}): {''.join(seen)}")


def finish(process, timeout=120):
    """Wait for the process (a safety net, not a race: it is already told to stop); returns its stderr."""
    _, stderr = process.communicate(timeout=timeout)
    return stderr


@pytest.fixture(scope="module")
def digit(data_dir):
    return load_split(data_dir, train=False).subset(1).images[0].numpy()


def digit_png(digit, size=56) -> bytes:
    return cv2.imencode(".png", cv2.resize(digit, (size, size)))[1].tobytes()


# --- every bad input gets exactly one row -------------------------------------------------------------------------

def test_every_bad_input_gets_exactly_one_row(artifacts, digit, tmp_path):
    folder = tmp_path / "messy"
    expected = write_cases(folder, digit)
    out = tmp_path / "out.csv"
    proc = infer(artifacts, folder, "-o", out)
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
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(digit_png(digit))

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


# --- kill -9 and signals, stopped where the test says ---------------------------------------------------------------

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
    proc = infer(artifacts, many_pngs, "-o", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    return {r["path"]: r for r in read_rows(out)}


def assert_same_as_clean(out, clean_run):
    rows = read_rows(out)
    assert len(rows) == len(clean_run) == len({r["path"] for r in rows})  # every file exactly once
    for row in rows:
        assert row == clean_run[row["path"]]
    assert not partial_path(out).exists()


@pytest.mark.slow
@pytest.mark.parametrize("after_rows", [37, 1900])
def test_kill_9_then_resume_gives_every_file_once_with_clean_results(artifacts, many_pngs, clean_run, tmp_path,
                                                                     after_rows):
    out = tmp_path / "out.csv"
    process = start(artifacts, many_pngs, "-o", out, "--batch-size", "8", "--workers", "1", pause_rows=after_rows)
    wait_paused(process)
    process.kill()
    process.wait()
    assert not out.exists() and partial_path(out).exists()  # never a half-written final CSV
    kept = len(read_complete_rows(partial_path(out).read_text(encoding="utf-8")))
    assert kept == -(-after_rows // 8) * 8  # paused at the first batch boundary at or past the mark
    refused = infer(artifacts, many_pngs, "-o", out)  # the killed run's lock is gone: not "in use"
    one_line_error(refused, 2, "interrupted run", "--resume")
    resumed = infer(artifacts, many_pngs, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept} kept from before" in resumed.stderr
    assert_same_as_clean(out, clean_run)


def test_torn_last_line_is_dropped():
    text = "path,prediction,confidence,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9,error\n" \
           "a.png,1,0.9,0,0.9,0,0,0,0,0,0,0,0.1,\n" \
           "b.png,,,,,,,,,,,,,empty file\n" \
           '"c\nd.png",7,0.8,0,0,0,0,0'
    assert [r[0] for r in read_complete_rows(text)] == ["a.png", "b.png"]
    assert [r[0] for r in read_complete_rows(text[: text.index('"c')] + '"c\n')] == ["a.png", "b.png"]


@pytest.mark.slow
@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_keeps_rows_says_how_to_resume_and_exits_128_plus_it(artifacts, many_pngs, clean_run, tmp_path,
                                                                      signum, code, word):
    out = tmp_path / "out.csv"
    process = start(artifacts, many_pngs, "-o", out, "--batch-size", "8", "--workers", "1", pause_rows=100)
    wait_paused(process)
    process.send_signal(signum)
    stderr = finish(process)
    assert process.returncode == code and "Traceback" not in stderr
    assert word in stderr and "--resume" in stderr and str(partial_path(out)) in stderr
    assert stderr.count("\n") == 1
    assert len(read_complete_rows(partial_path(out).read_text(encoding="utf-8"))) >= 104
    refused = infer(artifacts, many_pngs, "-o", out)
    one_line_error(refused, 2, "--resume")  # an interrupted run's rows are never silently dropped
    resumed = infer(artifacts, many_pngs, "-o", out, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_clean(out, clean_run)


@pytest.fixture(scope="module")
def large_scans(digit, tmp_path_factory):
    """40 photographed-page-sized images (3000×3000 PNG of a real MNIST digit on paper), hard links of one."""
    folder = tmp_path_factory.mktemp("large")
    page = 255 - cv2.resize(digit, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(folder / "scan_00.png"), page)
    for index in range(1, 40):
        os.link(folder / "scan_00.png", folder / f"scan_{index:02d}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_batch_of_large_images_stops_between_images(artifacts, large_scans, tmp_path, signum, code):
    """A preprocessing thread pauses after the 20th image, 4 images into the second batch of 16: the stop must
    come before the 21st image, with those 4 classified and written, not after the batch (or never)."""
    out = tmp_path / "out.csv"
    process = start(artifacts, large_scans, "-o", out, "--batch-size", "16", "--workers", "1", pause_images=20)
    wait_paused(process)
    process.send_signal(signum)
    stderr = finish(process)
    assert process.returncode == code, stderr
    assert "after 20 images" in stderr and str(partial_path(out)) in stderr and "--resume" in stderr
    rows = read_complete_rows(partial_path(out).read_text(encoding="utf-8"))
    assert [os.path.basename(r[0]) for r in rows] == [f"scan_{i:02d}.png" for i in range(20)]
    assert all(r[1] and not r[-1] for r in rows)
    resumed = infer(artifacts, large_scans, "-o", out, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(os.path.basename(r["path"]) for r in read_rows(out)) == [f"scan_{i:02d}.png" for i in range(40)]


@pytest.mark.slow
def test_a_stop_while_an_image_is_still_being_read_ends_the_run_with_the_finished_rows(artifacts, digit, tmp_path):
    """The read of the 6th image hangs (a stuck network file system) just after the stop: the run still ends,
    a grace time later rather than never, with the 5 finished images written and the rest left for --resume."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for index in range(12):
        (folder / f"{index:02d}.png").write_bytes(digit_png(digit))
    stop, release, stopped_at = StopFlag(), threading.Event(), []

    def hanging_read(path, limit):
        if path.endswith("05.png"):
            stopped_at.append(time.monotonic())
            stop.request(signal.SIGTERM)
            release.wait(120)  # only a safety net: without the grace time the run waits here two minutes
        return read_file(path, limit)

    out = tmp_path / "out.csv"
    options = InferOptions(model_dir=artifacts, output=out, batch_size=8, workers=1)
    try:
        with pytest.raises(Interrupted) as stopped:
            classify_paths([str(folder)], options, preparer=Preparer(read=hanging_read), stop=stop)
        ended = time.monotonic()
    finally:
        release.set()
    assert ended - stopped_at[0] < 60
    assert stopped.value.exit_code == 143 and stopped.value.summary.classified == 5
    rows = read_complete_rows(partial_path(out).read_text(encoding="utf-8"))
    assert [os.path.basename(r[0]) for r in rows] == [f"{index:02d}.png" for index in range(5)]


# --- one run per output ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused_while_the_first_finishes_intact(artifacts, many_pngs, clean_run,
                                                                                    tmp_path):
    out = tmp_path / "out.csv"
    first = start(artifacts, many_pngs, "-o", out, "--batch-size", "64", pause_rows=500)
    wait_paused(first)
    for extra in ([], ["--resume"]):
        second = infer(artifacts, many_pngs, "-o", out, *extra)
        one_line_error(second, 2, f"in use by another digits-infer (pid {first.pid})")
    first.send_signal(signal.SIGUSR1)  # the hook's "go on"
    stderr = finish(first)
    assert first.returncode == 0, stderr
    assert_same_as_clean(out, clean_run)
    with open(out, newline="", encoding="utf-8") as f:
        assert {len(record) for record in csv.reader(f)} == {len(HEADER)}  # no torn or interleaved rows


# --- --resume: the job identity -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def interrupted_samples(artifacts, tmp_path_factory):
    """OUTPUT.partial and OUTPUT.job.json of a run over samples/ stopped (SIGTERM) after its first batch."""
    out = tmp_path_factory.mktemp("interrupted") / "out.csv"
    process = start(artifacts, SAMPLES, "-o", out, "--batch-size", "8", "--workers", "1", pause_rows=8)
    wait_paused(process)
    process.send_signal(signal.SIGTERM)
    assert "terminated" in finish(process) and process.returncode == 143
    return out


def another_model(artifacts, folder):
    """A copy of the artifacts whose ONNX file is another valid model of the same contract."""
    shutil.copytree(artifacts, folder)
    tiny_onnx(folder / "digit.onnx", [1, 28, 28], 10)
    digest, size = file_sha256(folder / "digit.onnx"), (folder / "digit.onnx").stat().st_size
    rewrite_manifest(folder, lambda m: m["artifacts"]["onnx"].update(sha256=digest, bytes=size))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("change,needle", [
    ("model", "model sha256"),
    ("backend", "backend onnx, now torch"),
    ("folder", "inputs"),
    ("max_pixels", "--max-pixels 100000000, now 5000000"),
])
def test_resume_of_another_job_exits_2_naming_the_difference_and_changes_nothing(artifacts, interrupted_samples,
                                                                                 tmp_path, change, needle):
    out = tmp_path / "out.csv"
    shutil.copy(partial_path(interrupted_samples), partial_path(out))
    shutil.copy(job_path(interrupted_samples), job_path(out))
    before = partial_path(out).read_bytes(), job_path(out).read_bytes()
    model, paths, flags = artifacts, [SAMPLES], []
    if change == "model":
        model = another_model(artifacts, tmp_path / "other")
    elif change == "backend":
        flags = ["--backend", "torch"]
    elif change == "folder":
        paths = [shutil.copytree(SAMPLES, tmp_path / "elsewhere")]
    else:
        flags = ["--max-pixels", "5000000"]
    proc = infer(model, *paths, "-o", out, "--resume", *flags)
    one_line_error(proc, 2, "--resume", needle, "nothing was changed")
    assert (partial_path(out).read_bytes(), job_path(out).read_bytes()) == before
    assert not out.exists()


@pytest.mark.slow
def test_resume_against_a_finished_csv_of_another_folder_keeps_nothing_of_it(artifacts, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("00_mnist.png", "01_paper.png"):
        shutil.copy(SAMPLES / name, other / name)
    out = tmp_path / "out.csv"
    assert infer(artifacts, other, "-o", out).returncode == 0
    before = out.read_bytes(), job_path(out).read_bytes()
    proc = infer(artifacts, SAMPLES, "-o", out, "--resume")
    one_line_error(proc, 2, "another job", f"inputs {other}, now {SAMPLES}")
    assert (out.read_bytes(), job_path(out).read_bytes()) == before and not partial_path(out).exists()


@pytest.mark.slow
def test_a_file_added_since_the_first_run_is_classified_on_resume(artifacts, tmp_path):
    folder = shutil.copytree(SAMPLES, tmp_path / "scans")
    out = tmp_path / "out.csv"
    assert infer(artifacts, folder, "-o", out).returncode == 0
    first = json.loads(job_path(out).read_text())
    assert first["model_sha256"] == json.loads((artifacts / "manifest.json").read_text())["artifacts"]["onnx"]["sha256"]
    assert (first["backend"], first["torch_format"], first["format"]) == ("onnx", None, 1)
    assert first["options"] == {"recursive": True, "max_pixels": 100_000_000, "excel_safe": False,
                                "tta": False}
    assert first["inputs"] == [{"given": str(folder), "real": str(folder)}]
    assert (first["classified"], first["failed"], first["skipped"]) == (SAMPLE_IMAGES, 0, 2)
    assert first["finished"] >= first["started"] and first["images_per_second"] > 0
    shutil.copy(SAMPLES / "00_mnist.png", folder / "99_new.png")
    proc = infer(artifacts, folder, "-o", out, "--resume")
    assert proc.returncode == 0 and f"classified 1, failed 0, skipped 2 non-image files, {SAMPLE_IMAGES} kept" \
        in proc.stderr, proc.stderr
    rows = read_rows(out)
    assert len(rows) == SAMPLE_IMAGES + 1 and rows[-1]["path"] == str(folder / "99_new.png")
    record = json.loads(job_path(out).read_text())
    assert record["started"] == first["started"] and record["classified"] == SAMPLE_IMAGES + 1


@pytest.mark.slow
def test_rows_are_keyed_by_real_path_bytes_not_display_text(artifacts, digit, tmp_path):
    """A raw 0xFF byte and a literal backslash-x-f-f used to give one display text: after a stop between them,
    --resume took the second file for done."""
    folder = tmp_path / "names"
    folder.mkdir()
    names = [b"a\\xff.png", b"a\xff.png"]  # this order is the walk's: 0x5c sorts before 0xff
    for name in names:
        with open(os.fsencode(folder) + b"/" + name, "wb") as f:
            f.write(digit_png(digit))
    out = tmp_path / "out.csv"
    process = start(artifacts, folder, "-o", out, "--batch-size", "1", "--workers", "1", pause_rows=1)
    wait_paused(process)
    process.kill()
    process.wait()
    assert len(read_complete_rows(partial_path(out).read_text(encoding="utf-8"))) == 1
    resumed = infer(artifacts, folder, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    written = [path_bytes(r["path"]) for r in read_rows(out)]
    assert written == [os.fsencode(folder) + b"/" + name for name in names]
    assert [r["path"][len(str(folder)) + 1:] for r in read_rows(out)] == ["a\\\\xff.png", "a\\xff.png"]


# --- CSV that always parses back ------------------------------------------------------------------------------------

CONTROL_NAMES = ["cr\rname.png", "lf\nname.png", "tab\tname.png", "bell\x07.png", "del\x7f.png", "esc\x1b[31m.png",
                 "c1\x85.png", "back\\slash.png", "plain.png", "comma,quote\".png"]


@pytest.mark.slow
def test_control_characters_in_names_give_one_row_per_file_and_resume_adds_none(artifacts, digit, tmp_path):
    folder = tmp_path / "ctl"
    folder.mkdir()
    for name in CONTROL_NAMES:
        (folder / name).write_bytes(digit_png(digit))
    out = tmp_path / "out.csv"
    proc = infer(artifacts, folder, "-o", out)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out, keep_default_na=False)
    rows = read_rows(out)
    assert len(frame) == len(rows) == len(CONTROL_NAMES)
    assert list(frame["path"]) == [r["path"] for r in rows]
    assert sorted(path_bytes(r["path"]) for r in rows) == sorted(os.fsencode(folder / n) for n in CONTROL_NAMES)
    assert all(ch.isprintable() for r in rows for ch in r["path"])
    assert str(folder / "cr\\rname.png") in frame["path"].tolist()
    resumed = infer(artifacts, folder, "-o", out, "--resume")
    assert resumed.returncode == 0 and f"{len(CONTROL_NAMES)} kept" in resumed.stderr
    assert len(pd.read_csv(out, keep_default_na=False)) == len(CONTROL_NAMES)


@pytest.mark.slow
def test_excel_safe_quotes_formula_cells_and_resume_reads_them_back(artifacts, digit, tmp_path):
    folder = tmp_path / "cells"
    folder.mkdir()
    names = ["=1+2.png", "+cmd.png", "-x.png", "@sum.png", "'quoted.png", "plain.png"]
    for name in names:
        (folder / name).write_bytes(digit_png(digit))
    labelled = tmp_path / "artifacts"
    shutil.copytree(artifacts, labelled)
    rewrite_manifest(labelled, lambda m: m.update(labels=[f"=HYPERLINK({d})" for d in range(10)]))
    out = tmp_path / "out.csv"

    def cells(*flags):  # the files named on the command line, after "--" (so "-x.png" is not a flag)
        return run_cli("digits-infer", "--model-dir", labelled, "-o", out, *flags, "--", *names, cwd=folder)

    proc = cells("--excel-safe")
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out)
    assert [r["path"] for r in rows] == ["'=1+2.png", "'+cmd.png", "'-x.png", "'@sum.png", "''quoted.png",
                                         "plain.png"]
    assert all(r["prediction"].startswith("'=HYPERLINK(") for r in rows)
    assert json.loads(job_path(out).read_text())["options"]["excel_safe"] is True
    resumed = cells("--excel-safe", "--resume")
    assert resumed.returncode == 0 and "6 kept from before" in resumed.stderr, resumed.stderr
    assert len(read_rows(out)) == len(names)
    plain = cells("--resume")  # without the flag: another job
    one_line_error(plain, 2, "--excel-safe true, now false")


# --- outputs checked before any work --------------------------------------------------------------------------------

@pytest.mark.parametrize("case,needle", [
    ("folder", "is a folder"),
    ("root", "is a folder"),
    ("empty", "-o is empty"),
    ("input file", "is one of the input images"),
    ("image in input folder", "is one of the input images"),
])
def test_unusable_output_exits_2_at_once_and_touches_nothing(artifacts, tmp_path, case, needle):
    folder = shutil.copytree(SAMPLES, tmp_path / "scans")
    image = folder / "01_paper.png"
    before = image.read_bytes()
    paths, output = [folder], {"folder": tmp_path, "root": "/", "empty": "", "input file": image,
                               "image in input folder": image}[case]
    if case == "input file":
        paths = [folder / "00_mnist.png", image]
    proc = infer(artifacts, *paths, "-o", output)
    one_line_error(proc, 2, needle)
    assert image.read_bytes() == before
    assert not list(tmp_path.glob("*.partial")) and not list(folder.glob("*.partial"))


@pytest.mark.slow
def test_a_device_and_a_fifo_are_written_through_never_replaced(artifacts, tmp_path):
    device = tmp_path / "null"
    device.symlink_to("/dev/null")  # a device named by -o (the link keeps the test away from /dev itself)
    proc = infer(artifacts, SAMPLES, "-o", device)
    assert proc.returncode == 0, proc.stderr
    assert device.is_symlink() and stat.S_ISCHR(device.stat().st_mode)
    assert not partial_path(device).exists() and not job_path(device).exists()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waits: the CSV (5 kB) fits in the pipe
    try:
        proc = infer(artifacts, SAMPLES, "-o", fifo)
        assert proc.returncode == 0, proc.stderr
        data = os.read(reader, 1 << 20).decode()
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert data.startswith(",".join(HEADER)) and data.count("\n") == SAMPLE_IMAGES + 1
    refused = infer(artifacts, SAMPLES, "-o", device, "--resume")
    one_line_error(refused, 2, "--resume needs a regular file")


@pytest.mark.slow
def test_an_output_that_fills_up_keeps_complete_rows_and_resume_finishes_exactly_once(artifacts, mnist_pngs,
                                                                                        tmp_path):
    clean = tmp_path / "clean.csv"
    assert infer(artifacts, mnist_pngs, "-o", clean, "--quiet").returncode == 0
    clean_rows = {r["path"]: r for r in read_rows(clean)}
    out = tmp_path / "out.csv"
    limit = 20_000  # bytes per file: the CSV's writes fail part-way, like a full disk (EFBIG rather than ENOSPC)
    full = subprocess.run([str(BIN / "digits-infer"), str(mnist_pngs), "--model-dir", str(artifacts), "-o",
                           str(out), "--batch-size", "64"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    one_line_error(full, 2, str(partial_path(out)), "cannot write (File too large)", "--resume")
    assert partial_path(out).stat().st_size == limit  # the last write was cut inside a row
    kept = read_complete_rows(partial_path(out).read_text(encoding="utf-8"))
    assert 0 < len(kept) < len(clean_rows)
    resumed = infer(artifacts, mnist_pngs, "-o", out, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_clean(out, clean_rows)


@pytest.mark.slow
def test_a_full_device_a_full_stdout_and_a_closed_stdout_exit_2_in_one_line(artifacts, tmp_path):
    full = tmp_path / "full"
    full.symlink_to("/dev/full")
    one_line_error(infer(artifacts, SAMPLES, "-o", full), 2, "No space left on device")
    assert full.is_symlink()
    with open("/dev/full", "wb") as stdout:
        proc = subprocess.run([str(BIN / "digits-infer"), str(SAMPLES), "--model-dir", str(artifacts), "-o", "-"],
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300)
    one_line_error(proc, 2, "stdout", "No space left on device")
    proc = subprocess.run([str(BIN / "digits-infer"), str(SAMPLES), "--model-dir", str(artifacts), "-o", "-"],
                          stderr=subprocess.PIPE, text=True, timeout=300, preexec_fn=lambda: os.close(1))
    one_line_error(proc, 2, "stdout is closed")


# --- flags and walking ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value", [
    ("--max-pixels", "99999999999999999999"), ("--max-pixels", str((1 << 40) + 1)), ("--max-pixels", "0"),
    ("--workers", "10000"), ("--workers", "0"), ("--batch-size", "0"),
])
def test_flags_out_of_range_exit_2_in_one_line(artifacts, tmp_path, flag, value):
    proc = infer(artifacts, SAMPLES, flag, value, "-o", tmp_path / "o.csv")
    one_line_error(proc, 2, f"{flag} {value}: out of range")
    assert not (tmp_path / "o.csv").exists() and not partial_path(tmp_path / "o.csv").exists()


@pytest.mark.slow
def test_a_chain_of_1200_folders_is_walked(artifacts, digit, tmp_path):
    deepest = tmp_path / "deep"
    deepest.mkdir()
    for _ in range(1200):  # one level at a time: pathlib's and os's own makedirs recurse
        deepest = deepest / "d"
        deepest.mkdir()
    (deepest / "x.png").write_bytes(digit_png(digit))
    out = tmp_path / "out.csv"
    try:
        proc = infer(artifacts, tmp_path / "deep", "-o", out)
        assert proc.returncode == 0, proc.stderr
        assert [r["path"] for r in read_rows(out)] == [str(deepest / "x.png")]
    finally:
        remove_chain(tmp_path / "deep", deepest)


def remove_chain(top, deepest) -> None:
    """Remove the chain from the bottom, one folder at a time: pytest's clean-up of old temporary folders
    (shutil.rmtree) recurses once per level and would fail on it in a later session."""
    (deepest / "x.png").unlink(missing_ok=True)
    while deepest != top:
        deepest.rmdir()
        deepest = deepest.parent
    top.rmdir()


def test_no_image_files_found_warns_in_one_line_and_exits_3(artifacts, tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "readme.txt").write_text("no images here")
    (folder / "sub" / "x.png").write_bytes(b"")
    out = tmp_path / "out.csv"
    proc = infer(artifacts, folder, "-o", out, "--no-recursive", "--quiet")
    one_line_error(proc, 3, "no image files found under", str(folder), "skipped 1 non-image files and 1 subfolder")
    assert out.read_text() == ",".join(HEADER) + "\n"


def test_help_lists_every_exit_code():
    text = " ".join(run_cli("digits-infer", "--help").stdout.split())
    for code in ("0 every image classified", "1 some images failed", "2 bad usage", "3 no image files found",
                 "130 interrupted", "143 terminated (SIGTERM)"):
        assert code in text


# --- untrustworthy artifacts ----------------------------------------------------------------------------------------

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
    proc = infer(copy, SAMPLES, *backend, "-o", tmp_path / "o.csv")
    assert_clean_failure(proc, 2, needle)
    assert not (tmp_path / "o.csv").exists()


def hostile_manifest(copy, case, tmp_path):
    """Change the copied artifacts as the issue's hostile manifests did."""
    onnx_entry = lambda change: rewrite_manifest(copy, lambda m: m["artifacts"]["onnx"].update(change))  # noqa: E731
    if case == "traversal":
        target = "/etc/passwd"
        onnx_entry({"file": "../../../../etc/passwd", "sha256": file_sha256(target), "bytes": os.path.getsize(target)})
    elif case == "absolute":
        other = shutil.copytree(copy, tmp_path / "other")
        onnx_entry({"file": str(other / "digit.onnx")})
    elif case == "symlink_outside":
        outside = tmp_path / "outside.onnx"
        shutil.copy(copy / "digit.onnx", outside)
        (copy / "digit.onnx").unlink()
        (copy / "digit.onnx").symlink_to(outside)
    elif case == "file_5":
        onnx_entry({"file": 5})
    elif case == "input_x":
        rewrite_manifest(copy, lambda m: m.update(input="x"))
    elif case == "parity_yes":
        rewrite_manifest(copy, lambda m: m.update(parity="yes"))
    elif case in ("schema_true", "schema_minus_5"):
        rewrite_manifest(copy, lambda m: m.update(schema_version=True if case == "schema_true" else -5))
    elif case == "nested_deep":
        text = (copy / "manifest.json").read_text().rstrip()
        (copy / "manifest.json").write_text(text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif case == "nested_50":
        rewrite_manifest(copy, lambda m: m.update(deep=json.loads("[" * 50 + "]" * 50)))
    elif case == "oversized":
        rewrite_manifest(copy, lambda m: m.update(padding="x" * (2 << 20)))


@pytest.mark.slow
@pytest.mark.parametrize("case,needle", [
    ("traversal", "'../../../../etc/passwd' is not a plain file name"),
    ("absolute", "is not a plain file name inside the folder"),
    ("symlink_outside", "resolves outside"),
    ("file_5", "artifacts.onnx.file must be a file name"),
    ("input_x", "input must be a JSON object, found str"),
    ("parity_yes", "parity must be a JSON object, found str"),
    ("schema_true", "schema_version is True, expected an integer >= 1"),
    ("schema_minus_5", "schema_version is -5, expected an integer >= 1"),
    ("nested_deep", "nested too deeply"),
    ("nested_50", "nested deeper than 12 levels"),
    ("oversized", "larger than 1048576 bytes"),
])
def test_hostile_manifest_exits_2_in_one_line_before_loading_anything(artifacts, tmp_path, case, needle):
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    hostile_manifest(copy, case, tmp_path)
    proc = infer(copy, SAMPLES, "-o", tmp_path / "o.csv")
    one_line_error(proc, 2, "manifest.json", needle)
    assert not (tmp_path / "o.csv").exists() and not partial_path(tmp_path / "o.csv").exists()


@pytest.mark.slow
def test_a_few_thousand_files_with_bad_ones_mixed_in(artifacts, many_pngs, clean_run, digit, tmp_path):
    bad = tmp_path / "bad"
    expected = write_cases(bad, digit)
    out = tmp_path / "out.csv"
    proc = infer(artifacts, many_pngs, bad, "-o", out, "--quiet")
    assert proc.returncode == 1 and proc.stderr == ""
    rows = read_rows(out)
    assert len(rows) == len(clean_run) + len(expected) == 4000 + len(expected)
    assert [r for r in rows if r["path"] in clean_run] == list(clean_run.values())  # good files: as a clean run
    failures = [name for name, outcome in expected.items() if outcome != "ok"]
    assert sum(1 for r in rows if r["error"]) == len(failures)
