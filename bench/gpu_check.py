"""`make gpu-check`: every CUDA path of the project in one short run, one table at the end.

Trains one epoch with --device cuda, exports with CUDA parity rows, classifies the samples with both backends
on CUDA, and runs the benchmark on CUDA (small sizes). Without a usable GPU it exits 2 at once. It writes only
under a scratch folder, and prints what each step measured, so one command checks a lent GPU machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Step:
    name: str
    command: list[str]
    accepted: tuple[int, ...] = (0,)  # digits-infer exits 1 when an image is refused: that is a result, not a failure
    seconds: float = 0.0
    exit: int | None = None
    detail: str = ""


def cuda_or_exit() -> str:
    try:
        import torch
    except ModuleNotFoundError:
        sys.exit(_stop("torch is not installed (pip install 'digits[train]')"))
    if not torch.cuda.is_available():
        sys.exit(_stop("torch sees no CUDA device on this machine"))
    return torch.cuda.get_device_name(0)


def _stop(reason: str) -> int:
    print(f"gpu-check: {reason}; nothing to check", file=sys.stderr)
    return 2


def run(step: Step) -> Step:
    start = time.perf_counter()
    proc = subprocess.run(step.command, cwd=REPO, capture_output=True, text=True)
    step.seconds, step.exit = time.perf_counter() - start, proc.returncode
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    step.detail = lines[-1][:110] if lines else ""
    return step


def main() -> None:
    device = cuda_or_exit()
    with tempfile.TemporaryDirectory(prefix="digits-gpu-check-") as scratch:
        work = Path(scratch)
        steps = [
            Step("train 1 epoch on cuda", [str(BIN / "digits-train"), "--device", "cuda", "--epochs", "1",
                                           "--out", str(work / "checkpoints")]),
            Step("export + CUDA parity", [str(BIN / "digits-export"), "--device", "cuda", "--checkpoint",
                                          str(work / "checkpoints" / "digit.safetensors"), "--out",
                                          str(work / "artifacts")]),
            Step("digits-infer onnx on cuda", [str(BIN / "digits-infer"), "samples", "--device", "cuda", "--backend",
                                               "onnx", "--model-dir", str(work / "artifacts"), "-o",
                                               str(work / "onnx.csv")], (0, 1)),
            Step("digits-infer torch on cuda", [str(BIN / "digits-infer"), "samples", "--device", "cuda", "--backend",
                                                "torch", "--model-dir", str(work / "artifacts"), "-o",
                                                str(work / "torch.csv")], (0, 1)),
            Step("bench on cuda", [sys.executable, "-m", "bench.run", "--device", "cuda", "--model-dir",
                                   str(work / "artifacts"), "--images", "2000", "--per-style", "100",
                                   "--memory-files", "0", "--no-large", "--repeats", "1", "--cache",
                                   str(work / "cache"), "--json", str(work / "bench.json")]),
        ]
        for step in steps:
            run(step)
        bench = json.loads((work / "bench.json").read_text()) if (work / "bench.json").exists() else {}
    print(f"gpu-check on {device}")
    print(f"{'step':30s} {'exit':>4s} {'seconds':>8s}  last line")
    for step in steps:
        print(f"{step.name:30s} {step.exit!s:>4s} {step.seconds:8.1f}  {step.detail}")
    for name, row in bench.get("backends", {}).items():
        print(f"bench {name}: model {row['model_images_per_s']:,.0f} images/s on {row['device']}, end to end "
              f"{row['end_to_end_images_per_s']:,.0f} images/s")
    sys.exit(0 if all(step.exit in step.accepted for step in steps) else 1)


if __name__ == "__main__":
    main()
