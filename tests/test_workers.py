"""Heavy images (scans, photos) are preprocessed in spawned worker processes (infer.workers): the rows are
those the threads give, in the same order, and no worker outlives a stopped run. Real style-suite files, a
real ONNX Runtime session, the real console script."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from bench.styles import write_styles
from infer.backends import open_onnx
from infer.csvout import partial_path, read_complete_rows
from infer.pipeline import HANDOVER_IMAGES, Preparer, classify_batches
from infer.workers import Workers
from tests.conftest import BIN, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def heavy_folder(data_dir, tmp_path_factory) -> Path:
    """700 style-suite images (70 of each style): enough heavy images waiting for the hand-over."""
    folder = tmp_path_factory.mktemp("heavy")
    write_styles(data_dir, folder, per_style=70)
    (folder / "labels.csv").unlink()
    return folder


def image_paths(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir())


def test_worker_processes_give_the_rows_threads_give(artifacts, heavy_folder):
    paths = image_paths(heavy_folder)
    assert len(paths) > HANDOVER_IMAGES
    classify = open_onnx(artifacts / "digit.onnx", "cpu", 1).classify
    workers = Workers(2)
    workers.start()  # started before the run (a run starts them once images prove heavy, and goes on meanwhile)
    while not workers.ready():  # a condition, not a timer: the workers answer their warm-up task
        assert not workers.broken
        time.sleep(0.05)
    in_processes = [row for rows in classify_batches(paths, classify, 256, 2, Preparer(), processes=workers)
                    for row in rows]
    in_threads = [row for rows in classify_batches(paths, classify, 256, 2, Preparer(), processes=False)
                  for row in rows]
    assert workers.prepared >= len(paths) // 2  # the hand-over happened, early in the run
    assert [r.path for r in in_processes] == [r.path for r in in_threads] == paths
    assert [r.error for r in in_processes] == [r.error for r in in_threads]
    for a, b in zip(in_processes, in_threads, strict=True):
        assert (a.probabilities is None) == (b.probabilities is None)
        if a.probabilities is not None:
            np.testing.assert_array_equal(a.probabilities, b.probabilities)


def spawned_workers(pid: int) -> set[int]:
    """Pids of the multiprocessing workers whose parent is `pid` (from /proc; not its resource tracker, which
    leaves on its own once the parent's pipe closes)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and b"spawn_main" in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.add(int(entry))
            except OSError:
                continue  # a process that has just ended
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_workers_prepare_ends_them_with_the_run(artifacts, heavy_folder, tmp_path, signum, code):
    """Paused after its 600th image (well after the hand-over), the run is stopped: it exits 128+signal with
    the rows so far kept, and every worker process it started is gone when it has exited."""
    out = tmp_path / "out.csv"
    env = dict(os.environ, DIGITS_INFER_PAUSE_AFTER_IMAGES="600")
    process = subprocess.Popen([str(BIN / "digits-infer"), str(heavy_folder), "-o", str(out), "--model-dir",
                                str(artifacts), "--workers", "2"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if line.startswith("paused "):
            break
    else:
        raise AssertionError(f"ended without pausing (exit {process.wait()})")
    workers = spawned_workers(process.pid)
    assert len(workers) == 2, workers
    process.send_signal(signum)
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == code, stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    assert not [pid for pid in workers if alive(pid)]
    rows = read_complete_rows(partial_path(out).read_text(encoding="utf-8"))
    assert 600 <= len(rows) < 700
    # Walk order, each file once; batches in flight at the stop keep what they finished (the rest is for
    # --resume), so a batch stopped part-way may be followed by a later one that had finished.
    written = [r[0] for r in rows]
    assert written == sorted(set(written)) and set(written) <= set(image_paths(heavy_folder))
