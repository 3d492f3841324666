"""runtime.cpu names the CPU its kernels see: on x86 from CPUID, not from /proc/cpuinfo.

Under `qemu-x86_64 -cpu Haswell-v4` the two differ (the emulated CPUID has AVX2 only, the host's
/proc/cpuinfo lists AVX-512 VNNI), and the device label and the cache key took the brand from one
and the int8 capability from the other. tests/test_cross_cpu.py checks the same under real qemu.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

import pytest
from archspec.cpu import TARGETS, detect

import runtime.cpu as cpu
from benchmarks.crosscpu.sysroot import CPUS

# Haswell's flags as archspec names them: what CPUID shows under qemu -cpu Haswell-v4.
HASWELL = set(TARGETS["haswell"].features)


def _clear() -> None:
    for cached in (cpu._detected, cpu.cpu_flags, cpu.cpu_info, detect._machine):
        cached.cache_clear()  # archspec caches platform.machine(), which the tests change


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    _clear()
    yield
    _clear()


class _EmulatedHaswell:
    """What CPUID says under qemu -cpu Haswell-v4."""

    vendor = "GenuineIntel"
    features = HASWELL

    def brand_string(self) -> str:
        return "Intel Core Processor (Haswell, no TSX, IBRS)"


def test_x86_capability_comes_from_cpuid_not_proc_cpuinfo(monkeypatch):
    host = detect.partial_uarch(
        vendor="GenuineIntel", features=HASWELL | {"avx512f", "avx512_vnni"}
    )
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(detect, "CpuidInfoCollector", _EmulatedHaswell)
    monkeypatch.setattr(detect, "detected_info", lambda: host)  # the host's /proc/cpuinfo
    info = cpu.cpu_info()
    assert info == {
        "model": "Intel Core Processor (Haswell, no TSX, IBRS)",
        "microarchitecture": "haswell",
        "int8": cpu.AVX2_ONLY,
    }
    assert "avx512_vnni" not in cpu.cpu_flags()


def test_without_cpuid_access_the_kernels_view_is_read(monkeypatch):
    """A system that forbids executable pages (CPUID runs from one) still gets a label."""

    def refused() -> None:
        raise OSError("mmap: operation not permitted")

    host = detect.partial_uarch(vendor="GenuineIntel", features=HASWELL | {"avx512_vnni"})
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(detect, "CpuidInfoCollector", refused)
    monkeypatch.setattr(detect, "detected_info", lambda: host)
    monkeypatch.setattr(detect, "brand_string", lambda: None)
    assert cpu.cpu_info()["int8"] == "AVX-512 VNNI"


@pytest.mark.parametrize(
    ("emulated", "name", "int8"),
    [("neoverse-n1", "neoverse_n1", "ARM dot product"), ("cortex-a72", "cortex_a72", "none")],
)
def test_arm_reads_proc_cpuinfo_as_its_kernels_do(monkeypatch, emulated, name, int8):
    """The /proc/cpuinfo entries `make cross-cpu` gives each emulated ARM CPU."""
    arm = CPUS[emulated]
    info = detect.partial_uarch(vendor="ARM", features=set(arm.features.split()), cpu_part=arm.part)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(detect, "detected_info", lambda: info)
    monkeypatch.setattr(detect, "brand_string", lambda: None)
    assert cpu.cpu_info() == {"model": f"aarch64 {name}", "microarchitecture": name, "int8": int8}


def test_this_machine_agrees_with_its_own_cpuid():
    """Natively CPUID and /proc/cpuinfo agree on the int8 instructions (the kernel hides none
    here), so the fix changes no label outside an emulator."""
    if platform.machine() != "x86_64":
        pytest.skip("x86 only: CPUID")
    proc = set(detect.detected_info().features)
    flags = cpu.cpu_flags()
    for flag in ("avx2", "avx512_vnni", "avx_vnni"):
        assert (flag in flags) == (flag in proc), flag
