"""Data-parallel training under torchrun: real processes on the CPU (gloo), real MNIST, a real export.

Each rank runs with one thread (OMP_NUM_THREADS=1, also what torchrun would set), so two processes share this
machine's two cores. Processes are stopped at points the tests control: the trainer's DIGITS_TRAIN_PAUSE hook
makes a rank write its pid to a file and wait at a given step, and the test kills or interrupts it then.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from infer.score import accuracy
from tests.conftest import BIN, REPO, run_cli
from trainer.checkpoint import load_checkpoint
from trainer.data import load_split, to_float
from trainer.distributed import PAUSE_ENV, World, shard_loss
from trainer.train import TrainConfig, evaluate, fit

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
OUTPUTS = {"digit.safetensors", "metrics.json", "curves.png", "confusion.png"}


def torchrun(*args: object, nproc: int = 2) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(nproc), *map(str, args)]


def run(command: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ONE_THREAD, **(env or {})})


def start(command: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ONE_THREAD, **(env or {})})


def wait_for_pause(process: subprocess.Popen, ready: Path, deadline_s: float = 300) -> int:
    """The pid the paused rank wrote once it reached its step (the deadline only guards a broken run)."""
    deadline = time.monotonic() + deadline_s
    while not ready.exists():
        assert process.poll() is None, f"ended before pausing: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "never reached the pause step"
        time.sleep(0.05)
    return int(ready.read_text())


def no_frame_of_ours(stderr: str) -> bool:
    """torchrun prints its own ChildFailedError report; none of its frames may come from this project's code
    (the virtualenv may live inside the checkout, as in CI: its files are torch's, not ours)."""
    files = re.findall(r'^\s*File "([^"]+)"', stderr, flags=re.MULTILINE)
    venv = str(Path(sys.prefix).resolve())
    return not [f for f in files if str(Path(f).resolve()).startswith(str(REPO)) and not
                str(Path(f).resolve()).startswith(venv)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def small_checkpoint(tiny_run, folder: Path) -> dict[str, bytes]:
    """A previous run's outputs in `folder`: a failed run must leave them byte for byte."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("digit.safetensors", "metrics.json"):
        shutil.copy(tiny_run[1] / name, folder / name)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_shares_cover_every_item_once_and_differ_by_at_most_one():
    for size in range(1, 6):
        for count in range(0, 40):
            shares = [World(rank, size).share(count) for rank in range(size)]
            covered = [i for s in shares for i in range(count)[s]]
            assert covered == list(range(count)), (size, count)
            assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1


def test_weighted_shard_losses_average_to_the_global_mean():
    log_probs = torch.randn(63, 10, requires_grad=True).log_softmax(dim=1)
    labels = torch.randint(0, 10, (63,))
    assert torch.equal(shard_loss(log_probs, labels, 63, World()), F.nll_loss(log_probs, labels))  # weight 1.0
    for size in (2, 3, 5):
        # DDP averages the ranks' gradients: the average of the ranks' losses must be the global batch's mean.
        worlds = [World(rank, size) for rank in range(size)]
        parts = [shard_loss(log_probs[w.share(63)], labels[w.share(63)], 63, w) for w in worlds]
        assert torch.allclose(sum(parts) / size, F.nll_loss(log_probs, labels), atol=1e-6)
    last = World(1, 2)  # an epoch's final batch of one image leaves rank 1 of 2 nothing
    assert last.share(1) == slice(1, 1)
    empty = shard_loss(log_probs[last.share(1)], labels[last.share(1)], 1, last)
    empty.backward()  # still a graph, so the rank joins DDP's all-reduce; it adds nothing
    assert empty.item() == 0.0


@pytest.fixture(scope="module")
def two_process_run(data_dir, tmp_path_factory):
    """torchrun --nproc-per-node 2 on 6,000 real MNIST images (1,000 held out), 2 epochs, default batch 64."""
    out = tmp_path_factory.mktemp("ddp") / "checkpoints"
    proc = run(torchrun("-m", "trainer", "--epochs", 2, "--train-limit", 6000, "--val-size", 1000,
                        "--data-dir", data_dir, "--out", out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


@pytest.mark.slow
def test_two_processes_write_one_checkpoint_and_report_once(two_process_run):
    proc, out = two_process_run
    assert {p.name for p in out.iterdir()} == OUTPUTS  # nothing half-written beside them
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["backend"] == "gloo" and metrics["test_images"] == 10000
    assert metrics["seconds_per_epoch"] > 0 and [e["epoch"] for e in metrics["history"]] == [1, 2]
    assert metrics["config"]["batch_size"] == 64  # the global batch
    assert proc.stderr.count("epoch   1  train loss") == 1 and proc.stderr.count("test accuracy") == 1
    assert "× 2 processes (gloo)" in proc.stderr and "Traceback" not in proc.stderr
    model, _ = load_checkpoint(out / "digit.safetensors")  # strict load into the plain Digit: no "module."
    assert set(model.state_dict()) == {f"{layer}.{kind}" for layer in ("conv1", "conv2", "fc1", "fc2")
                                       for kind in ("weight", "bias")}


@pytest.mark.slow
def test_two_process_checkpoint_exports_and_classifies(two_process_run, data_dir, mnist_pngs, tmp_path):
    _, out = two_process_run
    artifacts = tmp_path / "artifacts"
    proc = run_cli("digits-export", "--checkpoint", out / "digit.safetensors", "--out", artifacts,
                   "--data-dir", data_dir, "--parity-samples", 500, "--no-aoti")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    manifest = json.loads((artifacts / "manifest.json").read_text())
    assert manifest["source"]["metrics"]["test_accuracy"] == json.loads((out / "metrics.json").read_text())[
        "test_accuracy"]
    proc = run_cli("digits-infer", mnist_pngs, "--model-dir", artifacts, "--backend", "onnx", "-o",
                   tmp_path / "p.csv", "--quiet")
    assert proc.returncode == 0, proc.stderr
    correct, total = accuracy(tmp_path / "p.csv", mnist_pngs / "labels.csv")
    assert total == 1000 and correct > 900


@pytest.mark.slow
def test_two_processes_reach_the_single_process_accuracy(two_process_run, data_dir):
    _, out = two_process_run
    two = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    one = fit(TrainConfig(epochs=2, train_limit=6000, val_size=1000), data_dir).test.accuracy
    assert two > 0.9 and abs(two - one) <= 0.01, (two, one)


@pytest.mark.slow
def test_global_batch_gives_the_single_process_weights(data_dir, tmp_path):
    """Without augmentation and dropout (whose draws differ per rank), two processes make the same steps as one:
    the global batch of 107 splits 54/53, and the epoch's last batch of a single image leaves rank 1 none."""
    config = TrainConfig(epochs=2, batch_size=107, val_size=500, train_limit=1571, test_limit=500, augment=False,
                         style_augment=False, dropout=False)
    assert (config.train_limit - config.val_size) % config.batch_size == 1
    proc = run(torchrun("-m", "trainer", "--epochs", 2, "--batch-size", 107, "--val-size", 500, "--train-limit", 1571,
                        "--test-limit", 500, "--no-augment", "--no-style-augment", "--no-dropout", "--data-dir",
                        data_dir, "--out", tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    two, _ = load_checkpoint(tmp_path / "digit.safetensors")
    one = fit(config, data_dir)
    for name, value in one.model.state_dict().items():
        assert torch.allclose(two.state_dict()[name], value, rtol=0, atol=1e-5), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["train_loss"] for e in metrics["history"]] == pytest.approx([r.train_loss for r in one.history],
                                                                          rel=1e-5)


@pytest.mark.slow
def test_two_process_evaluation_counts_every_image_once(tiny_run, data_dir, tmp_path):
    """1,001 test images (501 + 500) in batches of 100: exactly the single-process accuracy and predictions."""
    checkpoint = tiny_run[1] / "digit.safetensors"
    proc = run(torchrun("-m", "tests.ddp_evaluate", checkpoint, 1001, 100, tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, _ = load_checkpoint(checkpoint)
    split = load_split(data_dir, train=False, download=False).subset(1001)
    alone = evaluate(model, to_float(split.images), split.labels, 100)
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["share"] for r in ranks] == [501, 500]
    for rank in ranks:
        assert rank["world_size"] == 2 and rank["backend"] == "gloo"
        assert rank["accuracy"] == alone.accuracy
        assert rank["predictions"] == alone.predictions.tolist()
        assert rank["loss"] == pytest.approx(alone.loss, rel=1e-5)


@pytest.mark.slow
def test_killing_a_rank_mid_epoch_fails_the_job_and_writes_nothing(tiny_run, data_dir, tmp_path):
    out = tmp_path / "checkpoints"
    before = small_checkpoint(tiny_run, out)
    ready = tmp_path / "paused"
    process = start(torchrun("-m", "trainer", "--epochs", 2, "--train-limit", 2000, "--val-size", 500,
                             "--data-dir", data_dir, "--out", out), env={PAUSE_ENV: f"1:5:{ready}"})
    os.kill(wait_for_pause(process, ready), signal.SIGKILL)  # rank 1, at step 5 of 24 in epoch 1
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "Signal 9 (SIGKILL)" in stderr and "epoch   1  train loss" not in stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no new or half-written checkpoint


@pytest.mark.slow
def test_ctrl_c_ends_every_rank(tiny_run, data_dir, tmp_path):
    out = tmp_path / "checkpoints"
    before = small_checkpoint(tiny_run, out)
    ready = tmp_path / "paused"
    process = start(torchrun("-m", "trainer", "--epochs", 2, "--train-limit", 2000, "--val-size", 500,
                             "--data-dir", data_dir, "--out", out), env={PAUSE_ENV: f"1:5:{ready}"})
    wait_for_pause(process, ready)
    workers = children(process.pid)
    assert len(workers) == 2
    process.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends to torchrun
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0 and "digits-train: interrupted" in stderr
    assert not any(alive(pid) for pid in workers)
    assert no_frame_of_ours(stderr), stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_rank_that_loses_its_peer_says_so_in_one_line(data_dir, tmp_path):
    """Ranks started by hand as torchrun would on two nodes, so no local launcher ends the survivor: when rank 1
    dies, rank 0's pending all-reduce fails and it exits 1 with one line instead of a traceback."""
    world = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    command = [str(BIN / "digits-train"), "--epochs", "2", "--train-limit", "2000", "--val-size", "500",
               "--data-dir", str(data_dir), "--out", str(tmp_path / "checkpoints")]
    ready = tmp_path / "paused"
    survivor = start(command, env={**world, "RANK": "0", "LOCAL_RANK": "0"})
    victim = start(command, env={**world, "RANK": "1", "LOCAL_RANK": "1", PAUSE_ENV: f"1:5:{ready}"})
    try:
        os.kill(wait_for_pause(victim, ready), signal.SIGKILL)
        _, stderr = survivor.communicate(timeout=300)
    finally:
        for process in (survivor, victim):
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert survivor.returncode == 1 and "Traceback" not in stderr, stderr
    assert "digits-train: error: rank 0 of 2 lost the other processes" in stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_cuda_without_a_gpu_exits_2_on_every_rank(data_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error path cannot happen here")
    proc = run(torchrun("-m", "trainer", "--device", "cuda", "--data-dir", data_dir, "--out", tmp_path))
    assert proc.returncode != 0
    line = "digits-train: error: --device cuda: cuda was requested, but torch sees no CUDA device on this machine"
    assert proc.stderr.count(line) == 2, proc.stderr
    # torchrun's report names a rank that exited 2 as the root cause; the other rank, which printed its line too,
    # may be ended by torchrun (SIGTERM) before its own exit, so its code is not asserted
    assert "exitcode  : 2 " in proc.stderr and "Root Cause" in proc.stderr, proc.stderr
    assert no_frame_of_ours(proc.stderr) and not any(tmp_path.iterdir())
