"""The style suite in the benchmark: accuracy per style and in total, and the whole-process rate of
digits-infer on the suite against decode+preprocess alone on all cores (the full preprocessing path)."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.arith import rate, ratio
from bench.stages import image_files, infer_command, infer_seconds, measure_decode
from bench.styles import STYLES, accuracy_by_style, write_styles


def measure_styles(data_dir: Path, args: argparse.Namespace, cores: int, scratch: Path) -> dict:
    """Accuracy per style, and the whole process's rate against decode+preprocess alone.

    The two rates are measured in turns (decode, then digits-infer, `repeats` times) and each is the median of
    its turns: on a shared machine the speed drifts over minutes, and a ratio of rates taken minutes apart
    measured the drift (72-98% of the same code in four runs)."""
    folder = args.cache / f"styles_{args.per_style}"
    write_styles(data_dir, folder, args.per_style)
    files = image_files(folder)
    measure_decode(files[: len(files) // 5], args.batch_size, cores)  # the page cache is warm from here on
    out = scratch / "styles.csv"
    command = infer_command([str(folder)], args.model_dir, out, "onnx", "cpu", args.batch_size)
    infer_seconds(command, allow_failures=True)  # a warm-up; exit 1 (several digits refused) is a normal outcome
    decode_rates, walls = [], []
    for _ in range(max(1, args.repeats)):
        decode_rates.append(measure_decode(files, args.batch_size, cores)[0])
        walls.append(infer_seconds(command, allow_failures=True))
    decode_rate, end_to_end = statistics.median(decode_rates), rate(len(files), statistics.median(walls))
    return {"images": len(files), "per_style": args.per_style, "decode_preprocess_images_per_s": decode_rate,
            "end_to_end_images_per_s": end_to_end, "vs_decode": ratio(end_to_end, decode_rate),
            "vs_decode_per_turn": [ratio(rate(len(files), wall), decode)
                                   for decode, wall in zip(decode_rates, walls, strict=True)],
            "accuracy": accuracy_by_style(out, folder / "labels.csv"), "csv": str(out)}


def style_rows(suite: dict) -> list[tuple[str, str, str]]:
    """(style, accuracy, failed rows) in the suite's order, then the total."""
    table = suite["accuracy"]
    return [(style, f"{table[style]['accuracy']:.2%}", str(table[style]["failed"]))
            for style in (*STYLES, "all") if style in table]
