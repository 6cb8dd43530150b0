import torch

from tests.conftest import assert_clean_failure, run_cli


def test_help_lists_the_flags():
    proc = run_cli("digits-train", "--help")
    assert proc.returncode == 0
    for flag in ("--epochs", "--batch-size", "--lr", "--device", "--seed", "--data-dir", "--out", "--val-size"):
        assert flag in proc.stdout


def test_unknown_flag_and_bad_values_exit_2_with_usage():
    for args in (["--no-such-flag"], ["--epochs", "0"], ["--device", "tpu"], ["--lr", "fast"]):
        proc = run_cli("digits-train", *args)
        assert proc.returncode == 2, args
        assert "Usage" in proc.stderr and "Traceback" not in proc.stderr


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, data_dir):
    if torch.cuda.is_available():
        import pytest

        pytest.skip("this machine has a GPU: the error path cannot happen here")
    proc = run_cli("digits-train", "--device", "cuda", "--data-dir", data_dir, "--out", tmp_path)
    assert_clean_failure(proc, 2, "--device cuda")
