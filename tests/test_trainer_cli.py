"""digits-train's command line: parsed in process (typer's runner), so no test here pays for a torch start-up
of its own; one real process checks the CUDA error path end to end."""

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import assert_clean_failure, run_cli
from trainer.cli import app

runner = CliRunner()


def test_help_lists_the_flags():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for flag in ("--epochs", "--batch-size", "--lr", "--device", "--seed", "--data-dir", "--out", "--val-size",
                 "--style-augment"):
        assert flag in result.output


@pytest.mark.parametrize("args", [["--no-such-flag"], ["--epochs", "0"], ["--device", "tpu"], ["--lr", "fast"]])
def test_unknown_flag_and_bad_values_exit_2_with_usage(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    assert "Usage" in result.output and result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the error path cannot happen here")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, data_dir):
    proc = run_cli("digits-train", "--device", "cuda", "--data-dir", data_dir, "--out", tmp_path)
    assert_clean_failure(proc, 2, "--device cuda")
