"""Parity: the same real images through every backend, compared with eager PyTorch on the CPU.

A backend passes when no probability differs from the reference by more than atol and every top-1
prediction matches. On CUDA, fp32 kernels sum in a different order than the CPU, so CUDA rows get a looser
atol, and a top-1 flip is tolerated only where the reference's top two probabilities are closer than that atol
(a genuine tie, reported as such).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from exporter.formats import FORMATS, BackendUnavailable, Format, Runner, eager_runner
from exporter.wrapper import DeployedDigit

CPU_ATOL = 1e-5
CUDA_ATOL = 1e-4
BATCH = 1000


@dataclass
class ParityRow:
    backend: str
    device: str
    accuracy: float
    max_abs_diff: float
    top1_agreement: float
    disagreements: int
    atol: float
    passed: bool


@dataclass
class ParityReport:
    samples: int
    reference: str
    rows: list[ParityRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # backends that cannot run here, with the reason

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "samples": self.samples, "reference": self.reference,
                "rows": [asdict(r) for r in self.rows], "skipped": self.skipped}


def run_batched(runner: Runner, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    return np.concatenate([runner(images[i : i + batch]) for i in range(0, len(images), batch)])


def compare_row(backend: str, device: str, probs: np.ndarray, reference: np.ndarray,
                labels: np.ndarray, atol: float, tolerate_ties: bool) -> ParityRow:
    predicted, expected = probs.argmax(1), reference.argmax(1)
    differs = predicted != expected
    if tolerate_ties and differs.any():
        top2 = np.sort(reference[differs], axis=1)[:, -2:]
        unexplained = int(((top2[:, 1] - top2[:, 0]) > atol).sum())
    else:
        unexplained = int(differs.sum())
    max_diff = float(np.abs(probs - reference).max()) if len(probs) else 0.0
    return ParityRow(
        backend=backend, device=device, accuracy=float((predicted == labels).mean()),
        max_abs_diff=max_diff, top1_agreement=float(1.0 - differs.mean()), disagreements=int(differs.sum()),
        atol=atol, passed=bool(max_diff <= atol and unexplained == 0),
    )


def check_parity(artifact_dir: Path, images: np.ndarray, labels: np.ndarray, devices: list[str],
                 eager: DeployedDigit | None = None, cpu_atol: float = CPU_ATOL,
                 cuda_atol: float = CUDA_ATOL, formats: Sequence[Format] = FORMATS) -> ParityReport:
    """Run eager (when given) and each of `formats` on each device against the CPU reference.

    The reference is eager on the CPU; `verify` without the source checkpoint uses TorchScript on the CPU.
    """
    runners: list[tuple[str, str, Runner]] = []
    skipped: list[str] = []
    for device in devices:
        if eager is not None:
            runners.append(("eager", device, eager_runner(eager, device)))
        for fmt in formats:
            try:
                runners.append((fmt.name, device, fmt.runner(artifact_dir / fmt.file, device)))
            except BackendUnavailable as exc:
                if device == "cpu":
                    raise
                skipped.append(f"{fmt.name}/{device}: {exc}")
    reference_name, _, reference_runner = runners[0]
    reference = run_batched(reference_runner, images)
    report = ParityReport(samples=len(images), reference=f"{reference_name}/cpu", skipped=skipped)
    for backend, device, runner in runners:
        probs = reference if (backend, device) == (reference_name, "cpu") else run_batched(runner, images)
        atol = cpu_atol if device == "cpu" else cuda_atol
        report.rows.append(compare_row(backend, device, probs, reference, labels, atol, device != "cpu"))
    return report

