"""Keras, once: the only module that imports TensorFlow's Keras; everything else takes it from here.

tensorflow-model-optimization 0.8 works only with Keras 2 (`tf_keras`), and TensorFlow picks
its Keras when it is first imported, so the switch must be set before that import.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

import tensorflow as tf
import tf_keras as keras

__all__ = ["keras", "tf"]
