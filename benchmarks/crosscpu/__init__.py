"""`make cross-cpu`: a bundle's models and `runtime.verify` on emulated CPUs (qemu-user).

x86 AVX2 without VNNI (Haswell), ARM Neoverse-N1 (dot product) and ARM Cortex-A72 (no dot
product), each against this machine: `python -m benchmarks.crosscpu BUNDLE`. `sysroot` builds
what the emulated CPUs run on (qemu, an arm64 root, aarch64 wheels), `worker` is what runs
there (the runtime only), and `run` compares.
"""
