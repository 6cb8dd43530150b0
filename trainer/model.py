"""The Digit CNN. Layer names and shapes are the seed's, so checkpoints load into either class."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURE = "Digit"
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class Digit(nn.Module):
    """conv1 → ReLU → max-pool 2 → conv2 → ReLU → fc1 → ReLU → fc2 → log_softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 3)
        self.fc1 = nn.Linear(20 * 10 * 10, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised N×1×28×28 images to N×10 log-probabilities."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)
