"""Export a Digit checkpoint to TorchScript, ONNX, torch.export (.pt2) and AOTInductor, and prove on real test
images that they agree."""
