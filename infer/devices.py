"""The one device type and the one way of choosing a torch device, shared by trainer, exporter and infer.

Torch is imported only inside torch_device(), so the ONNX path and the slim install never load it.
"""

from __future__ import annotations

from enum import Enum


class Device(str, Enum):
    auto = "auto"  # CUDA when it works here, else the CPU
    cpu = "cpu"
    cuda = "cuda"  # CUDA or an error: never a silent CPU run


class DeviceError(Exception):
    """The requested device cannot run here. Says what is missing; the CLI adds the flag's name."""


def torch_device(requested: str) -> str:
    """'cpu' or 'cuda' for a torch run; CUDA runs in full fp32 (TF32 off), as the exporter's parity ran."""
    import torch

    if requested == Device.cuda and not torch.cuda.is_available():
        raise DeviceError("cuda was requested, but torch sees no CUDA device on this machine")
    used = "cuda" if requested != Device.cpu and torch.cuda.is_available() else "cpu"
    if used == "cuda":
        # TF32 convolutions and matmuls keep a 10-bit mantissa: fast, but they break fp32 parity.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return used
