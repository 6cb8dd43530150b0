"""Installing: the base install is digits-infer on ONNX Runtime alone (no torch), and the test runner works
however it is started."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import venv

import pytest

from tests.conftest import BIN, REPO, run_cli

SAMPLES = REPO / "samples"


def rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_pytest_script_finds_the_project_from_any_folder(tmp_path):
    """`.venv/bin/pytest` (not `python -m pytest`) run from another folder still imports tests/ and bench/."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_model.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_base_install_classifies_samples_without_torch(artifacts, tmp_path):
    """A fresh venv with `pip install .` only: torch is absent, and digits-infer classifies samples/ with the
    artifacts exported earlier in this run, exactly as the full install does."""
    env_dir = tmp_path / "base"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(REPO)], capture_output=True,
                             text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert probe.stdout.strip() == "True", probe.stderr
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base_csv, full_csv = tmp_path / "base.csv", tmp_path / "full.csv"
    base = subprocess.run([str(env_dir / "bin" / "digits-infer"), str(SAMPLES), "--model-dir", str(artifacts),
                           "-o", str(base_csv), "--quiet"], capture_output=True, text=True, cwd=tmp_path,
                          env=clean_env, timeout=300)
    assert base.returncode == 0, base.stderr
    full = run_cli("digits-infer", SAMPLES, "--model-dir", artifacts, "-o", full_csv, "--quiet")
    assert full.returncode == 0, full.stderr
    assert len(rows(base_csv)) == 32 and rows(base_csv) == rows(full_csv)
    for command, extra in ((["digits-infer", str(SAMPLES), "--model-dir", str(artifacts), "--backend", "torch",
                             "-o", str(tmp_path / "t.csv")], "digits[torch]"),
                           (["digits-train", "--epochs", "1"], "digits[train]"),
                           (["digits-export"], "digits[export]")):
        proc = subprocess.run([str(env_dir / "bin" / command[0]), *command[1:]], capture_output=True, text=True,
                              cwd=tmp_path, env=clean_env, timeout=300)
        assert proc.returncode == 2 and extra in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    size = sum(f.stat().st_size for f in env_dir.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"base install: {size / 1e6:.0f} MB (python {sys.version_info.major}.{sys.version_info.minor})")
