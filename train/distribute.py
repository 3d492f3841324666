"""Devices: the tf.distribute strategy, mixed precision, and which worker writes artifacts."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

from runtime.errors import UserError
from train.config import MixedPrecision, Strategy
from train.tfk import keras, tf

# Seconds a worker waits for the rest of its cluster to start before it gives up.
DEFAULT_WORKER_TIMEOUT = 600


def make_strategy(kind: Strategy) -> tf.distribute.Strategy:
    """The strategy for `--strategy`. Call it before TensorFlow runs any op.

    `mirrored` replicates over every local GPU, or over every logical CPU device when there is
    no GPU (how the tests exercise it); `multi-worker` reads the cluster from TF_CONFIG and must
    come first of all: it configures collective ops, which TensorFlow allows only at start-up
    (listing the devices already counts as starting).
    """
    if kind is Strategy.MULTI_WORKER:
        return _multi_worker(check_tf_config())
    gpus = _local_gpus()
    if kind is Strategy.AUTO:
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if kind is Strategy.ONE_DEVICE:
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    if gpus:
        return tf.distribute.MirroredStrategy(gpus)
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    # NCCL is GPU-only: reduce on one device instead.
    return tf.distribute.MirroredStrategy(
        cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def _multi_worker(tf_config: dict) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy once every peer answers; a one-line UserError when one does
    not within UNET_EDGE_WORKER_TIMEOUT seconds. TensorFlow itself would wait forever, holding
    Python's lock and deaf to SIGTERM, so the wait happens here first."""
    seconds = float(os.environ.get("UNET_EDGE_WORKER_TIMEOUT", DEFAULT_WORKER_TIMEOUT))
    task = tf_config["task"]
    own = tf_config["cluster"][task["type"]][int(task["index"])]
    peers = [a for group in tf_config["cluster"].values() for a in group if a != own]
    missing = _wait_for_peers(own, peers, seconds)
    if missing:
        raise UserError(
            f"worker(s) {', '.join(missing)} did not answer within {seconds:g} s: start every "
            "worker of TF_CONFIG and check that each can reach the others "
            "(UNET_EDGE_WORKER_TIMEOUT sets the wait)"
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _wait_for_peers(own: str, peers: list[str], seconds: float) -> list[str]:
    """Answers on our own port and knocks on each peer's until all have answered; returns the
    ones that did not in time. A peer already past this point answers through TensorFlow's
    own server on the same port."""
    port = int(own.rpartition(":")[2])
    try:
        listener = socket.create_server(("", port))
    except OSError as error:
        raise UserError(
            f"cannot listen on {own} ({error.strerror}): free the port or fix TF_CONFIG"
        ) from None
    listener.setblocking(False)
    pending, deadline = list(peers), time.monotonic() + seconds
    try:
        while pending and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                while True:
                    listener.accept()[0].close()
            pending = [peer for peer in pending if not _reachable(peer)]
            time.sleep(0.2)
        # Answer a moment longer: a peer may knock just after the last of ours got through.
        until = time.monotonic() + 2
        while time.monotonic() < until:
            with contextlib.suppress(BlockingIOError):
                listener.accept()[0].close()
            time.sleep(0.05)
    finally:
        listener.close()
    return pending


def check_tf_config() -> dict:
    """TF_CONFIG as multi-worker training needs it; anything else is a one-line UserError."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError(
            "--strategy multi-worker needs TF_CONFIG describing the cluster: see the README"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON ({error}): fix the variable") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise UserError('TF_CONFIG has no "cluster" with the workers\' host:port lists: fix it')
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise UserError('TF_CONFIG has no "task" {"type": ..., "index": ...} for this process')
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise UserError(
            f"TF_CONFIG's task {task['type']} {task['index']} is not in its cluster "
            f"({', '.join(f'{k}: {len(v)}' for k, v in cluster.items())}): fix the index"
        )
    return config


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the artifacts: the chief, or worker 0 when there is none."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
    )


def _local_gpus() -> list[str]:
    return [d.name for d in tf.config.list_logical_devices("GPU")]


def devices_in_words() -> str:
    """What trains, for the log: "1 GPU", "4 GPUs", or the CPU, saying that no GPU was found
    (TensorFlow's own reason, e.g. a failed cuInit, shows with TF_CPP_MIN_LOG_LEVEL=0)."""
    gpus = len(_local_gpus())
    return f"{gpus} GPU{'s' if gpus > 1 else ''}" if gpus else "the CPU (no GPU found)"


def wants_mixed_precision(choice: MixedPrecision) -> bool:
    if choice is MixedPrecision.AUTO:
        return bool(_local_gpus())
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
