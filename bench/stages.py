"""The benchmark's measurements of inference, each a small function: decode+preprocess on all cores, a
backend on ready tensors, the naive loop, digits-infer as a whole process (wall time and peak RSS)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.arith import growth, rate
from infer.contract import read_manifest
from infer.discover import IMAGE_EXTENSIONS

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def image_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def measure_decode(files: list[str], batch_size: int, workers: int) -> tuple[float, np.ndarray]:
    """images/s of the project's own read+decode+preprocess over the files on every core, no model.

    Worker processes, not threads: this is the machine's ceiling for the stage, free of the GIL, which is
    what the limit 1/(1/decode + 1/model) is meant to describe. They are spawned, never forked: a fork taken
    while OpenCV's or ONNX Runtime's thread pool holds a lock leaves the child waiting on it for ever.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from infer.pipeline import Preparer, batched

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded_opencv) as pool:
        list(pool.map(_noop, range(workers)))  # workers started before the clock starts
        start = time.perf_counter()
        prepared = list(pool.map(Preparer(), batched(files, batch_size)))
        seconds = time.perf_counter() - start
    return rate(len(files), seconds), np.concatenate([p.images for p in prepared])


def _single_threaded_opencv() -> None:
    """Each spawned worker's start: one OpenCV thread, and the project's modules imported before the clock
    starts (a forked worker had them from its parent; a spawned one would import them inside the timing)."""
    import cv2

    import infer.pipeline  # noqa: F401

    cv2.setNumThreads(1)


def _noop(_: int) -> None:
    return None


def measure_model(backend: str, model_dir: Path, images: np.ndarray, batch_size: int, device: str,
                  threads: int, repeats: int = 3) -> tuple[float, str]:
    """images/s of one backend on already preprocessed tensors (best of `repeats` passes)."""
    from infer.backends import open_model

    opened = open_model(read_manifest(model_dir), backend, None, device, threads)
    return classifier_rate(opened.classify, images, batch_size, repeats), opened.device


def classifier_rate(classify, images: np.ndarray, batch_size: int, repeats: int) -> float:
    """Best images/s of `repeats` passes over ready tensors, after one warm-up batch (session or JIT set-up)."""
    classify(images[:batch_size])
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            classify(images[i : i + batch_size])
        best = max(best, rate(len(images), time.perf_counter() - start))
    return best


def measure_naive(files: list[str], checkpoint: Path, device: str) -> float:
    """The per-image loop someone would write from the seed's blog: imread, normalise, one eager forward each."""
    import cv2
    import torch

    from trainer.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint)[0].to(device)
    start = time.perf_counter()
    with torch.no_grad():
        for path in files:
            image = cv2.imread(path, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
            tensor = torch.from_numpy((image - 0.1307) / 0.3081)[None, None].to(device)
            int(model(tensor).argmax(1).item())
    return rate(len(files), time.perf_counter() - start)


def run_process(args: list[str]) -> tuple[float, int]:
    """Wall seconds and exit code of one child process."""
    start = time.perf_counter()
    code = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - start, code


def peak_rss(args: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in KiB, exit code) of a command, through the small bench.rss launcher."""
    report = subprocess.run([sys.executable, "-m", "bench.rss", *args], capture_output=True, text=True, check=True,
                            cwd=HERE.parent)
    result = json.loads(report.stdout)
    return result["seconds"], result["max_rss_kib"], result["exit"]


def peak_rss_kib(args: list[str]) -> int:
    """Peak RSS of a command that must succeed."""
    _, rss, code = peak_rss(args)
    if code != 0:
        raise SystemExit(f"bench: {' '.join(args[:2])} exited {code}")
    return rss


def infer_command(paths: list[str], model_dir: Path, out: Path, backend: str, device: str, batch: int) -> list[str]:
    return [str(BIN / "digits-infer"), *paths, "--model-dir", str(model_dir), "-o", str(out), "--backend", backend,
            "--device", device, "--batch-size", str(batch), "--quiet"]


def infer_seconds(command: list[str], allow_failures: bool = False) -> float:
    """Wall seconds of one digits-infer run that ended as it should: exit 0, or with `allow_failures` also 1 (some
    images refused, e.g. several digits). A crashed run is an error, never a fast time."""
    seconds, code = run_process(command)
    if code not in ((0, 1) if allow_failures else (0,)):
        raise SystemExit(f"bench: digits-infer exited {code} on {' '.join(command[1:2])}")
    return seconds


def measure_end_to_end(folder: Path, model_dir: Path, backend: str, device: str, batch: int, out: Path,
                       repeats: int, allow_failures: bool = False) -> float:
    """Median wall seconds of digits-infer on the whole folder, as a user runs it (start-up and CSV included),
    after one run that warms the page cache."""
    command = infer_command([str(folder)], model_dir, out, backend, device, batch)
    infer_seconds(command, allow_failures)
    return statistics.median(infer_seconds(command, allow_failures) for _ in range(repeats))


def linked_copies(folder: Path, files: int, into: Path) -> Path:
    """`files` hard links of the folder's images in parts of its size: a large folder at no disk cost."""
    sources = image_files(folder)
    for made in range(0, files, len(sources)):
        part = into / f"part{made // len(sources):03d}"
        part.mkdir(parents=True)
        for source in sources[: files - made]:
            os.link(source, part / Path(source).name)
    return into


def median_wall(args: list[str], repeats: int) -> float:
    return statistics.median(run_process(args)[0] for _ in range(repeats))


def measure_memory(folder: Path, files: int, model_dir: Path, batch: int, scratch: Path) -> dict[str, float]:
    """Peak RSS of digits-infer (onnx) on the 10k folder and on `files` hard-linked copies of it, and the
    whole-process rate on the large run (start-up amortised)."""
    copies = linked_copies(folder, files, scratch / "many")
    sources = image_files(folder)
    small = peak_rss_kib(infer_command([str(folder)], model_dir, scratch / "m1.csv", "onnx", "cpu", batch))
    large = peak_rss_kib(infer_command([str(copies)], model_dir, scratch / "m2.csv", "onnx", "cpu", batch))
    seconds, _ = run_process(infer_command([str(copies)], model_dir, scratch / "m3.csv", "onnx", "cpu", batch))
    shutil.rmtree(copies)
    return {"rss_mib_small": small / 1024, "rss_mib_large": large / 1024, "files_small": len(sources),
            "files_large": files, "growth": growth(small, large), "images_per_s_large": rate(files, seconds)}
