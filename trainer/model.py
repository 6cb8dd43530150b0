"""The Digit CNN. Layer names and shapes are the seed's, so checkpoints load into either class."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURE = "Digit"
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# pytorch/examples' mnist rates. Dropout holds no weights, so the state_dict stays the seed's, and it runs only
# while training, so no exported graph holds it. It lifted MNIST test from 99.46% to 99.54% (README, "Training").
CONV_DROPOUT = 0.25
FC_DROPOUT = 0.5


class Digit(nn.Module):
    """conv1 → ReLU → max-pool 2 → conv2 → ReLU → fc1 → ReLU → fc2 → log_softmax, with dropout before fc1 and
    fc2 while training (none when `dropout` is False)."""

    def __init__(self, dropout: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 3)
        self.fc1 = nn.Linear(20 * 10 * 10, 500)
        self.fc2 = nn.Linear(500, 10)
        self.dropout1 = nn.Dropout(CONV_DROPOUT if dropout else 0.0)
        self.dropout2 = nn.Dropout(FC_DROPOUT if dropout else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised N×1×28×28 images to N×10 log-probabilities."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        x = torch.flatten(x, 1)
        if self.training:  # evaluated and exported as the seed's graph, without even a no-op dropout node
            x = self.dropout1(x)
        x = F.relu(self.fc1(x))
        if self.training:
            x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)
