"""Logging for every command: what the library says goes to stderr through `logging`; results
(tables, paths, the masks written) are the commands' own output on stdout.

Each CLI adds `-q/--quiet` (warnings and errors only) and `-v/--verbose` (debug lines too) with
`add_verbosity`, and calls `configure` with what was given. Progress bars (tqdm) stay on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator

FORMAT = "%(message)s"


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", default=False, help="warnings and errors only"
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", default=False, help="debug messages too"
    )


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


PACKAGES = ("runtime", "train", "optimize", "benchmarks")


class _OthersWarnings(_Stderr):
    """The root logger's handler in a command: other libraries' warnings, as Python's last
    resort prints them. Without it a library's `logging.basicConfig` (the TFLite converter logs
    through absl, which calls it) gives the root a handler that repeats every line of ours."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter(FORMAT))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] not in PACKAGES and bool(super().filter(record))


def configure(args: argparse.Namespace) -> None:
    """The package loggers' level from -q/-v (INFO by default), written to stderr."""
    level = (
        logging.WARNING
        if getattr(args, "quiet", False)
        else logging.DEBUG
        if getattr(args, "verbose", False)
        else logging.INFO
    )
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(FORMAT))
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
    root = logging.getLogger()
    if not root.handlers:  # a program (or pytest) that set up logging keeps its own
        root.addHandler(_OthersWarnings())


@contextlib.contextmanager
def native_lines_kept_back(shown: Callable[[str], bool]) -> Iterator[None]:
    """Holds back what C++ code writes straight to file descriptor 2 inside the block, where
    `logging` cannot reach it; afterwards writes the lines that `shown` accepts to stderr, and
    every line when the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            kept.seek(0)
            lines = kept.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if failed or shown(line)))
