"""The table of model formats digits-infer loads, and which one a run uses. Each row opens a verified artifact
and returns a classifier: float32 N×1×28×28 pixels in [0,1] → float32 N×10 probabilities. `--backend onnx`
runs the ONNX file; `--backend torch` runs a PyTorch artifact (`--torch-format`; by default the .pt2 when the
manifest lists it, else TorchScript). Heavy imports happen only in the chosen row, so the ONNX path never
imports torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from infer.contract import CLASSES, ArtifactError, Manifest
from infer.devices import Device, DeviceError, torch_device
from infer.extras import MissingExtra
from infer.options import DEFAULT_TORCH_FORMATS, TORCH_FORMATS, OptionError

Classifier = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Opened:
    classify: Classifier
    device: str  # the device actually used: "cpu" or "cuda"


def open_onnx(path: Path, device: str, threads: int) -> Opened:
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == Device.cuda and not has_cuda:
        raise DeviceError("cuda was requested, but this onnxruntime has no CUDA provider "
                          "(install onnxruntime-gpu: see the README)")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device != Device.cpu and has_cuda \
        else ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Preprocessing threads share the cores with the model: idle ORT threads must sleep, not spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: provider fallbacks are reported by us, not by ORT's log
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unloadable models
        raise ArtifactError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
    used = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    if device == Device.cuda and used != "cuda":
        raise DeviceError("cuda was requested, but onnxruntime could not start its CUDA provider here")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or list(inputs[0].shape[1:]) != [1, 28, 28] or len(outputs) != 1 \
            or outputs[0].shape[-1] != CLASSES:
        raise ArtifactError(f"{path}: model takes {[i.shape for i in inputs]} and gives "
                            f"{[o.shape for o in outputs]}, expected [N, 1, 28, 28] → [N, {CLASSES}]")
    input_name, output_name = inputs[0].name, outputs[0].name
    return Opened(lambda images: session.run([output_name], {input_name: images})[0], used)


def import_torch():
    try:
        import torch
    except ModuleNotFoundError:
        raise MissingExtra("the torch backend needs PyTorch: pip install 'digits[torch]' "
                           "(or use the onnx backend)") from None
    return torch


def _torch_opened(module, used: str, path: Path, kind: str) -> Opened:
    """Probe a loaded torch model with one image and wrap it as a classifier."""
    torch = import_torch()
    try:
        with torch.inference_mode():
            probe = module(torch.zeros(1, 1, 28, 28, device=used))
    except Exception as exc:  # a loaded model that cannot run raises RuntimeError and friends
        raise ArtifactError(f"{path}: {kind} model cannot run ({str(exc).splitlines()[0]})") from None
    if tuple(probe.shape) != (1, CLASSES):
        raise ArtifactError(f"{path}: model gives {tuple(probe.shape)} per image, expected (1, {CLASSES})")

    def classify(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images).to(used)).float().cpu().numpy()

    return Opened(classify, used)


def open_torchscript(path: Path, device: str, threads: int) -> Opened:
    torch = import_torch()
    used = torch_device(device)
    torch.set_num_threads(threads)
    try:
        # The file's sha256 matched the manifest before this call; TorchScript holds no pickled weights.
        with warnings.catch_warnings():  # torch.jit.load says TorchScript is deprecated; it is still our artifact
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
            module = torch.jit.load(str(path), map_location=used).eval()
    except Exception as exc:  # TorchScript raises RuntimeError and friends for unusable files
        raise ArtifactError(f"{path}: TorchScript model cannot run ({str(exc).splitlines()[0]})") from None
    return _torch_opened(module, used, path, "TorchScript")


def open_pt2(path: Path, device: str, threads: int) -> Opened:
    """torch.export.load of an archive that holds nothing pickled (infer.pt2archive refuses any that does)."""
    torch = import_torch()
    from infer.pt2archive import load_exported_program

    used = torch_device(device)
    torch.set_num_threads(threads)
    return _torch_opened(load_exported_program(path).module().to(used), used, path, "torch.export")


def open_aoti(path: Path, device: str, threads: int) -> Opened:
    """The AOTInductor package: compiled for the CPU, so `auto` runs it there and `cuda` is refused."""
    torch = import_torch()
    from infer.pt2archive import load_aoti_package

    if device == Device.cuda:
        raise DeviceError("the AOTInductor package (--torch-format aoti) is compiled for the CPU; "
                          "use --torch-format pt2 on CUDA")
    torch.set_num_threads(threads)  # its OpenMP loops use torch's thread count
    return _torch_opened(load_aoti_package(path), "cpu", path, "AOTInductor")


@dataclass(frozen=True)
class ModelFormat:
    name: str  # key under the manifest's "artifacts", and the --torch-format value of the torch rows
    backend: str  # the --backend that runs it
    open: Callable[[Path, str, int], Opened]


MODEL_FORMATS = {f.name: f for f in (
    ModelFormat("onnx", "onnx", open_onnx),
    ModelFormat("pt2", "torch", open_pt2),
    ModelFormat("aoti", "torch", open_aoti),
    ModelFormat("torchscript", "torch", open_torchscript),
)}


def choose_format(backend: str, torch_format: str | None, manifest: Manifest) -> ModelFormat:
    """The row a run uses: the ONNX file, or the requested (else the default) torch format, which the manifest
    must list (ArtifactError naming the manifest otherwise)."""
    if backend == "onnx":
        if torch_format is not None:
            raise OptionError(f"--torch-format {torch_format} applies to --backend torch only")
        return MODEL_FORMATS["onnx"]
    if torch_format is None:
        torch_format = next((f for f in DEFAULT_TORCH_FORMATS if f in manifest.artifacts), DEFAULT_TORCH_FORMATS[-1])
    if torch_format not in manifest.artifacts:
        listed = ", ".join(name for name in manifest.artifacts if name in TORCH_FORMATS) or "none"
        raise ArtifactError(f"{manifest.path}: no {torch_format} artifact listed (torch formats listed: {listed}); "
                            "choose another --torch-format or export again")
    return MODEL_FORMATS[torch_format]


def open_model(manifest: Manifest, backend: str, torch_format: str | None, device: str, threads: int) -> Opened:
    """Choose the format, check its file against the manifest (and the export's parity), and open it."""
    fmt = choose_format(backend, torch_format, manifest)
    return fmt.open(manifest.trusted_file(fmt.name), device, threads)
