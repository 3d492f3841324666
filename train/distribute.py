"""Devices: the tf.distribute strategy, mixed precision, and which worker writes artifacts."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

from runtime.errors import UserError
from train.config import MixedPrecision, Strategy
from train.tfk import keras, tf


def make_strategy(kind: Strategy) -> tf.distribute.Strategy:
    """The strategy for `--strategy`.

    `mirrored` replicates over every local GPU, or over every logical CPU device when there is
    no GPU (how the tests exercise it); `multi-worker` reads the cluster from TF_CONFIG.
    """
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if kind is Strategy.AUTO:
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if kind is Strategy.ONE_DEVICE:
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    if kind is Strategy.MIRRORED:
        if gpus:
            return tf.distribute.MirroredStrategy(gpus)
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        # NCCL is GPU-only: reduce on one device instead.
        return tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if "TF_CONFIG" not in os.environ:
        raise UserError(
            "--strategy multi-worker needs TF_CONFIG describing the cluster: see the README"
        )
    try:
        json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON ({error}): fix the variable") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the artifacts: the chief, or worker 0 when there is none."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
    )


def wants_mixed_precision(choice: MixedPrecision) -> bool:
    if choice is MixedPrecision.AUTO:
        return bool(tf.config.list_logical_devices("GPU"))
    return choice is MixedPrecision.ON


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """Layers built inside take float16 compute (the head stays float32); restored afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
