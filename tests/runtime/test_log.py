"""Lines that C++ code writes straight to file descriptor 2 are filtered, never lost on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.log import native_lines_kept_back

ROOT = Path(__file__).resolve().parents[2]


def test_native_lines_are_filtered_and_all_shown_when_the_block_fails(capfd):
    with native_lines_kept_back(lambda line: not line.startswith("INFO")):
        os.write(2, b"INFO: a notice\nWARNING: kept\n")
    assert capfd.readouterr().err == "WARNING: kept\n"
    with pytest.raises(RuntimeError), native_lines_kept_back(lambda _: False):
        os.write(2, b"INFO: what led to it\n")
        raise RuntimeError("failed")
    assert capfd.readouterr().err == "INFO: what led to it\n"
    os.write(2, b"after\n")  # file descriptor 2 is itself again
    assert capfd.readouterr().err == "after\n"


def test_a_librarys_basic_config_repeats_no_line_of_ours():
    """The TFLite converter logs through absl, which calls logging.basicConfig: the root's
    handler it would add printed every optimize line twice ('INFO:optimize...'). Other
    libraries' warnings still show, once."""
    probe = (
        "import argparse, logging\n"
        "from runtime.log import configure\n"
        "configure(argparse.Namespace())\n"
        "logging.basicConfig()\n"
        "logging.getLogger('optimize.x').info('ours')\n"
        "logging.getLogger('somelib').warning('theirs')\n"
        "logging.getLogger('somelib').info('their chatter')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.stderr.splitlines() == ["ours", "theirs"], done.stderr
