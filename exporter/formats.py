"""The one table of export formats: each row knows how to write its file and how to run it.

Export, parity and benchmarking all iterate over FORMATS, so adding a format is adding a row.
A runner maps float32 N×1×28×28 pixels to float32 N×10 probabilities (numpy in, numpy out).
An optional row (the AOTInductor package, which needs a C++ compiler) may be missing from an export; every
other row is always written.
"""

from __future__ import annotations

import copy
import os
import shutil
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
from infer.pt2archive import load_aoti_package, load_exported_program, quiet_cuda_home_notice

ONNX_OPSET = 18
Runner = Callable[[np.ndarray], np.ndarray]


class BackendUnavailable(Exception):
    """A backend cannot run on the requested device here (no GPU, no CUDA provider)."""


class FormatUnavailable(Exception):
    """An optional format cannot be built here (no C++ compiler, a failed build): one line saying why."""


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


def _batch_dynamic() -> dict[str, dict[int, object]]:
    return {INPUT_NAME: {0: torch.export.Dim("batch")}}


def export_onnx(model: DeployedDigit, path: Path, metadata: dict[str, str]) -> None:
    program = torch.onnx.export(
        model,
        (_example(),),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=ONNX_OPSET,
        dynamic_shapes=_batch_dynamic(),
        dynamo=True,
        verbose=False,
    )
    proto = program.model_proto
    for key, value in metadata.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def exported_program(model: DeployedDigit) -> torch.export.ExportedProgram:
    """The wrapped model as a torch.export graph with a dynamic batch dimension (the ONNX export's, too)."""
    return torch.export.export(model, (_example(),), dynamic_shapes=_batch_dynamic())


def export_pt2(model: DeployedDigit, path: Path, metadata: dict[str, str]) -> None:
    """torch.export.save: weights as raw bytes plus JSON. Saved without the example inputs, which torch would
    pickle and unpickle on load; the archive then holds nothing pickled (infer.pt2archive checks that)."""
    program = exported_program(model)
    program.example_inputs = None
    torch.export.save(program, str(path), extra_files={"metadata.json": metadata["json"]})


def cxx_compiler() -> str | None:
    """The C++ compiler AOTInductor would use ($CXX, else g++), when it is on this machine."""
    return shutil.which(os.environ.get("CXX") or "g++")


def export_aoti(model: DeployedDigit, path: Path, metadata: dict[str, str]) -> None:
    """An AOTInductor package for the CPU: C++ compiled ahead of time (-march=native), weights inside the .so,
    loadable from Python or C++ without the model code. FormatUnavailable when it cannot be built here."""
    if cxx_compiler() is None:
        raise FormatUnavailable(f"no C++ compiler ({os.environ.get('CXX') or 'g++'}) found; install one or set CXX")
    inductor_metadata = {key: value for key, value in metadata.items() if key != "json"}
    try:
        with quiet_cuda_home_notice():
            from torch._inductor import aoti_compile_and_package

            aoti_compile_and_package(exported_program(model), package_path=str(path),
                                     inductor_configs={"aot_inductor.metadata": inductor_metadata})
    except Exception as exc:  # inductor raises compiler, lowering and OS errors of many types
        path.unlink(missing_ok=True)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FormatUnavailable(f"the AOTInductor build failed ({type(exc).__name__}: {reason[:200]})") from None


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


def pt2_runner(path: Path, device: str) -> Runner:
    return _torch_runner(load_exported_program(path).module().to(device), device)


def aoti_runner(path: Path, device: str) -> Runner:
    if device != "cpu":
        raise BackendUnavailable("the AOTInductor package is compiled for the CPU")
    compiled = load_aoti_package(path)

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return compiled(torch.from_numpy(images)).float().numpy()

    return run


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
    optional: bool = False  # may be absent from an export (its export raises FormatUnavailable)


# TorchScript first: without the source checkpoint, `verify` takes the first row as the reference.
FORMATS: tuple[Format, ...] = (
    Format("torchscript", "digit.torchscript.pt", export_torchscript, torchscript_runner),
    Format("onnx", "digit.onnx", export_onnx, onnx_runner),
    Format("pt2", "digit.pt2", export_pt2, pt2_runner),
    Format("aoti", "digit.aoti.pt2", export_aoti, aoti_runner, optional=True),
)


def chosen_formats(aoti: bool = True) -> tuple[Format, ...]:
    """The rows an export writes: all of them, less the AOTInductor package when `aoti` is off."""
    return tuple(fmt for fmt in FORMATS if aoti or fmt.name != "aoti")
