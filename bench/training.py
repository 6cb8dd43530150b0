"""Training benchmarks: one epoch of the default trainer against one epoch of the seed's loop."""

from __future__ import annotations

import time
from pathlib import Path

from bench.arith import ratio


def measure_training(data_dir: Path, device: str) -> dict[str, float]:
    """One epoch of the default trainer against one epoch of the seed's loop, batch 64, same machine."""
    import torch

    from bench import seed_mnist
    from trainer.train import TrainConfig, fit

    ours = fit(TrainConfig(epochs=1, batch_size=64, device=device), data_dir)
    torch.manual_seed(0)
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = torch.utils.data.DataLoader(datasets.MNIST(str(data_dir), train=True, transform=tf), batch_size=64,
                                        shuffle=True)
    test = torch.utils.data.DataLoader(datasets.MNIST(str(data_dir), train=False, transform=tf), batch_size=1000)
    model = seed_mnist.Digit().to(ours.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    seed_mnist.train(model, ours.device, train, optimizer)
    seed_seconds = time.perf_counter() - start
    return {"device": ours.device, "ours_epoch_s": ours.history[0].seconds, "ours_test_accuracy": ours.test.accuracy,
            "ours_train_images": 60000 - 5000, "seed_epoch_s": seed_seconds,
            "seed_test_accuracy": seed_mnist.test(model, ours.device, test), "seed_train_images": 60000,
            "speedup": ratio(seed_seconds, ours.history[0].seconds)}
