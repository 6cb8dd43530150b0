"""The one table of export formats: each row knows how to write its file and how to run it.

Export, parity and benchmarking all iterate over FORMATS, so adding a format is adding a row.
A runner maps float32 N×1×28×28 pixels to float32 N×10 probabilities (numpy in, numpy out).
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch

from exporter.wrapper import DeployedDigit
from infer.contract import INPUT_NAME, OUTPUT_NAME

ONNX_OPSET = 18
Runner = Callable[[np.ndarray], np.ndarray]


class BackendUnavailable(Exception):
    """A backend cannot run on the requested device here (no GPU, no CUDA provider)."""


@contextmanager
def quiet_torch_jit():
    """torch.jit warns that it is deprecated on every call; TorchScript is still the artifact users asked for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        yield


def _example() -> torch.Tensor:
    return torch.rand(2, 1, 28, 28)


def export_torchscript(model: DeployedDigit, path: Path, metadata: dict[str, str]) -> None:
    with quiet_torch_jit():
        scripted = torch.jit.trace(model, _example())
        torch.jit.save(scripted, str(path), _extra_files={"metadata.json": metadata["json"]})


def export_onnx(model: DeployedDigit, path: Path, metadata: dict[str, str]) -> None:
    program = torch.onnx.export(
        model,
        (_example(),),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=ONNX_OPSET,
        dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
        dynamo=True,
        verbose=False,
    )
    proto = program.model_proto
    for key, value in metadata.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def _torch_runner(module: torch.nn.Module, device: str) -> Runner:
    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images).to(device)).float().cpu().numpy()

    return run


def eager_runner(model: DeployedDigit, device: str) -> Runner:
    """A runner on its own copy for another device: `.to()` moves a module in place, which would move the
    CPU reference's weights too."""
    module = model if device == "cpu" else copy.deepcopy(model).to(device)
    return _torch_runner(module.eval(), device)


def torchscript_runner(path: Path, device: str) -> Runner:
    with quiet_torch_jit():
        module = torch.jit.load(str(path), map_location=device)
    return _torch_runner(module.eval(), device)


def onnx_runner(path: Path, device: str) -> Runner:
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise BackendUnavailable(f"this onnxruntime has no {provider} (install onnxruntime-gpu)")
    session = ort.InferenceSession(str(path), providers=[provider])
    if provider not in session.get_providers():
        raise BackendUnavailable(f"onnxruntime could not start {provider}")
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


@dataclass(frozen=True)
class Format:
    name: str
    file: str
    export: Callable[[DeployedDigit, Path, dict[str, str]], None]
    runner: Callable[[Path, str], Runner]


FORMATS: tuple[Format, ...] = (
    Format("torchscript", "digit.torchscript.pt", export_torchscript, torchscript_runner),
    Format("onnx", "digit.onnx", export_onnx, onnx_runner),
)
