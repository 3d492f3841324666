"""Benchmarks: latency, size, memory, parity and accuracy of a bundle, in a report people read.

`python -m benchmarks --bundle BUNDLE --out DIR` measures; `python -m benchmarks compare OLD NEW`
says what got slower, larger or less accurate. Importing this package imports no TensorFlow:
the cold-start child processes start from here.
"""
