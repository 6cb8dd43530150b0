"""`--engine ray` in the benchmark: the ray engine next to the local one on the same 10k and 100k files (whole
process, in the same run), Ray's start-up, and the two rates that decide how far it scales:

- one actor's images/s (a pool of one, timed from its first block to its last: start-up excluded);
- the driver's own rate when rows arrive precomputed: walking the paths, putting them into Ray's input blocks,
  taking result blocks back in order, and writing the CSV through the sink, without any Ray work.

A cluster of N nodes with C cores each classifies at about N·C·actor rate until that reaches the driver's rate:
N = driver rate / (C · actor rate) is where the driver becomes the bottleneck. That N is a projection from
numbers measured on this one machine. `python -m bench.ray_bench` runs this part alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.arith import rate, ratio
from bench.mnist_png import write_mnist_pngs
from bench.stages import BIN, HERE, image_files, linked_copies, run_process

LINKED = 100_000


def ray_command(paths: list[str], model_dir: Path, out: Path, batch: int, engine: str) -> list[str]:
    return [str(BIN / "digits-infer"), *paths, "--model-dir", str(model_dir), "-o", str(out), "--batch-size",
            str(batch), "--engine", engine, "--quiet"]


def whole_process(paths: list[str], model_dir: Path, out: Path, batch: int, engine: str) -> float:
    seconds, code = run_process(ray_command(paths, model_dir, out, batch, engine))
    if code != 0:
        raise SystemExit(f"bench: digits-infer --engine {engine} exited {code}")
    return seconds


def one_actor(folder: Path, model_dir: Path, batch: int) -> dict[str, float]:
    """images/s of a pool of one actor (one CPU), in this process, from its first block to its last."""
    import logging

    import ray

    from infer.contract import read_manifest
    from infer.discover import Walk
    from infer.options import InferOptions
    from infer.ray_engine import open_ray

    start = time.perf_counter()
    ours = not ray.is_initialized()  # a Ray already running in this process (a test session's) is used as it is
    if ours:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    init_seconds = time.perf_counter() - start
    try:
        options = InferOptions(model_dir=model_dir, batch_size=batch, engine="ray", device="cpu")
        engine = open_ray(read_manifest(model_dir), options, [str(folder)], actors=1)
        first = count = 0
        begun = time.perf_counter()
        for rows in engine.batches(Walk([str(folder)])):
            if not first:
                first, head = time.perf_counter(), len(rows)
            count += len(rows)
        last = time.perf_counter()
    finally:
        if ours:
            ray.shutdown()
    return {"ray_init_s": init_seconds, "first_rows_s": first - begun,
            "images_per_s": rate(count - head, last - first)}


def driver_rate(folder: Path, out: Path, batch: int) -> float:
    """Rows per second through the driver's own work, with every row's probabilities already computed."""
    import pyarrow as pa

    from infer.csvout import CsvSink, Target
    from infer.discover import Walk, display_path
    from infer.job import JobRecord
    from infer.pipeline import Row
    from infer.ray_engine import WINDOW

    probabilities = np.full((batch, 10), 0.1, np.float32)
    record = JobRecord("0" * 64, "onnx", None, "cpu", {}, [])  # the sink writes a job record, as a run's does
    sink = CsvSink.open(Target(out, stream=False), tuple(str(d) for d in range(10)), record)
    start = time.perf_counter()
    count = 0
    window: list[str] = []
    for path in [*Walk([str(folder)]), None]:
        if path is not None:
            window.append(path)
        if len(window) == WINDOW or (path is None and window):
            for first in range(0, len(window), batch):  # input blocks, as RayEngine.dataset makes them
                chunk = window[first:first + batch]
                pa.table({"index": pa.array(range(first, first + len(chunk)), pa.int64()),
                          "path": pa.array([os.fsencode(p) for p in chunk], pa.binary())})
            for first in range(0, len(window), batch):  # result blocks back in order, as RayEngine.batches does
                chunk = window[first:first + batch]
                waiting = {first + i: (p, "") for i, p in enumerate(probabilities[: len(chunk)])}
                rows = [Row(display_path(window[i]), *waiting.pop(i)) for i in range(first, first + len(chunk))]
                sink.write(rows)
                count += len(rows)
            window = []
    sink.finish(0.0, 0)
    return rate(count, time.perf_counter() - start)


def measure_ray(folder: Path, model_dir: Path, batch: int, scratch: Path, linked: int = LINKED) -> dict:
    """The ray engine next to local on `folder` and on `linked` hard-linked copies of it, and the scaling rates."""
    cores = os.cpu_count() or 1
    files = len(image_files(folder))
    many = linked_copies(folder, linked, scratch / "ray-many")
    result: dict = {"cores": cores, "runs": {}}
    try:
        for name, paths, count in ((f"{files:,}", [str(folder)], files), (f"{linked:,}", [str(many)], linked)):
            row = {}
            for engine in ("local", "ray"):
                seconds = whole_process(paths, model_dir, scratch / f"{engine}-{name}.csv", batch, engine)
                row[engine] = {"seconds": seconds, "images_per_s": rate(count, seconds)}
            row["ray_vs_local"] = ratio(row["ray"]["images_per_s"], row["local"]["images_per_s"])
            result["runs"][name] = row
        one = image_files(folder)[:1]
        startup = {engine: whole_process(one, model_dir, scratch / "one.csv", batch, engine)
                   for engine in ("local", "ray")}
        result["one_image_s"] = startup
        result["ray_startup_s"] = startup["ray"] - startup["local"]
        result["actor"] = one_actor(folder, model_dir, batch)
        result["driver_images_per_s"] = driver_rate(many, scratch / "driver.csv", batch)
    finally:
        shutil.rmtree(many)
    node = cores * result["actor"]["images_per_s"]
    result["node_images_per_s"] = node
    result["nodes_at_driver_limit"] = result["driver_images_per_s"] / node
    return result


def show_ray(console, r: dict) -> None:
    from rich.table import Table

    table = Table(title=f"--engine ray next to --engine local, whole process, {r['cores']} cores")
    for column in ("files", "local images/s", "ray images/s", "ray ÷ local", "local s", "ray s"):
        table.add_column(column, justify="right")
    for name, row in r["runs"].items():
        table.add_row(name, f"{row['local']['images_per_s']:,.0f}", f"{row['ray']['images_per_s']:,.0f}",
                      f"{row['ray_vs_local']:.2f}×", f"{row['local']['seconds']:.1f}", f"{row['ray']['seconds']:.1f}")
    console.print(table)
    a = r["actor"]
    console.print(f"ray start-up: one image {r['one_image_s']['ray']:.1f}s vs local {r['one_image_s']['local']:.1f}s "
                  f"(+{r['ray_startup_s']:.1f}s); ray.init alone {a['ray_init_s']:.1f}s, first rows of one actor "
                  f"after {a['first_rows_s']:.1f}s")
    console.print(f"one actor (1 CPU): {a['images_per_s']:,.0f} images/s; a node of {r['cores']} cores "
                  f"≈ {r['node_images_per_s']:,.0f} images/s (projection)")
    console.print(f"driver alone (walk, input blocks, rows in order, CSV), rows precomputed: "
                  f"{r['driver_images_per_s']:,.0f} rows/s → the driver is the bottleneck at about "
                  f"{r['nodes_at_driver_limit']:.0f} nodes of {r['cores']} cores (projection)")


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console

    from trainer.data import resolve_data_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--cache", type=Path, default=HERE / ".cache")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    folder = args.cache / "mnist_png_10000"
    write_mnist_pngs(resolve_data_dir(None), folder, 10000)
    with tempfile.TemporaryDirectory(prefix="digits-ray-bench-") as scratch:
        results = measure_ray(folder, args.model_dir, args.batch_size, Path(scratch))
    show_ray(Console(), results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
