"""Whole-process digits-infer from two source trees, alternated on the same folder and artifacts: the A/B that
says whether a change made the tool slower, as users run it (start-up, walk, decode, model and CSV together).

    git worktree add /tmp/before aa8b7f1
    python -m bench.compare_trees /tmp/before . --folder bench/.cache/mnist_png_10000 --runs 7

Runs alternate (before, after, before, ...) so that drift of the machine's speed hits both alike; medians are
reported. Each tree's `infer` package is imported from that tree (PYTHONPATH), with the same interpreter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(tree: Path, folder: Path, model_dir: Path, output: Path) -> float:
    """Seconds of one whole digits-infer process run from `tree`."""
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()))
    command = [sys.executable, "-c", "import infer.cli as c; c.run()", str(folder), "--model-dir", str(model_dir),
               "-o", str(output), "--quiet"]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def compare(before: Path, after: Path, folder: Path, model_dir: Path, runs: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(runs):
            for name, tree in (("before", before), ("after", after)):
                seconds[name].append(run_once(tree, folder, model_dir, Path(scratch) / f"{name}.csv"))
        same = (Path(scratch) / "before.csv").read_bytes() == (Path(scratch) / "after.csv").read_bytes()
    print(f"CSV byte-identical: {same}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="source tree of the version before (holds infer/)")
    parser.add_argument("after", type=Path, help="source tree of the version after")
    parser.add_argument("--folder", type=Path, default=Path("bench/.cache/mnist_png_10000"))
    parser.add_argument("--model-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    seconds = compare(args.before, args.after, args.folder, args.model_dir, args.runs)
    for name, values in seconds.items():
        print(f"{name}: median {statistics.median(values):.3f} s over {len(values)} runs "
              f"({', '.join(f'{v:.2f}' for v in values)})")
    ratio = statistics.median(seconds["after"]) / statistics.median(seconds["before"])
    print(f"after / before: {ratio:.3f} (goal ≤ 1.10)")


if __name__ == "__main__":
    main()
