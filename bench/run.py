"""`make bench`: training and batch inference measured side by side in one run, on this machine.

Inference runs on the 10,000 MNIST test images written once as 28×28 PNG files (cached in bench/.cache).
Every ratio in the table comes from numbers measured in this same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.arith import growth, pipeline_limit, rate, ratio
from bench.mnist_png import write_mnist_pngs
from bench.scans import write_scans
from bench.torch_formats import measure_formats, show_formats
from infer.contract import ArtifactError, read_manifest
from infer.devices import DeviceError
from trainer.data import resolve_data_dir

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def image_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.suffix in (".png", ".jpg"))


def measure_decode(files: list[str], batch_size: int, workers: int) -> tuple[float, np.ndarray]:
    """images/s of the project's own read+decode+preprocess over the files on every core, no model.

    Worker processes, not threads: this is the machine's ceiling for the stage, free of the GIL, which is
    what the limit 1/(1/decode + 1/model) is meant to describe.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from infer.pipeline import Preparer, batched

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded_opencv) as pool:
        list(pool.map(_noop, range(workers)))  # workers started before the clock starts
        start = time.perf_counter()
        prepared = list(pool.map(Preparer(), batched(files, batch_size)))
        seconds = time.perf_counter() - start
    return rate(len(files), seconds), np.concatenate([p.images for p in prepared])


def _single_threaded_opencv() -> None:
    import cv2

    cv2.setNumThreads(1)


def _noop(_: int) -> None:
    return None


def measure_model(backend: str, model_dir: Path, images: np.ndarray, batch_size: int, device: str,
                  threads: int, repeats: int = 3) -> tuple[float, str]:
    """images/s of one backend on already preprocessed tensors (best of `repeats` passes)."""
    from infer.backends import open_model

    opened = open_model(read_manifest(model_dir), backend, None, device, threads)
    opened.classify(images[:batch_size])  # warm-up: session or JIT initialisation
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            opened.classify(images[i : i + batch_size])
        best = max(best, rate(len(images), time.perf_counter() - start))
    return best, opened.device


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


def peak_rss_kib(args: list[str]) -> int:
    """Peak RSS of a command, measured through the small bench.rss launcher (see its docstring)."""
    report = subprocess.run([sys.executable, "-m", "bench.rss", *args], capture_output=True, text=True, check=True,
                            cwd=HERE.parent)
    result = json.loads(report.stdout)
    if result["exit"] != 0:
        raise SystemExit(f"bench: {' '.join(args[:2])} exited {result['exit']}")
    return result["max_rss_kib"]


def infer_command(paths: list[str], model_dir: Path, out: Path, backend: str, device: str, batch: int) -> list[str]:
    return [str(BIN / "digits-infer"), *paths, "--model-dir", str(model_dir), "-o", str(out), "--backend", backend,
            "--device", device, "--batch-size", str(batch), "--quiet"]


def measure_end_to_end(folder: Path, model_dir: Path, backend: str, device: str, batch: int, out: Path,
                       repeats: int) -> float:
    """Median wall seconds of digits-infer on the whole folder, as a user runs it (start-up and CSV included)."""
    command = infer_command([str(folder)], model_dir, out, backend, device, batch)
    if run_process(command)[1] != 0:
        raise SystemExit(f"bench: digits-infer --backend {backend} failed on {folder}")
    return median_wall(command, repeats)


def median_wall(args: list[str], repeats: int) -> float:
    return statistics.median(run_process(args)[0] for _ in range(repeats))


def measure_memory(folder: Path, files: int, model_dir: Path, batch: int, scratch: Path) -> dict[str, float]:
    """Peak RSS of digits-infer (onnx) on the 10k folder and on `files` hard-linked copies of it, and the
    whole-process rate on the large run (start-up amortised)."""
    copies = scratch / "many"
    sources = image_files(folder)
    for made in range(0, files, len(sources)):
        part = copies / f"part{made // len(sources):03d}"
        part.mkdir(parents=True)
        for source in sources[: files - made]:
            os.link(source, part / Path(source).name)
    small = peak_rss_kib(infer_command([str(folder)], model_dir, scratch / "m1.csv", "onnx", "cpu", batch))
    large = peak_rss_kib(infer_command([str(copies)], model_dir, scratch / "m2.csv", "onnx", "cpu", batch))
    seconds, _ = run_process(infer_command([str(copies)], model_dir, scratch / "m3.csv", "onnx", "cpu", batch))
    shutil.rmtree(copies)
    return {"rss_mib_small": small / 1024, "rss_mib_large": large / 1024, "files_small": len(sources),
            "files_large": files, "growth": growth(small, large), "images_per_s_large": rate(files, seconds)}


def measure_scans(data_dir: Path, args: argparse.Namespace, cores: int, scratch: Path) -> dict[str, float]:
    """The same stages on synthetic scans (64–160 px, paper, pen, transparent PNG, JPEG), which take the full
    preprocessing path that MNIST-form images skip; with the accuracy digits-infer reaches on them."""
    from infer.score import accuracy

    folder = args.cache / f"scans_{args.scans}"
    write_scans(data_dir, folder, args.scans)
    files = image_files(folder)
    decode_rate, _ = measure_decode(files, args.batch_size, cores)
    out = scratch / "scans.csv"
    seconds = measure_end_to_end(folder, args.model_dir, "onnx", "cpu", args.batch_size, out, args.repeats)
    correct, total = accuracy(out, folder / "labels.csv")
    return {"images": len(files), "decode_preprocess_images_per_s": decode_rate,
            "end_to_end_images_per_s": rate(len(files), seconds), "accuracy": correct / max(total, 1)}


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
            "speedup": ratio(seed_seconds, ours.history[0].seconds)}


def ensure_model(model_dir: Path) -> Path:
    """The source checkpoint of the exported model (for the naive loop), found through its manifest."""
    try:
        checkpoint = read_manifest(model_dir).checkpoint_path()
    except ArtifactError as exc:
        raise SystemExit(f"bench: {exc}; run `make train export` first") from None
    if checkpoint is None or not checkpoint.is_file():
        raise SystemExit(f"bench: the source checkpoint {checkpoint} of {model_dir} is gone; run `make train export`")
    return checkpoint


def run(args: argparse.Namespace) -> dict:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench: --device cuda, but torch sees no CUDA device on this machine")
    data_dir = resolve_data_dir(args.data_dir)
    checkpoint = ensure_model(args.model_dir)
    cores = os.cpu_count() or 1
    folder = args.cache / f"mnist_png_{args.images}"
    write_mnist_pngs(data_dir, folder, args.images)
    files = image_files(folder)
    results: dict = {"machine": {"cores": cores, "platform": platform.platform(), "python": platform.python_version(),
                                 "processor": platform.processor() or platform.machine()},
                     "images": len(files), "batch_size": args.batch_size, "device": args.device}

    decode_rate, tensors = measure_decode(files, args.batch_size, cores)
    measure_decode(files, args.batch_size, cores)  # the page cache is warm from here on
    decode_rate = max(decode_rate, measure_decode(files, args.batch_size, cores)[0])
    results["decode_preprocess_images_per_s"] = decode_rate
    naive = measure_naive(files[: args.naive_images], checkpoint, "cuda" if args.device == "cuda" else "cpu")
    results["naive_images_per_s"] = naive
    backends = {}
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as scratch:
        scratch = Path(scratch)
        for backend in ("onnx", "torch"):
            try:
                model_rate, used = measure_model(backend, args.model_dir, tensors, args.batch_size, args.device,
                                                 cores)
            except DeviceError as exc:  # e.g. --device cuda without onnxruntime-gpu: measure the others
                results.setdefault("skipped", {})[backend] = str(exc)
                continue
            limit = pipeline_limit(decode_rate, model_rate)
            seconds = measure_end_to_end(folder, args.model_dir, backend, args.device, args.batch_size,
                                         scratch / f"{backend}.csv", args.repeats)
            one = infer_command([files[0]], args.model_dir, scratch / "one.csv", backend, args.device, args.batch_size)
            startup = median_wall(one, args.repeats)
            e2e, steady = rate(len(files), seconds), rate(len(files), seconds - startup)
            backends[backend] = {"device": used, "model_images_per_s": model_rate, "limit_images_per_s": limit,
                                 "end_to_end_images_per_s": e2e, "vs_naive": ratio(e2e, naive),
                                 "vs_limit": ratio(e2e, limit), "one_image_s": startup,
                                 "steady_images_per_s": steady, "steady_vs_limit": ratio(steady, limit)}
        results["backends"] = backends
        results["formats"] = measure_formats(args.model_dir, folder, tensors, args.batch_size, args.device, cores,
                                             args.repeats, scratch)
        one_cpu = infer_command([files[0]], args.model_dir, scratch / "one.csv", "onnx", "cpu", args.batch_size)
        infer_one = backends["onnx"]["one_image_s"] if args.device == "cpu" else median_wall(one_cpu, args.repeats)
        import_torch = median_wall([sys.executable, "-c", "import torch"], args.repeats)
        results["startup"] = {"digits_infer_one_image_s": infer_one, "python_import_torch_s": import_torch,
                              "ratio": ratio(infer_one, import_torch)}
        if args.scans:
            results["scans"] = measure_scans(data_dir, args, cores, scratch)
        if args.memory_files:
            results["memory"] = measure_memory(folder, args.memory_files, args.model_dir, args.batch_size, scratch)
    if args.train:
        results["training"] = measure_training(data_dir, args.device)
    return results


def goals(results: dict) -> list[tuple[str, bool, str]]:
    """(goal, met, measured) for each goal of the benchmark issue that this run measured."""
    rows = []
    if onnx := results["backends"].get("onnx"):
        rows.append(("onnx end to end ≥ 5× naive", onnx["vs_naive"] >= 5, f"{onnx['vs_naive']:.1f}×"))
        rows.append(("onnx end to end ≥ 50% of limit", onnx["vs_limit"] >= 0.5, f"{onnx['vs_limit']:.0%}"))
    if torch_row := results["backends"].get("torch"):
        rows.append(("torch end to end ≥ 3× naive", torch_row["vs_naive"] >= 3, f"{torch_row['vs_naive']:.1f}×"))
    rows.append(("one image (onnx) ≤ 0.5× import torch", results["startup"]["ratio"] <= 0.5,
                 f"{results['startup']['ratio']:.2f}×"))
    if "memory" in results:
        rows.append(("peak RSS 100k within 20% of 10k", results["memory"]["growth"] <= 0.2,
                     f"{results['memory']['growth']:+.0%}"))
    if "training" in results:
        rows.append(("trainer epoch no slower than seed", results["training"]["speedup"] >= 1,
                     f"{results['training']['speedup']:.2f}× faster"))
    return rows


def show(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"inference on {results['images']} MNIST PNGs, batch {results['batch_size']}, "
                        f"{results['machine']['cores']} cores")
    for column in ("stage", "images/s", "× naive", "of limit"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    naive = results["naive_images_per_s"]
    table.add_row("decode+preprocess only (all cores)", f"{results['decode_preprocess_images_per_s']:,.0f}", "", "")
    table.add_row("naive per-image loop (eager torch)", f"{naive:,.0f}", "1.0×", "")
    for name, row in results["backends"].items():
        table.add_row(f"{name}: model only ({row['device']})", f"{row['model_images_per_s']:,.0f}", "", "")
        table.add_row(f"{name}: limit 1/(1/decode+1/model)", f"{row['limit_images_per_s']:,.0f}", "", "")
        table.add_row(f"{name}: digits-infer end to end", f"{row['end_to_end_images_per_s']:,.0f}",
                      f"{row['vs_naive']:.1f}×", f"{row['vs_limit']:.0%}")
        table.add_row(f"{name}:   same, less its {row['one_image_s']:.2f}s start-up",
                      f"{row['steady_images_per_s']:,.0f}",
                      f"{ratio(row['steady_images_per_s'], naive):.1f}×", f"{row['steady_vs_limit']:.0%}")
    console.print(table)
    show_formats(console, results["formats"], results["batch_size"])
    for name, reason in results.get("skipped", {}).items():
        console.print(f"skipped {name}: {reason}")
    if "scans" in results:
        sc = results["scans"]
        console.print(f"scans ({sc['images']:,} synthetic, full preprocessing path): decode+preprocess "
                      f"{sc['decode_preprocess_images_per_s']:,.0f} images/s on all cores; digits-infer (onnx) end to "
                      f"end {sc['end_to_end_images_per_s']:,.0f} images/s; accuracy {sc['accuracy']:.2%}")
    s = results["startup"]
    console.print(f"start-up: digits-infer on one image (onnx) {s['digits_infer_one_image_s']:.2f}s vs "
                  f"python -c 'import torch' {s['python_import_torch_s']:.2f}s → {s['ratio']:.2f}×")
    if "memory" in results:
        m = results["memory"]
        console.print(f"peak RSS: {m['files_small']:,} files {m['rss_mib_small']:.0f} MiB, {m['files_large']:,} files "
                      f"{m['rss_mib_large']:.0f} MiB ({m['growth']:+.1%}); {m['images_per_s_large']:,.0f} images/s")
    if "training" in results:
        t = results["training"]
        console.print(f"training, one epoch at batch 64 on {t['device']}: ours {t['ours_epoch_s']:.1f}s "
                      f"(test {t['ours_test_accuracy']:.2%}) vs seed loop {t['seed_epoch_s']:.1f}s "
                      f"(test {t['seed_test_accuracy']:.2%}) → {t['speedup']:.2f}× faster")
    for goal, met, measured in goals(results):
        console.print(f"{'met ' if met else 'MISS'}  {goal}: {measured}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000, help="MNIST test images to write and classify")
    parser.add_argument("--naive-images", type=int, default=2000, help="images timed in the naive loop")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=HERE / ".cache")
    parser.add_argument("--scans", type=int, default=2000, help="synthetic scans for the scan rows; 0 skips them")
    parser.add_argument("--memory-files", type=int, default=100000, help="files for the RSS run; 0 skips it")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each whole-process timing (median)")
    parser.add_argument("--train", action=argparse.BooleanOptionalAction, default=True, help="time one epoch each")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args)
    show(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
