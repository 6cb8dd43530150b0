"""The table of inference backends. Each opens a verified artifact and returns a classifier:
float32 N×1×28×28 pixels in [0,1] → float32 N×10 probabilities. Heavy imports happen only in the chosen row,
so the ONNX path never imports torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from infer.artifacts import CLASSES, Artifact, ModelError

Classifier = Callable[[np.ndarray], np.ndarray]
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(Exception):
    """The requested device cannot run this backend here. digits-infer exits 2."""


@dataclass(frozen=True)
class Opened:
    classify: Classifier
    device: str  # the device actually used: "cpu" or "cuda"


def open_onnx(artifact: Artifact, device: str, threads: int) -> Opened:
    import onnxruntime as ort

    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise DeviceError("--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu and a GPU)")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device != "cpu" and has_cuda else ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Preprocessing threads share the cores with the model: idle ORT threads must sleep, not spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: provider fallbacks are reported by us, not by ORT's log
    try:
        session = ort.InferenceSession(str(artifact.path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unloadable models
        raise ModelError(f"{artifact.path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
    used = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    if device == "cuda" and used != "cuda":
        raise DeviceError("--device cuda: onnxruntime could not start its CUDA provider on this machine")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or list(inputs[0].shape[1:]) != [1, 28, 28] or len(outputs) != 1 or outputs[0].shape[-1] != CLASSES:
        raise ModelError(f"{artifact.path}: model takes {[i.shape for i in inputs]} and gives "
                         f"{[o.shape for o in outputs]}, expected [N, 1, 28, 28] → [N, {CLASSES}]")
    input_name, output_name = inputs[0].name, outputs[0].name
    return Opened(lambda images: session.run([output_name], {input_name: images})[0], used)


def open_torch(artifact: Artifact, device: str, threads: int) -> Opened:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: torch sees no CUDA device on this machine")
    used = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(threads)
    torch.backends.cudnn.allow_tf32 = False  # full fp32, as the exporter's parity check ran
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        # The file's sha256 matched the manifest before this call; TorchScript holds no pickled weights.
        with warnings.catch_warnings():  # torch.jit.load warns it is deprecated; TorchScript is our artifact
            warnings.filterwarnings("ignore", category=FutureWarning)
            module = torch.jit.load(str(artifact.path), map_location=used).eval()
        with torch.inference_mode():
            probe = module(torch.zeros(1, 1, 28, 28, device=used))
    except Exception as exc:  # TorchScript raises RuntimeError and friends for unusable files
        raise ModelError(f"{artifact.path}: TorchScript model cannot run ({str(exc).splitlines()[0]})") from None
    if tuple(probe.shape) != (1, CLASSES):
        raise ModelError(f"{artifact.path}: model gives {tuple(probe.shape)} per image, expected (1, {CLASSES})")

    def classify(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images).to(used)).float().cpu().numpy()

    return Opened(classify, used)


@dataclass(frozen=True)
class Backend:
    name: str
    artifact: str  # key under manifest["artifacts"]
    open: Callable[[Artifact, str, int], Opened]


BACKENDS = {b.name: b for b in (Backend("onnx", "onnx", open_onnx), Backend("torch", "torchscript", open_torch))}
