"""The load probe tells other processes' CPU from this process's own, and a busy machine's
throughput targets are reported as not judged instead of missed."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks.load import BUSY_CORES, LoadProbe, busy_reason
from benchmarks.schema import EndToEnd, EndToEndSize, FolderRun, Target
from benchmarks.targets import end_to_end_targets

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/stat")

SPIN = "import time\nend = time.perf_counter() + {s}\nwhile time.perf_counter() < end: pass"


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_another_process_counts_and_this_ones_own_work_does_not():
    """A child spinning for a second is one busy core to the probe; the same spin in this
    process is not. Compared with each other, so a machine's own background cancels out."""
    probe = LoadProbe()
    _spin(1.0)
    own = probe.other_cores()
    probe = LoadProbe()
    child = subprocess.Popen([sys.executable, "-c", SPIN.format(s=1.0)])
    _spin(1.0)  # meanwhile: this process's own work, which must not count
    other = probe.other_cores()
    child.wait()
    assert own is not None and other is not None
    assert other - own >= 0.5  # the child had at least half a core on a 2-core machine


def test_a_phase_above_the_busy_bar_is_not_judged():
    assert busy_reason(None, "x") is None and busy_reason(BUSY_CORES, "x") is None
    reason = busy_reason(0.97, "the folder's passes")
    assert reason and "0.97 core(s) busy during the folder's passes" in reason


def test_busy_folder_and_size_runs_are_reported_not_missed():
    """The same planted figures, on a quiet and on a busy machine: the folder at 0.5 of its
    ceiling and a 512 px image at 1.6 x four 256 px ones miss when quiet and are not judged
    when another process kept a core busy."""

    def figures(other: float) -> EndToEnd:
        sizes = (
            EndToEndSize("onnx int8", 256, 2, 10.0, 9.0, (256, 256), 1, 1, other_cores=other),
            EndToEndSize("onnx int8", 512, 2, 64.0, 60.0, (512, 512), 1, 1, other_cores=other),
        )
        folder = FolderRun("onnx int8", 512, 8, 8.0, 5.0, 2, other, interpreter_ms=60.0)
        return EndToEnd(sizes, (folder,))

    quiet = end_to_end_targets(figures(0.02))
    assert len(quiet) == 2 and all(t.missed and t.not_judged is None for t in quiet)
    busy = end_to_end_targets(figures(0.95))
    assert [t.measured for t in busy] == [t.measured for t in quiet]
    assert all(not t.missed and "0.95 core(s) busy" in (t.not_judged or "") for t in busy)


def test_a_target_is_missed_only_when_judged():
    assert Target("a", 1.0, 0.5, met=False).missed
    assert not Target("a", 1.0, 0.5, met=False, not_judged="busy").missed
    assert not Target("a", 1.0, 1.5, met=True).missed


def test_the_per_pixel_claim_uses_the_smallest_size_timed_beside_it():
    """256 px at 10 ms in its own entry, 16 ms when timed beside the 512 px runs (the machine
    was slower then): the claim divides by the 16 beside it, 64 / (4 x 16) = 1.0."""
    sizes = (
        EndToEndSize("tflite int8", 256, 2, 10.0, 9.0, (256, 256), 1, 1),
        EndToEndSize("tflite int8", 512, 2, 64.0, 60.0, (512, 512), 1, 1, smallest_runtime_ms=16.0),
    )
    (target,) = end_to_end_targets(EndToEnd(sizes))
    assert target.measured == pytest.approx(1.0) and target.met
