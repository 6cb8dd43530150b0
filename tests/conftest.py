"""Shared fixtures: one tiny real training, one real export and real MNIST PNGs, made once per session.

MNIST comes from $DIGITS_DATA_DIR (CI: ../shared/datasets); without it the data module downloads, and a
failure there fails the suite loudly rather than skipping anything.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.mnist_png import write_mnist_pngs
from exporter.export import ParitySettings, export
from trainer.data import resolve_data_dir
from trainer.outputs import write_outputs
from trainer.train import TrainConfig, fit

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY = TrainConfig(epochs=2, batch_size=16, lr=1e-3, val_size=500, train_limit=4000, test_limit=1000)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return resolve_data_dir()


@pytest.fixture(scope="session")
def tiny_run(data_dir, tmp_path_factory):
    """(result, out_dir): Digit trained for two epochs on 3500 real MNIST images (500 held out)."""
    out = tmp_path_factory.mktemp("checkpoints")
    result = fit(TINY, data_dir)
    write_outputs(result, out, data_dir)
    return result, out


@pytest.fixture(scope="session")
def artifacts(tiny_run, data_dir, tmp_path_factory) -> Path:
    """A real export of the tiny checkpoint, parity checked on 1000 real test images. Without the AOTInductor
    package, whose C++ build takes tens of seconds: tests/test_pt2.py builds one in its slow tests."""
    out = tmp_path_factory.mktemp("export") / "artifacts"
    _, report = export(tiny_run[1] / "digit.safetensors", out, ParitySettings(data_dir, samples=1000), aoti=False)
    assert report.passed
    return out


@pytest.fixture(scope="session")
def mnist_pngs(data_dir, tmp_path_factory) -> Path:
    """The first 1000 MNIST test images as PNG files, with labels.csv."""
    folder = tmp_path_factory.mktemp("mnist_png")
    write_mnist_pngs(data_dir, folder, 1000)
    return folder


def run_cli(name: str, *args: str, cwd: Path | None = None, env: dict | None = None,
            input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run an installed console script as a user would, capturing text output."""
    return subprocess.run([str(BIN / name), *map(str, args)], cwd=cwd or REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input, timeout=timeout)


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """Exit `code`, no traceback, and each needle in stderr."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


class Unpickling:
    """While active, torch.load without weights_only=True and pickle.load/loads raise; every call is recorded,
    so a caller that swallows the error and falls back still fails the test."""

    def __init__(self, monkeypatch) -> None:
        self.forbidden: list[str] = []
        real_load = torch.load

        def guarded_torch_load(*args, **kwargs):
            if kwargs.get("weights_only") is not True:
                self.forbidden.append(f"torch.load(weights_only={kwargs.get('weights_only')!r})")
                raise RuntimeError("torch.load without weights_only=True")
            return real_load(*args, **kwargs)

        def refuse(name):
            def call(*args, **kwargs):
                self.forbidden.append(name)
                raise RuntimeError(f"{name} called")

            return call

        monkeypatch.setattr(torch, "load", guarded_torch_load)
        monkeypatch.setattr(pickle, "load", refuse("pickle.load"))
        monkeypatch.setattr(pickle, "loads", refuse("pickle.loads"))
