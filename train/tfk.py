"""Keras, once: the only module that imports TensorFlow's Keras; everything else takes it from here.

tensorflow-model-optimization 0.8 works only with Keras 2 (`tf_keras`), and TensorFlow picks
its Keras when it is first imported, so the switch must be set before that import.
"""

import os

from runtime.log import native_lines_kept_back

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines


# TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA stubs) to file descriptor 2 before its
# logging reads TF_CPP_MIN_LOG_LEVEL. They are kept back, and shown only if the import fails or
# the user asked for everything (TF_CPP_MIN_LOG_LEVEL=0).
_SHOW_ALL = os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"

with native_lines_kept_back(lambda _: _SHOW_ALL):
    import tensorflow as tf
    import tf_keras as keras

    # Loads the GPU platform here, where its error line on a machine without one ("failed call
    # to cuInit") is kept back too, instead of at the first op. Physical devices only: TensorFlow
    # is not started, so MultiWorkerMirroredStrategy can still be created after this.
    tf.config.list_physical_devices()

__all__ = ["keras", "tf"]
