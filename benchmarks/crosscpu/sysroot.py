"""What `make cross-cpu` runs on: qemu-user, an arm64 root and the device's aarch64 wheels.

Everything comes from Debian's and PyPI's packages and is built once into a cache folder
(`$UNET_EDGE_CROSS_CPU_CACHE`, else `<user cache>/unet-edge/cross-cpu`), never into the
project's venv; a later run reuses it. Stdlib only: this module runs before anything is there.

- qemu: Debian's `qemu-user-static` (static binaries, so no host libraries to match), unpacked.
- x86: the project's own venv Python runs under `qemu-x86_64 -cpu Haswell-v4`; its libraries
  read the emulated CPUID and take their AVX2 kernels.
- ARM: Debian's arm64 Python 3.11 and the libraries it and the wheels link (`dpkg -x`), and
  PyPI's aarch64 wheels of the device install at the versions pinned in constraints.txt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Debian bookworm arm64: Python 3.11 and the shared libraries that it, numpy, onnxruntime and
# LiteRT's wheels load (apt's closure of python3.11 minus dpkg, tar and perl, plus libstdc++).
ARM64_DEBS = [
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "gcc-12-base",
    "libexpat1",
    "zlib1g",
    "libffi8",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libsqlite3-0",
    "libncursesw6",
    "libtinfo6",
    "libreadline8",
    "libuuid1",
    "libcrypt1",
    "libdb5.3",
    "libnsl2",
    "libtirpc3",
    "libgssapi-krb5-2",
    "libkrb5-3",
    "libk5crypto3",
    "libkrb5support0",
    "libkeyutils1",
    "libcom-err2",
    "libgomp1",
]
# The device install (pyproject's runtime extras): interpreters, numpy, Pillow and the small
# pure-Python packages `runtime` imports. Versions come from constraints.txt.
WHEELS = [
    "numpy",
    "onnxruntime",
    "ai-edge-litert",
    "pillow",
    "archspec",
    "tifffile",
    "pyyaml",
    "tqdm",
]
# numpy 2.4's aarch64 wheels are manylinux_2_27/2_28; pip takes a platform list literally.
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64")
TCG_NOISE = "TCG doesn't support requested feature"  # qemu's note per CPUID bit it cannot do


class CrossCpuUnavailable(Exception):
    """The emulated CPUs cannot be built here (not an x86-64 Debian host, no network, ...)."""


@dataclasses.dataclass(frozen=True)
class EmulatedCpu:
    """A CPU qemu-user emulates, and for ARM the /proc/cpuinfo entry the kernels should read.

    onnxruntime's and XNNPACK's cpuinfo library parses /proc/cpuinfo on ARM; under qemu that is
    the x86 host's, and both crash at start-up. `CPU part` must match `-cpu`: cpuinfo switches
    kernels (dot product) on by part number, and a Neoverse-N1 part on a Cortex-A72 dies with
    SIGILL.
    """

    name: str
    label: str
    arch: str  # "x86_64" or "aarch64"
    qemu_cpu: str
    features: str = ""  # ARM: the Features line
    part: str = ""  # ARM: CPU part
    variant: str = "0x0"
    revision: int = 0

    def cpuinfo(self, cores: int) -> str:
        entry = (
            "processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
            "CPU architecture: 8\nCPU variant\t: {v}\nCPU part\t: {p}\nCPU revision\t: {r}\n"
        )
        return "\n".join(
            entry.format(i=i, f=self.features, v=self.variant, p=self.part, r=self.revision)
            for i in range(cores)
        )


CPUS: dict[str, EmulatedCpu] = {
    cpu.name: cpu
    for cpu in (
        EmulatedCpu("haswell", "x86 AVX2, no VNNI (Haswell)", "x86_64", "Haswell-v4"),
        EmulatedCpu(
            "neoverse-n1",
            "ARM Neoverse-N1 (dot product)",
            "aarch64",
            "neoverse-n1",
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
            "lrcpc dcpop asimddp ssbs",
            "0xd0c",
            "0x3",
            1,
        ),
        EmulatedCpu(
            "cortex-a72",
            "ARM Cortex-A72 (no dot product)",
            "aarch64",
            "cortex-a72",
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid",
            "0xd08",
            "0x0",
            3,
        ),
    )
}


def cache_folder() -> Path:
    if os.environ.get("UNET_EDGE_CROSS_CPU_CACHE"):
        return Path(os.environ["UNET_EDGE_CROSS_CPU_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unet-edge" / "cross-cpu"


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CrossCpuUnavailable(f"{what}: {error}") from None
    if done.returncode != 0:
        said = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise CrossCpuUnavailable(f"{what} failed: {said[-1] if said else 'no output'}")
    return done.stdout


def _check_host() -> None:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise CrossCpuUnavailable("needs an x86-64 Linux host (qemu-user runs the other CPUs)")
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise CrossCpuUnavailable("needs Debian's apt-get and dpkg for qemu and the arm64 root")


def _ensure_arm64_lists() -> None:
    """arm64 as a foreign architecture with package lists (`dpkg --add-architecture`)."""
    foreign = _run(["dpkg", "--print-foreign-architectures"], "dpkg").split()
    if "arm64" not in foreign:
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64 (root?)")
    probe = subprocess.run(["apt-cache", "show", "python3.11:arm64"], capture_output=True)
    if probe.returncode != 0:
        _run(["apt-get", "update", "-qq"], "apt-get update (root?)")


@contextlib.contextmanager
def _built_into(target: Path) -> Iterator[Path]:
    """A fresh folder next to `target` that replaces it when the block succeeds: an interrupted
    build never leaves a half-built folder that looks whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpack_debs(packages: list[str], target: Path) -> None:
    """`apt-get download` the packages and `dpkg -x` them into `target`."""
    with tempfile.TemporaryDirectory(prefix="debs-") as debs, _built_into(target) as tree:
        _run(["apt-get", "download", *packages], f"apt-get download {packages[0]} ...", Path(debs))
        for deb in sorted(Path(debs).glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(tree)], f"dpkg -x {deb.name}")
        (tree / ".built").write_text(" ".join(packages))


def _stamped(folder: Path, key: str) -> bool:
    """Built before from the same package list (and pins)."""
    stamp = folder / ".built"
    return stamp.is_file() and stamp.read_text() == key


def qemu(arch: str) -> Path:
    """The static qemu-user binary for `arch`, unpacked from Debian's qemu-user-static."""
    folder = cache_folder() / "qemu"
    if not _stamped(folder, "qemu-user-static"):
        _check_host()
        try:
            _unpack_debs(["qemu-user-static"], folder)
        except CrossCpuUnavailable:  # a fresh machine may have no package lists yet
            _run(["apt-get", "update", "-qq"], "apt-get update (root?)")
            _unpack_debs(["qemu-user-static"], folder)
        for binary in (folder / "usr" / "bin").iterdir():  # 30 architectures, ~15 MB each
            if binary.name not in ("qemu-x86_64-static", "qemu-aarch64-static"):
                binary.unlink()
    return folder / "usr" / "bin" / f"qemu-{arch}-static"


def _constraints_key() -> tuple[list[str], str]:
    pins = ROOT / "constraints.txt"
    text = pins.read_text() if pins.is_file() else ""
    return [f"-c{pins}"] if text else [], hashlib.sha256(text.encode()).hexdigest()


def arm64_root() -> Path:
    """Debian's arm64 Python 3.11 and its libraries, unpacked."""
    folder = cache_folder() / "arm64-root"
    packages = [f"{name}:arm64" for name in ARM64_DEBS]
    if not _stamped(folder, " ".join(packages)):
        _check_host()
        _ensure_arm64_lists()
        _unpack_debs(packages, folder)
    return folder


def arm64_site() -> Path:
    """PyPI's aarch64 wheels of the device install, pinned by constraints.txt (`pip --target`
    with this Python's pip: the venv itself is not touched)."""
    folder = cache_folder() / "arm64-site"
    constraint, digest = _constraints_key()
    key = f"{' '.join(WHEELS)} {digest}"
    if not _stamped(folder, key):
        with _built_into(folder) as tmp:
            platforms = [f"--platform={p}" for p in WHEEL_PLATFORMS]
            pip = [sys.executable, "-m", "pip", "install", "-qq", "--target", str(tmp)]
            pip += [*platforms, "--only-binary=:all:", "--python-version=3.11"]
            _run([*pip, "--implementation=cp", *constraint, *WHEELS], "pip install (aarch64)")
            (tmp / ".built").write_text(key)
    return folder


def cpu_sysroot(cpu: EmulatedCpu) -> Path:
    """The arm64 root as `cpu` sees it: links to the shared root, and its own /proc/cpuinfo.

    `qemu -L DIR` looks up every absolute path the program opens in DIR first, so the kernels'
    cpuinfo library reads this proc/cpuinfo instead of the host's: no mount namespace and no
    root privileges (the /proc bind mount in a private namespace does the same with both).
    """
    root = arm64_root()
    folder = cache_folder() / f"sysroot-{cpu.name}"
    (folder / "proc").mkdir(parents=True, exist_ok=True)
    for top in ("etc", "lib", "usr"):
        link = folder / top
        if not link.is_symlink():
            link.symlink_to(root / top)
    (folder / "proc" / "cpuinfo").write_text(cpu.cpuinfo(os.cpu_count() or 1))
    return folder


def command(cpu: EmulatedCpu, script: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run `python SCRIPT...` on the emulated `cpu`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONNOUSERSITE"] = "1"
    if cpu.arch == "x86_64":
        env["PYTHONPATH"] = str(ROOT)
        return [str(qemu("x86_64")), "-cpu", cpu.qemu_cpu, sys.executable, *script], env
    sysroot, site = cpu_sysroot(cpu), arm64_site()
    env["PYTHONPATH"] = f"{site}{os.pathsep}{ROOT}"
    python = str(sysroot / "usr" / "bin" / "python3.11")
    qemu_line = [str(qemu("aarch64")), "-cpu", cpu.qemu_cpu, "-L", str(sysroot)]
    return [*qemu_line, python, *script], env


def build(cpus: list[EmulatedCpu]) -> None:
    """Everything `cpus` need, built now (a later `command` finds it cached)."""
    for cpu in cpus:
        command(cpu, [])
