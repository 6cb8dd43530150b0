"""`make bench`: training and batch inference measured side by side in one run, on this machine.

Inference runs on the 10,000 MNIST test images written once as 28×28 PNG files (cached in bench/.cache).
Every ratio in the table comes from numbers measured in this same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from bench import ranking
from bench.arith import pipeline_limit, rate, ratio
from bench.large import measure_large
from bench.mnist_png import write_mnist_pngs
from bench.ray_bench import measure_ray, show_ray
from bench.stages import (
    HERE,
    image_files,
    infer_command,
    measure_decode,
    measure_end_to_end,
    measure_memory,
    measure_model,
    measure_naive,
    median_wall,
)
from bench.suite import measure_styles, style_rows
from bench.torch_formats import measure_formats, show_formats
from bench.training import measure_training, show_data_parallel
from infer.contract import ArtifactError, read_manifest
from infer.devices import DeviceError
from trainer.data import resolve_data_dir


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
        if args.per_style:
            results["styles"] = measure_styles(data_dir, args, cores, scratch)
        if args.large:
            results["large"] = measure_large(data_dir, args, scratch)
        if args.memory_files:
            results["memory"] = measure_memory(folder, args.memory_files, args.model_dir, args.batch_size, scratch)
        results["ranking"] = ranking.measure(folder, data_dir, args.cache, args.per_style, args.model_dir,
                                             args.batch_size, scratch)
        if args.ray:
            results["ray"] = measure_ray(folder, args.model_dir, args.batch_size, scratch, args.memory_files or 100000)
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
    if "styles" in results:
        table = results["styles"]["accuracy"]
        worst = min((v["accuracy"], k) for k, v in table.items() if k != "all")
        rows.append(("style suite ≥ 98% on every style", worst[0] >= 0.98, f"lowest {worst[1]} {worst[0]:.2%}"))
        rows.append(("style suite ≥ 98.5% overall", table["all"]["accuracy"] >= 0.985,
                     f"{table['all']['accuracy']:.2%}"))
        if "mnist" in table:
            rows.append(("style suite: mnist ≥ 99.4%", table["mnist"]["accuracy"] >= 0.994,
                         f"{table['mnist']['accuracy']:.2%}"))
        rows.append(("style suite end to end ≥ 80% of decode+preprocess", results["styles"]["vs_decode"] >= 0.8,
                     f"{results['styles']['vs_decode']:.0%}"))
    for big in results.get("large", []):
        rows.append((f"{big['file']} answered in < 2 s within decoded + 200 MB",
                     big["seconds"] < 2 and big["peak_rss_mb"] < big["decoded_mb"] + 200,
                     f"{big['seconds']:.2f} s, {big['peak_rss_mb']:.0f} MB ({big['answer']})"))
    if "training" in results:
        rows.append(("trainer epoch no slower than seed", results["training"]["speedup"] >= 1,
                     f"{results['training']['speedup']:.2f}× faster"))
    return rows + ranking.goals(results["ranking"])


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
    if "styles" in results:
        suite = results["styles"]
        styles = Table(title=f"style suite: {suite['images']:,} images of MNIST test digits, {suite['per_style']} per "
                             "style (digits-infer --backend onnx, whole process)")
        for column in ("style", "accuracy", "error rows"):
            styles.add_column(column, justify="left" if column == "style" else "right")
        for row in style_rows(suite):
            styles.add_row(*row)
        console.print(styles)
        console.print(f"style suite throughput: decode+preprocess {suite['decode_preprocess_images_per_s']:,.0f} "
                      f"images/s on all cores; digits-infer end to end {suite['end_to_end_images_per_s']:,.0f} "
                      f"images/s = {suite['vs_decode']:.0%} of it (medians of turns taken in alternation; "
                      f"each turn: {', '.join(f'{turn:.0%}' for turn in suite['vs_decode_per_turn'])})")
    for big in results.get("large", []):
        console.print(f"{big['file']} ({big['bytes'] / 1e6:.1f} MB file, {big['decoded_mb']:,.0f} MB decoded): "
                      f"{big['seconds']:.2f} s, peak RSS {big['peak_rss_mb']:.0f} MB, answer {big['answer']}")
    s = results["startup"]
    console.print(f"start-up: digits-infer on one image (onnx) {s['digits_infer_one_image_s']:.2f}s vs "
                  f"python -c 'import torch' {s['python_import_torch_s']:.2f}s → {s['ratio']:.2f}×")
    if "memory" in results:
        m = results["memory"]
        console.print(f"peak RSS: {m['files_small']:,} files {m['rss_mib_small']:.0f} MiB, {m['files_large']:,} files "
                      f"{m['rss_mib_large']:.0f} MiB ({m['growth']:+.1%}); {m['images_per_s_large']:,.0f} images/s")
    if "ray" in results:
        show_ray(console, results["ray"])
    if "training" in results:
        t = results["training"]
        console.print(f"training, one epoch at batch 64 on {t['device']}: ours {t['ours_epoch_s']:.1f}s "
                      f"(test {t['ours_test_accuracy']:.2%}) vs seed loop {t['seed_epoch_s']:.1f}s "
                      f"(test {t['seed_test_accuracy']:.2%}) → {t['speedup']:.2f}× faster")
        show_data_parallel(console, t["data_parallel"])
    ranking.show(console, results["ranking"])
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
    parser.add_argument("--per-style", type=int, default=1000, help="style-suite images per style; 0 skips the suite")
    parser.add_argument("--large", action=argparse.BooleanOptionalAction, default=True,
                        help="time a 10000×10000 PNG, a 96 MP JPEG and a float TIFF, one process each")
    parser.add_argument("--memory-files", type=int, default=100000, help="files for the RSS run; 0 skips it")
    parser.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True,
                        help="--engine ray next to local on 10k and 100k files, and its scaling numbers")
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
