import json

import pytest
import torch
from safetensors import safe_open

from trainer.augment import AffineRange, random_affine
from trainer.checkpoint import load_checkpoint, metadata_value
from trainer.data import dataset_sha256
from trainer.train import TrainConfig, fit, normalize


def test_tiny_training_beats_90_percent_and_writes_all_outputs(tiny_run):
    result, out = tiny_run
    assert len(result.test_labels) == 1000
    assert result.test.accuracy > 0.90
    for name in ("digit.safetensors", "metrics.json", "curves.png", "confusion.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_json_records_history_and_test_result(tiny_run):
    result, out = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == result.test.accuracy and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_loss"] > 0 and metrics["device"] == "cpu"
    assert [e["epoch"] for e in metrics["history"]] == [1, 2]
    best = max(metrics["history"], key=lambda e: e["val_accuracy"])
    assert metrics["chosen_epoch"] == best["epoch"]
    for epoch in metrics["history"]:
        assert epoch["train_loss"] > 0 and 0.5 < epoch["val_accuracy"] <= 1 and epoch["seconds"] > 0
    assert metrics["config"]["train_limit"] == 4000 and metrics["total_seconds"] > 0


def test_checkpoint_metadata_and_safetensors_round_trip(tiny_run, data_dir):
    result, out = tiny_run
    with safe_open(str(out / "digit.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["architecture"] == "Digit"
    assert metadata_value(metadata, "normalize_mean") == 0.1307 and metadata_value(metadata, "normalize_std") == 0.3081
    assert metadata_value(metadata, "epochs") == 2 and metadata_value(metadata, "best_epoch") == result.chosen_epoch
    assert metadata_value(metadata, "seed") == 0 and metadata["torch_version"] == torch.__version__
    assert metadata_value(metadata, "data_sha256") == dataset_sha256(data_dir)
    loaded, _ = load_checkpoint(out / "digit.safetensors")
    x = normalize(torch.rand(8, 1, 28, 28))
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))


@pytest.mark.slow
def test_same_seed_same_numbers_on_cpu(data_dir):
    config = TrainConfig(epochs=1, batch_size=32, val_size=200, train_limit=800, test_limit=200, augment=True,
                         schedule="onecycle")
    first, second = fit(config, data_dir), fit(config, data_dir)
    assert [r.train_loss for r in first.history] == [r.train_loss for r in second.history]
    assert first.test.accuracy == second.test.accuracy
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    other = fit(TrainConfig(**{**config.__dict__, "seed": 1}), data_dir)
    assert other.history[0].train_loss != first.history[0].train_loss


@pytest.mark.slow
def test_validation_picks_the_epoch_not_the_test_set(data_dir):
    result = fit(TrainConfig(epochs=2, batch_size=32, val_size=300, train_limit=1300, test_limit=100), data_dir)
    best = max(result.history, key=lambda r: r.val_accuracy)
    assert result.chosen_epoch == best.epoch
    no_val = fit(TrainConfig(epochs=2, batch_size=32, val_size=0, train_limit=1000, test_limit=100), data_dir)
    assert no_val.chosen_epoch == 2 and all(r.val_accuracy is None for r in no_val.history)


def test_identity_affine_leaves_images_alone_and_real_ranges_move_them():
    images = torch.zeros(4, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1.0
    same = random_affine(images, AffineRange(0, 0, 0), torch.Generator().manual_seed(0))
    assert torch.allclose(same, images, atol=1e-5)
    moved = random_affine(images, AffineRange(), torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and not torch.allclose(moved, images, atol=1e-2)
    ink_ratio = moved.sum((1, 2, 3)) / images.sum((1, 2, 3))
    assert bool(((ink_ratio > 0.7) & (ink_ratio < 1.3)).all())
