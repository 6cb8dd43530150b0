"""Export a Digit checkpoint to TorchScript and ONNX, and prove on real test images that they agree."""
