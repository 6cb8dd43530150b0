import numpy as np
import pytest
from torchvision.datasets import MNIST

from tests.conftest import assert_clean_failure, run_cli
from tests.idx import write_idx_dataset
from trainer.data import ALL_RAW_FILES, DataError, dataset_sha256, load_split, resolve_data_dir, to_float


def test_reads_a_tiny_idx_dataset(tmp_path):
    written = write_idx_dataset(tmp_path, train=12, test=6)
    train, test = load_split(tmp_path, train=True), load_split(tmp_path, train=False)
    assert len(train) == 12 and len(test) == 6
    assert np.array_equal(train.images.numpy(), written["train_images"])
    assert np.array_equal(test.labels.numpy(), written["t10k_labels"])
    floats = to_float(train.images)
    assert floats.shape == (12, 1, 28, 28) and floats.dtype.is_floating_point
    assert float(floats.max()) <= 1.0 and float(floats.min()) >= 0.0
    assert set(dataset_sha256(tmp_path)) == set(ALL_RAW_FILES)


def test_data_dir_flag_beats_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITS_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("DIGITS_DATA_DIR")
    assert str(resolve_data_dir()) == "data"


def test_missing_directory_names_folder_files_and_variable(tmp_path):
    with pytest.raises(DataError) as err:
        load_split(tmp_path / "nowhere", train=True, download=False)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "DIGITS_DATA_DIR" in message and "\n" not in message


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens there: fails at once
    with pytest.raises(DataError, match="download failed") as err:
        load_split(tmp_path, train=False, download=True)
    assert "\n" not in str(err.value) and "DIGITS_DATA_DIR" in str(err.value)


def test_truncated_file_is_named(tmp_path):
    write_idx_dataset(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as err:
        load_split(tmp_path, train=False)
    assert str(images) in str(err.value)


def test_corrupt_header_and_labels_are_caught(tmp_path):
    write_idx_dataset(tmp_path)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = 200
    labels.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt labels"):
        load_split(tmp_path, train=True)
    data[0:4] = b"\x00\x00\x00\x00"
    labels.write_bytes(bytes(data))
    with pytest.raises(DataError, match="magic number"):
        load_split(tmp_path, train=True)


@pytest.mark.slow
def test_cli_exits_2_without_traceback_on_missing_and_corrupt_data(tmp_path):
    missing = run_cli("digits-train", "--data-dir", tmp_path / "none", "--no-download", "--out", tmp_path / "o")
    assert_clean_failure(missing, 2, "MNIST not found", "DIGITS_DATA_DIR")
    write_idx_dataset(tmp_path / "bad")
    images = tmp_path / "bad" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    corrupt = run_cli("digits-train", "--data-dir", tmp_path / "bad", "--out", tmp_path / "o")
    assert_clean_failure(corrupt, 2, "train-images-idx3-ubyte", "truncated")
    assert not (tmp_path / "o" / "digit.safetensors").exists()
