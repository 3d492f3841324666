"""Optimization: export to TFLite and ONNX and the bundle writer (pruning and QAT: issue 3)."""
