"""ONNX backend: torch.onnx export, onnxruntime quantization, onnxruntime validation."""
