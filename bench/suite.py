"""The style suite in the benchmark: accuracy per style and in total, and the whole-process rate of
digits-infer on the suite against decode+preprocess alone on all cores (the full preprocessing path)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.arith import rate, ratio
from bench.stages import image_files, measure_decode, measure_end_to_end
from bench.styles import STYLES, accuracy_by_style, write_styles


def measure_styles(data_dir: Path, args: argparse.Namespace, cores: int, scratch: Path) -> dict:
    folder = args.cache / f"styles_{args.per_style}"
    write_styles(data_dir, folder, args.per_style)
    files = image_files(folder)
    measure_decode(files[: len(files) // 5], args.batch_size, cores)  # the page cache is warm from here on
    decode_rate, _ = measure_decode(files, args.batch_size, cores)
    out = scratch / "styles.csv"
    seconds = measure_end_to_end(folder, args.model_dir, "onnx", "cpu", args.batch_size, out, args.repeats,
                                 allow_failures=True)
    end_to_end = rate(len(files), seconds)
    return {"images": len(files), "per_style": args.per_style, "decode_preprocess_images_per_s": decode_rate,
            "end_to_end_images_per_s": end_to_end, "vs_decode": ratio(end_to_end, decode_rate),
            "accuracy": accuracy_by_style(out, folder / "labels.csv"), "csv": str(out)}


def style_rows(suite: dict) -> list[tuple[str, str, str]]:
    """(style, accuracy, failed rows) in the suite's order, then the total."""
    table = suite["accuracy"]
    return [(style, f"{table[style]['accuracy']:.2%}", str(table[style]["failed"]))
            for style in (*STYLES, "all") if style in table]
