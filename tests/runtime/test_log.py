"""Lines that C++ code writes straight to file descriptor 2 are filtered, never lost on failure."""

from __future__ import annotations

import os

import pytest

from runtime.log import native_lines_kept_back


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
