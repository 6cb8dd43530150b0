"""The deployed model: pixels in [0,1] in, probabilities out, normalisation and softmax inside the graph.

Putting both inside means a consumer (digits-infer, or anyone's ONNX Runtime) needs no torch and no
knowledge of MNIST's mean and std: it feeds pixels/255 and reads probabilities.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from trainer.model import MNIST_MEAN, MNIST_STD, Digit


class DeployedDigit(nn.Module):
    def __init__(self, digit: Digit) -> None:
        super().__init__()
        self.digit = digit
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """N×1×28×28 float32 pixels in [0,1], white ink on black → N×10 probabilities."""
        return torch.exp(self.digit((image - MNIST_MEAN) / MNIST_STD))
