"""This CPU: its name, its feature flags and its int8 dot-product instructions, read with archspec.

int8 inference speed depends on them more than on anything else: with VNNI (x86) or the dot
product extension (ARM) an int8 multiply-add runs at several times the float32 rate; without them
(x86 with AVX2 only) int8 kernels must widen to int16 and gain little over float32.
"""

from __future__ import annotations

import functools
import platform

# Flag (as /proc/cpuinfo and archspec name it) -> capability, best first.
_INT8_DOT_PRODUCT = {
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "asimddp": "ARM dot product",
}
AVX2_ONLY = "AVX2 only (no VNNI)"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where archspec is not installed or cannot tell)."""
    try:
        from archspec.cpu import detect
    except ImportError:
        return frozenset()
    return frozenset(detect.detected_info().features)


@functools.cache
def cpu_info() -> dict[str, str]:
    """`model` (brand string), `microarchitecture` and `int8`: the int8 dot-product capability
    ("AVX-512 VNNI", "AVX-VNNI", "ARM dot product", AVX2_ONLY, "none" or "unknown")."""
    try:
        from archspec.cpu import detect, host
    except ImportError:  # a device without archspec still runs; it just knows less
        name = platform.processor() or platform.machine()
        return {"model": name, "microarchitecture": "unknown", "int8": "unknown"}
    flags = cpu_flags()
    capability = next((name for flag, name in _INT8_DOT_PRODUCT.items() if flag in flags), None)
    return {
        "model": detect.brand_string() or platform.machine(),
        "microarchitecture": host().name,
        "int8": capability or (AVX2_ONLY if "avx2" in flags else "none"),
    }


def has_int8_dot_product(capability: str) -> bool:
    return capability in _INT8_DOT_PRODUCT.values()
