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


def test_another_process_is_counted():
    """A child spinning for a second keeps a core busy: the probe sees at least half of it
    (on 2 cores the child has one to itself unless two more processes compete)."""
    probe = LoadProbe()
    child = subprocess.Popen([sys.executable, "-c", SPIN.format(s=1.0)])
    time.sleep(1.0)
    other = probe.other_cores()
    child.wait()
    assert other is not None and other >= 0.5


def test_this_process_and_its_finished_children_are_subtracted(monkeypatch):
    """Planted clocks: over 2 s the kernel counted 5 CPU-seconds, of which this process (and
    the children it waited for) used 3; the others kept 1 core busy."""
    import benchmarks.load as load

    clocks = {"busy": 10.0, "own": 1.0, "wall": 100.0}
    monkeypatch.setattr(load, "_busy_seconds", lambda: clocks["busy"])
    monkeypatch.setattr(load, "_own_seconds", lambda: clocks["own"])
    monkeypatch.setattr(load, "_wall_seconds", lambda: clocks["wall"])
    probe = LoadProbe()
    clocks.update(busy=15.0, own=4.0, wall=102.0)
    assert probe.other_cores() == 1.0
    clocks.update(own=6.0)  # more than the kernel counted (its ticks are coarse): never negative
    assert probe.other_cores() == 0.0


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
