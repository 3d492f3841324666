"""Optimization: pruning (magnitude, 2:4, filter), quantization-aware training, TFLite and ONNX
export, the parity gate and the bundle writer. CLIs: `python -m optimize.prune`,
`python -m optimize.quantize` (the main job), `python -m optimize.export` (quick, no QAT).
"""
