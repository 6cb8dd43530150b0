"""Training benchmarks: one epoch of the default trainer against one epoch of the seed's loop, and against one
epoch of the same trainer data-parallel in two processes under torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.arith import ratio, ring_allreduce_bytes, transfer_seconds

REPO = Path(__file__).resolve().parent.parent


def measure_training(data_dir: Path, device: str) -> dict[str, float]:
    """One epoch of the default trainer against one epoch of the seed's loop, batch 64, same machine."""
    import torch

    from bench import seed_mnist
    from trainer.train import TrainConfig, fit

    ours = fit(TrainConfig(epochs=1, batch_size=64, device=device), data_dir)
    torch.manual_seed(0)
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = torch.utils.data.DataLoader(datasets.MNIST(str(data_dir), train=True, transform=tf), batch_size=64,
                                        shuffle=True)
    test = torch.utils.data.DataLoader(datasets.MNIST(str(data_dir), train=False, transform=tf), batch_size=1000)
    model = seed_mnist.Digit().to(ours.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    seed_mnist.train(model, ours.device, train, optimizer)
    seed_seconds = time.perf_counter() - start
    return {"device": ours.device, "ours_epoch_s": ours.history[0].seconds, "ours_test_accuracy": ours.test.accuracy,
            "ours_train_images": 60000 - 5000, "seed_epoch_s": seed_seconds,
            "seed_test_accuracy": seed_mnist.test(model, ours.device, test), "seed_train_images": 60000,
            "speedup": ratio(seed_seconds, ours.history[0].seconds),
            "data_parallel": measure_data_parallel(data_dir, ours.device, ours.history[0].seconds)}


def gradient_exchange(processes: int, train_images: int, batch_size: int) -> dict[str, float]:
    """What DDP all-reduces: every fp32 gradient of Digit once per step, and what that costs on a network."""
    from trainer.model import Digit

    gradient_bytes = sum(p.numel() * p.element_size() for p in Digit().parameters())
    steps = math.ceil(train_images / batch_size)
    per_step = ring_allreduce_bytes(gradient_bytes, processes)
    return {"parameters": sum(p.numel() for p in Digit().parameters()), "gradient_mb_per_step": gradient_bytes / 1e6,
            "sent_mb_per_process_per_step": per_step / 1e6, "steps_per_epoch": steps,
            "sent_gb_per_process_per_epoch": per_step * steps / 1e9,
            "network_s_per_epoch_1gbit": transfer_seconds(per_step * steps, 1.0),
            "network_s_per_epoch_10gbit": transfer_seconds(per_step * steps, 10.0)}


def measure_data_parallel(data_dir: Path, device: str, one_process_epoch_s: float, processes: int = 2,
                          train_limit: int | None = None) -> dict[str, object]:
    """One epoch of the default trainer (global batch 64) in `processes` processes through torchrun, as a
    subprocess, beside the one-process epoch of the same run. Each process gets one thread (torchrun's own
    default), so both runs use this machine's cores; on 2 cores this measures DDP's overhead, not a speed-up."""
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() < processes:
        return {"processes": processes, "skipped": f"{processes} processes need {processes} GPUs with NCCL; "
                                                    f"{torch.cuda.device_count()} here"}
    with tempfile.TemporaryDirectory(prefix="digits-bench-ddp-") as out:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                   "-m", "trainer", "--epochs", "1", "--device", "cuda" if device.startswith("cuda") else "cpu",
                   "--data-dir", str(data_dir), "--no-download", "--out", out,
                   *(["--train-limit", str(train_limit)] if train_limit else [])]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench: the {processes}-process training failed: {proc.stderr.strip()[-2000:]}")
        metrics = json.loads(Path(out, "metrics.json").read_text())
    epoch = metrics["history"][0]["seconds"]
    config = metrics["config"]
    train_images = (train_limit or 60000) - config["val_size"]
    return {"processes": processes, "backend": metrics["backend"], "epoch_s": epoch, "wall_s": wall,
            "test_accuracy": metrics["test_accuracy"], "one_process_epoch_s": one_process_epoch_s,
            "vs_one_process": ratio(one_process_epoch_s, epoch),
            **gradient_exchange(processes, train_images, config["batch_size"])}


def show_data_parallel(console, row: dict) -> None:
    """The data-parallel lines of `make bench`."""
    if "skipped" in row:
        console.print(f"data-parallel training: skipped ({row['skipped']})")
        return
    console.print(f"data-parallel training, one epoch at global batch 64: 1 process {row['one_process_epoch_s']:.1f}s, "
                  f"{row['processes']} processes ({row['backend']}, torchrun) {row['epoch_s']:.1f}s → "
                  f"{row['vs_one_process']:.2f}× (on the same cores: overhead, not speed-up; "
                  f"test {row['test_accuracy']:.2%})")
    console.print(f"gradient all-reduced per step: {row['gradient_mb_per_step']:.2f} MB ({row['parameters']:,} fp32 "
                  f"parameters); each process sends {row['sent_mb_per_process_per_step']:.2f} MB per step, "
                  f"{row['sent_gb_per_process_per_epoch']:.1f} GB per epoch of {row['steps_per_epoch']} steps: "
                  f"{row['network_s_per_epoch_1gbit']:.0f}s per epoch on 1 Gbit/s, "
                  f"{row['network_s_per_epoch_10gbit']:.1f}s on 10 Gbit/s")
