"""What else the machine did while a benchmark measured: other processes' CPU, in cores.

A throughput measured against what the cores allow assumes the cores were the benchmark's. On a
user's machine they may not be: a 2-core EPYC with a load average of 1.5 turned a pipeline that
runs at 0.95 of its ceiling on a quiet machine into a missed target. The probe reads the
kernel's count of busy CPU time (`/proc/stat`, every process, steal included) and subtracts
this process's own, so a report can say "other processes used 0.97 cores" instead of turning
that load into a verdict on the project.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

_STAT = Path("/proc/stat")
# A phase during which other processes used more than this many cores on average is too busy to
# judge a throughput or a per-pixel cost against the cores' own rate: a tenth of a core is
# what a desktop's background (a browser tab, an editor) takes, a busy core is 1.
BUSY_CORES = 0.25


def _busy_seconds() -> float | None:
    """CPU time every process has used since boot (user, nice, system, irq, softirq, steal)."""
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """This process's CPU time, all its threads and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _wall_seconds() -> float:
    return time.perf_counter()


class LoadProbe:
    """Started at a phase's beginning; `other_cores()` at its end gives the mean number of
    cores other processes kept busy in between (None where the kernel does not say)."""

    def __init__(self) -> None:
        self._busy, self._own, self._wall = _busy_seconds(), _own_seconds(), _wall_seconds()

    def other_cores(self) -> float | None:
        busy, wall = _busy_seconds(), _wall_seconds() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return None
        others = (busy - self._busy) - (_own_seconds() - self._own)
        return round(max(0.0, others / wall), 2)


def busy_reason(other_cores: float | None, what: str) -> str | None:
    """Why `what` cannot be judged, when other processes took more than BUSY_CORES."""
    if other_cores is None or other_cores <= BUSY_CORES:
        return None
    return (
        f"not judged: other processes kept {other_cores:.2f} core(s) busy during {what} "
        f"(more than {BUSY_CORES:g}); run it again on a quieter machine"
    )
