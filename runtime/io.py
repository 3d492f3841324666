"""Atomic writes: a crash never leaves a half-written artifact that looks whole."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix); renames it onto `path` on success.

    The temporary file lives in the same folder so that `os.replace` is an atomic rename.
    Writers that insist on a file name (Keras wants `.keras`) write to the yielded path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def check_out_folder(out: Path, overwrite: bool, marker: str | None = None, what: str = "") -> None:
    """The check every command makes of its --out folder before any work.

    A file is refused, and so is a folder that already holds `what` (the file `marker` in it,
    or anything at all when `marker` is None) unless `overwrite`; the parent must be writable.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder")
    taken = (out / marker).exists() if marker else out.is_dir() and any(out.iterdir())
    if taken and not overwrite:
        raise UserError(
            f"{out} already holds {what or 'files'}: pass --overwrite or choose another --out"
        )
    parent = out.resolve().parent
    if not os.access(parent if parent.exists() else Path.cwd(), os.W_OK):
        raise UserError(f"cannot write under {parent}: choose a writable --out")
