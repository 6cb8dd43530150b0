"""The model formats side by side, for `make bench` (bench.run calls it): ONNX Runtime next to every PyTorch
format the manifest lists (pt2, aoti, torchscript).

For each: the file's size; its load time in a fresh process that has already imported its runtime (torch or
onnxruntime), so the format's own imports count as they do for a digits-infer run, and the same load again in
that process (warm); model-only images/s on the bench's preprocessed tensors at its batch size; and
digits-infer end to end on the bench's PNG folder (whole process). Every row is measured the same way in the
same run, so the rows compare.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.arith import rate
from bench.stages import classifier_rate
from infer.backends import MODEL_FORMATS
from infer.contract import read_manifest
from infer.devices import DeviceError

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent
LOAD_CODE = """
import sys, time
import {runtime}
from infer.backends import MODEL_FORMATS
for _ in range(2):
    start = time.perf_counter()
    MODEL_FORMATS[sys.argv[1]].open(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    print(time.perf_counter() - start)
"""


def load_seconds(name: str, path: Path, device: str, threads: int, repeats: int) -> tuple[float, float]:
    """Median seconds from the runtime imported to the model ready (format imports, load, one probe image), and
    of the same load again in that process."""
    runtime = "onnxruntime" if name == "onnx" else "torch"
    first, again = [], []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", LOAD_CODE.format(runtime=runtime), name, str(path), device,
                               str(threads)], capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"bench: loading {path} failed: {done.stderr.strip().splitlines()[-1:]}")
        seconds = [float(line) for line in done.stdout.split()[-2:]]
        first.append(seconds[0])
        again.append(seconds[1])
    return statistics.median(first), statistics.median(again)


def model_images_per_s(name: str, path: Path, tensors: np.ndarray, batch_size: int, device: str, threads: int,
                       repeats: int) -> tuple[float, str]:
    """Best of `repeats` passes over the preprocessed tensors, after one warm-up batch."""
    opened = MODEL_FORMATS[name].open(path, device, threads)
    return classifier_rate(opened.classify, tensors, batch_size, repeats), opened.device


def end_to_end_images_per_s(name: str, folder: Path, model_dir: Path, device: str, batch_size: int, out: Path,
                            repeats: int, images: int) -> float:
    """digits-infer on the whole folder as a user runs it (start-up and CSV included): median of `repeats`."""
    backend = ["--backend", "onnx"] if name == "onnx" else ["--backend", "torch", "--torch-format", name]
    command = [str(BIN / "digits-infer"), str(folder), "--model-dir", str(model_dir), "-o", str(out), *backend,
               "--device", device, "--batch-size", str(batch_size), "--quiet"]
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        if subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"bench: digits-infer {' '.join(backend)} failed on {folder}")
        walls.append(time.perf_counter() - start)
    return rate(images, statistics.median(walls))


def measure_formats(model_dir: Path, folder: Path, tensors: np.ndarray, batch_size: int, device: str, threads: int,
                    repeats: int, scratch: Path) -> dict[str, dict]:
    """One row per format the manifest lists, ONNX first; a format that cannot run on `device` says why."""
    manifest = read_manifest(model_dir)
    rows: dict[str, dict] = {}
    for name in MODEL_FORMATS:
        if name not in manifest.artifacts:
            continue
        path = manifest.trusted_file(name)
        try:
            model_rate, used = model_images_per_s(name, path, tensors, batch_size, device, threads, repeats)
        except DeviceError as exc:  # the AOTInductor package on --device cuda, ORT without its CUDA provider
            rows[name] = {"skipped": str(exc)}
            continue
        load_s, warm_load_s = load_seconds(name, path, device, threads, repeats)
        rows[name] = {
            "device": used, "file": path.name, "mb": manifest.artifacts[name].bytes / 1e6, "load_s": load_s,
            "warm_load_s": warm_load_s, "model_images_per_s": model_rate,
            "end_to_end_images_per_s": end_to_end_images_per_s(name, folder, model_dir, device, batch_size,
                                                               scratch / f"format-{name}.csv", repeats, len(tensors)),
        }
    return rows


def fastest(rows: dict[str, dict], key: str) -> str:
    measured = {name: row[key] for name, row in rows.items() if key in row}
    return max(measured, key=measured.get) if measured else ""


def show_formats(console, rows: dict[str, dict], batch_size: int) -> None:
    from rich.table import Table

    table = Table(title=f"model formats: load s (fresh process / again), images/s (model only at batch {batch_size}; "
                        "digits-infer end to end)")
    for column in ("format", "device", "MB", "load s", "again s", "model only", "end to end"):
        table.add_column(column, justify="left" if column in ("format", "device") else "right")
    for name, row in rows.items():
        if "skipped" in row:
            table.add_row(name, "skipped", "", "", "", "", row["skipped"])
            continue
        table.add_row(name, row["device"], f"{row['mb']:.2f}", f"{row['load_s']:.2f}", f"{row['warm_load_s']:.3f}",
                      f"{row['model_images_per_s']:,.0f}", f"{row['end_to_end_images_per_s']:,.0f}")
    console.print(table)
    model, e2e = fastest(rows, "model_images_per_s"), fastest(rows, "end_to_end_images_per_s")
    if model:
        console.print(f"fastest here: model only {model} ({rows[model]['model_images_per_s']:,.0f} images/s); "
                      f"end to end {e2e} ({rows[e2e]['end_to_end_images_per_s']:,.0f} images/s)")
