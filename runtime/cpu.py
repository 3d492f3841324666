"""This CPU as its kernels see it: its name, its feature flags and its int8 dot-product
instructions, read with archspec.

int8 inference speed depends on them more than on anything else: with VNNI (x86) or the dot
product extension (ARM) an int8 multiply-add runs at several times the float32 rate; without them
(x86 with AVX2 only) int8 kernels must widen to int16 and gain little over float32.

On x86 the flags come from the CPUID instruction, as onnxruntime's and XNNPACK's kernel dispatch
reads them, not from /proc/cpuinfo: under an emulator (`qemu-x86_64 -cpu Haswell-v4`) the two
differ, and /proc/cpuinfo then describes the host, whose VNNI the kernels never see. On ARM the
kernels' cpuinfo library reads /proc/cpuinfo itself, so that file is what they see.
"""

from __future__ import annotations

import functools
import platform
from typing import Any

# Flag (as /proc/cpuinfo and archspec name it) -> capability, best first.
_INT8_DOT_PRODUCT = {
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "asimddp": "ARM dot product",
}
AVX2_ONLY = "AVX2 only (no VNNI)"


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


@functools.cache
def _detected() -> tuple[Any, str | None]:
    """archspec's partial microarchitecture of what the kernels see, and the brand string."""
    from archspec.cpu import detect

    if _is_x86():
        try:
            cpuid = detect.CpuidInfoCollector()  # runs CPUID (ctypes, an executable page)
            info = detect.partial_uarch(vendor=cpuid.vendor, features=cpuid.features)
            return info, cpuid.brand_string()
        except Exception:  # a system that forbids executable pages: the kernel's view instead
            pass
    return detect.detected_info(), detect.brand_string()


def _microarchitecture(info: Any) -> str:
    """The newest known microarchitecture `info` satisfies: archspec's `host()`, applied to the
    CPUID-derived info rather than to /proc/cpuinfo."""
    from archspec.cpu import detect

    def depth(target: Any) -> tuple[int, int]:
        return len(target.ancestors), len(target.features)

    candidates = detect.compatible_microarchitectures(info)
    best_generic = max((c for c in candidates if c.vendor == "generic"), key=depth)
    if info.cpu_part and any(c.cpu_part == info.cpu_part for c in candidates):
        candidates = [c for c in candidates if c.cpu_part == info.cpu_part]
    candidates = [c for c in candidates if c > best_generic]
    return max(candidates, key=depth).name if candidates else best_generic.name


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where archspec is not installed or cannot tell)."""
    try:
        return frozenset(_detected()[0].features)
    except ImportError:
        return frozenset()


@functools.cache
def cpu_info() -> dict[str, str]:
    """`model` (brand string), `microarchitecture` and `int8`: the int8 dot-product capability
    ("AVX-512 VNNI", "AVX-VNNI", "ARM dot product", AVX2_ONLY, "none" or "unknown").

    It names the CPU in verify's table and keys the device cache (`runtime.cache`), so it must
    describe the CPU the kernels run on."""
    try:
        info, brand = _detected()
    except ImportError:  # a device without archspec still runs; it just knows less
        name = platform.processor() or platform.machine()
        return {"model": name, "microarchitecture": "unknown", "int8": "unknown"}
    flags = cpu_flags()
    capability = next((name for flag, name in _INT8_DOT_PRODUCT.items() if flag in flags), None)
    microarchitecture = _microarchitecture(info)
    return {
        # ARM has no brand string; its part number names it (neoverse_n1, cortex_a72 ...)
        "model": brand or f"{platform.machine()} {microarchitecture}",
        "microarchitecture": microarchitecture,
        "int8": capability or (AVX2_ONLY if "avx2" in flags else "none"),
    }


def has_int8_dot_product(capability: str) -> bool:
    return capability in _INT8_DOT_PRODUCT.values()
