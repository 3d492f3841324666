"""`--strategy multi-worker` for real: two worker processes on localhost train the tiny U-Net."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["--preset", "tiny", "--strategy", "multi-worker", "--input-size", "64"]
TRAIN += ["--batch-size", "2", "--epochs", "2", "--steps-per-epoch", "3"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_orphans():
    """A worker left waiting for a peer would outlive the test (TensorFlow ignores SIGTERM)."""
    yield
    for run in _STARTED:
        if run.poll() is None:
            run.kill()
            run.wait()
    _STARTED.clear()


def _train(tf_config: str, out: Path, extra: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.Popen(
        [sys.executable, "-m", "train", *TRAIN, *(extra or []), "--out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _STARTED.append(run)
    return run


@pytest.mark.slow
def test_two_workers_train_in_step_and_only_the_chief_writes(tmp_path):
    """Both share one --out, as on a shared file system: the strategy is made before any
    TensorFlow op (else 'Collective ops must be configured at program startup'), both finish
    with the same weights, and the folder holds the chief's artifacts only."""
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    out = tmp_path / "run"
    runs = [
        _train(json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}), out)
        for i in range(2)
    ]  # fmt: skip
    results = [run.communicate(timeout=300) for run in runs]
    for run, (_stdout, stderr) in zip(runs, results, strict=True):
        assert run.returncode == 0, stderr[-3000:]
    digests = [line for stdout, _ in results for line in stdout.splitlines() if "sha256" in line]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "model:" in results[0][0] and "model:" not in results[1][0]
    names = {p.name for p in out.iterdir()}
    assert {"model.keras", "best.keras", "config.json", "history.csv", "metrics.json"} <= names
    assert "backup" not in names  # the chief's and Keras' worker backups are gone
    assert len(list((out / "logs" / "train").iterdir())) == 1  # one writer of TensorBoard logs
    assert len((out / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs, once


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"cluster": {"worker": ["localhost:1"]}}', 'TF_CONFIG has no "task"'),
        ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG has no "cluster"'),
        (
            '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
            "task worker 3 is not in its cluster (worker: 1)",
        ),
    ],
)
def test_a_bad_tf_config_is_one_line_and_exit_2(tmp_path, tf_config, message):
    run = _train(tf_config, tmp_path / "run")
    _stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 2, stderr[-2000:]
    assert message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.slow
def test_a_peer_that_never_comes_is_one_line_and_exit_2(tmp_path, monkeypatch):
    """TensorFlow would wait for worker 1 forever (and ignore SIGTERM): the trainer gives up."""
    monkeypatch.setenv("UNET_EDGE_WORKER_TIMEOUT", "5")
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
    run = _train(json.dumps(config), tmp_path / "run")
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2
    assert "did not answer within 5 s" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()


def _wait_for_rows(history: Path, rows: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if history.exists() and len(history.read_text().splitlines()) > rows:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_a_worker_killed_mid_run_resumes_with_its_cluster(tmp_path):
    """Worker 1 is killed after the first epoch; its chief cannot go on without it (it is
    killed too, as a cluster manager would restart the job); the same commands again resume
    from BackupAndRestore's last epoch and finish in step."""
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    out = tmp_path / "run"
    configs = [
        json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(2)
    ]
    longer = ["--epochs", "6"]
    first = [_train(config, out, longer) for config in configs]
    assert _wait_for_rows(out / "history.csv", 1, timeout=240), first[0].communicate()[1][-3000:]
    first[1].kill()
    first[1].wait()
    try:
        first[0].wait(timeout=30)  # it fails on the lost peer, or hangs in a collective
    except subprocess.TimeoutExpired:
        first[0].kill()
        first[0].wait()
    done_before = len((out / "history.csv").read_text().splitlines()) - 1
    assert 1 <= done_before < 6
    again = [_train(config, out, longer) for config in configs]
    results = [run.communicate(timeout=300) for run in again]
    for run, (_, stderr) in zip(again, results, strict=True):
        assert run.returncode == 0, stderr[-3000:]
    assert "resuming in" in results[0][1]  # logged, on stderr
    digests = [line for stdout, _ in results for line in stdout.splitlines() if "sha256" in line]
    assert len(digests) == 2 and digests[0] == digests[1]
    epochs = [line.split(",")[0] for line in (out / "history.csv").read_text().splitlines()[1:]]
    # Every epoch once; a kill between the CSV row and the backup may repeat one.
    assert sorted(set(epochs), key=int) == [str(e) for e in range(6)]
    assert len(epochs) <= 7
