"""Keras, once: the only module that imports TensorFlow's Keras; everything else takes it from here.

tensorflow-model-optimization 0.8 works only with Keras 2 (`tf_keras`), and TensorFlow picks
its Keras when it is first imported, so the switch must be set before that import.
"""

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines


@contextlib.contextmanager
def _start_up_lines_kept_back() -> Iterator[None]:
    """TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA stubs) to file descriptor 2
    before its logging reads TF_CPP_MIN_LOG_LEVEL. They are kept back, and shown only if the
    import fails or the user asked for everything (TF_CPP_MIN_LOG_LEVEL=0)."""
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            kept.seek(0)
            sys.stderr.write(kept.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


with _start_up_lines_kept_back():
    import tensorflow as tf
    import tf_keras as keras

__all__ = ["keras", "tf"]
