"""Taking a model elsewhere: ONNX and TorchScript files, each with a model card."""
