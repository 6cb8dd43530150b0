"""A faithful copy of the seed's training script, kept as the baseline the benchmarks compare against.

It is deliberately the seed's plain loop (torchvision dataset with a per-sample PIL ToTensor/Normalize
transform, DataLoader, batch 64, Adam 1e-3), so `make bench` can put our trainer beside it in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import datasets, transforms


class Digit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 3)
        self.fc1 = nn.Linear(20 * 10 * 10, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_size = x.size(0)
        out = self.conv1(x)
        out = F.relu(out)
        out = F.max_pool2d(out, 2, 2)
        out = self.conv2(out)
        out = F.relu(out)
        out = out.view(in_size, -1)
        out = self.fc1(out)
        out = F.relu(out)
        out = self.fc2(out)
        return F.log_softmax(out, dim=1)


def train(model, device, loader, optimizer) -> float:
    model.train()
    total = 0.0
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(data)
    return total / len(loader.dataset)


def test(model, device, loader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            pred = model(data).argmax(dim=1)
            correct += pred.eq(target).sum().item()
    return correct / len(loader.dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data-dir", default=os.environ.get("DIGITS_DATA_DIR", "./data"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write per-epoch results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_loader = torch.utils.data.DataLoader(
        datasets.MNIST(args.data_dir, train=True, transform=tf), batch_size=64, shuffle=True
    )
    test_loader = torch.utils.data.DataLoader(
        datasets.MNIST(args.data_dir, train=False, transform=tf), batch_size=1000
    )
    model = Digit().to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss = train(model, args.device, train_loader, optimizer)
        train_seconds = time.perf_counter() - t0
        acc = test(model, args.device, test_loader)
        history.append({"epoch": epoch, "train_loss": loss, "train_seconds": train_seconds, "test_accuracy": acc})
        print(f"epoch {epoch:2d}  loss {loss:.4f}  test {acc:.4f}  train {train_seconds:.1f}s", flush=True)
    total = time.perf_counter() - start
    summary = {
        "epochs": args.epochs,
        "total_seconds": total,
        "final_test_accuracy": history[-1]["test_accuracy"],
        "best_test_accuracy": max(h["test_accuracy"] for h in history),
        "history": history,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
