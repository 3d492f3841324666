"""The runtime against its peer, bioimageio.core, on one bioimage.io package and one large image.

`python -m benchmarks.zoo_peer PKG --size 2048 --out FILE.json` segments a size x size image
(the package's test input mirrored out to that size, or gamma noise where it has none) twice,
each in a fresh process: (a) `runtime.Segmenter` on the package (onnxruntime, `--threads`)
and (b) bioimageio.core's blocked prediction (`predict` with `input_block_shape`: blocks of the
runtime's input tile, the package's halo), on the same ONNX weights with the same thread count.
Each process runs the image once to warm up and once timed; its peak resident memory is the
process's VmHWM (imports, model, both runs). The masks of the two are compared pixel by pixel.

Core's onnxruntime session keeps core's own options; only its intra-op threads are set (it
would take every core otherwise), by wrapping `onnxruntime.InferenceSession` in its process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.environment import quiet_env
from runtime.errors import UserError
from runtime.io import write_json_atomic

PEERS = ("runtime", "core")


@dataclasses.dataclass(frozen=True)
class PeerRun:
    """One process's figures: the timed run, the load before it, its peak memory."""

    peer: str
    ms: float  # the timed run, after one warm-up run of the same image
    load_ms: float  # reading the package and building the model (session, pipeline)
    peak_rss_mb: float  # VmHWM, 10^6 bytes
    detail: str  # what ran: engine and threads, or core's version and block


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.zoo_peer",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("package", type=Path, help="a bioimage.io package: zip, folder or rdf")
    parser.add_argument("--size", type=int, default=2048, help="the square image's side in px")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("zoo_peer.json"), help="the JSON report")
    parser.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)  # a child's role
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)  # the child's .npy in
    parser.add_argument("--probs", type=Path, help=argparse.SUPPRESS)  # the child's .npy out
    return parser.parse_args(argv)


def peer_image(package: Any, size: int) -> tuple[np.ndarray, str]:
    """(size, size, C) raw values: the package's test input, mirrored out to `size` (the
    nuclei and their statistics of a real image), or gamma noise where it has no test input."""
    entry = package.rdf["inputs"][0].get("test_tensor")  # an opened package has one input
    if entry:
        _, raw = package.files.checked(entry, "test input")
        image = package.inputs.to_nhwc(np.load(io.BytesIO(raw), allow_pickle=False))[0]
        h, w = image.shape[:2]
        pad = ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0))
        mirrored = np.pad(image, pad, mode="symmetric")[:size, :size]
        return np.ascontiguousarray(mirrored, dtype=np.float32), "its test input, mirrored"
    rng = np.random.default_rng(0)
    shape = (size, size, package.inputs.channels)
    return rng.gamma(2.0, 300.0, shape).astype(np.float32), "gamma noise (no test input)"


def _check(args: argparse.Namespace, package: Any) -> None:
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    block = package.manifest.input_size
    if args.size < block:
        raise UserError(
            f"--size {args.size} is smaller than the package's {block} px block, which "
            f"bioimageio.core's blocked prediction cannot run: give --size {block} or more"
        )


def _run_child(args: argparse.Namespace, peer: str, image: Path, probs: Path) -> PeerRun:
    command = [sys.executable, "-m", "benchmarks.zoo_peer", str(args.package), "--worker", peer]
    command += ["--image", str(image), "--probs", str(probs), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=quiet_env())
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the {peer} process failed: {last}")
    return PeerRun(**json.loads(done.stdout.strip().splitlines()[-1]))


def _peak_rss_mb() -> float:
    from runtime.memory import peak_rss_bytes

    return peak_rss_bytes() / 1e6


def _runtime_worker(args: argparse.Namespace, image: np.ndarray) -> tuple[PeerRun, np.ndarray]:
    from runtime import Segmenter

    start = time.perf_counter()
    segmenter = Segmenter.from_bundle(args.package, backend="onnx", num_threads=args.threads)
    loaded = time.perf_counter()
    array = image[..., 0] if image.shape[-1] == 1 else image
    segmenter.predict(array)
    timed = time.perf_counter()
    result = segmenter.predict(array)
    done = time.perf_counter()
    detail = f"onnxruntime, {args.threads} threads, {result.tiles} tiles"
    run = PeerRun("runtime", (done - timed) * 1e3, (loaded - start) * 1e3, _peak_rss_mb(), detail)
    return run, result.probabilities


def _threads_for_core(threads: int) -> None:
    """Core builds its session with onnxruntime's defaults; only the threads are set here."""
    import onnxruntime

    session = onnxruntime.InferenceSession

    def with_threads(*args: Any, **kwargs: Any) -> Any:
        options = kwargs.pop("sess_options", None) or onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        return session(*args, sess_options=options, **kwargs)

    onnxruntime.InferenceSession = with_threads  # type: ignore[misc]


def _core_worker(args: argparse.Namespace, image: np.ndarray) -> tuple[PeerRun, np.ndarray]:
    from loguru import logger

    logger.remove()  # core's per-block log lines
    _threads_for_core(args.threads)
    from bioimageio.core import __version__, create_prediction_pipeline, predict
    from bioimageio.spec import load_model_description

    from runtime.zoo import open_package

    start = time.perf_counter()
    package = open_package(args.package)
    description = load_model_description(args.package, perform_io_checks=False)
    pipeline = create_prediction_pipeline(description, weight_format="onnx")
    loaded = time.perf_counter()
    tensor_in, tensor_out = package.rdf["inputs"][0], package.rdf["outputs"][0]
    side = package.manifest.input_size
    sizes = {"b": 1, "c": package.inputs.channels, "y": side, "x": side}
    block = {tensor_in["id"]: {a.id: sizes.get(a.key, 1) for a in package.inputs.axes}}
    sample = package.inputs.to_model(image[None])
    predict(model=pipeline, inputs=sample, input_block_shape=block)
    timed = time.perf_counter()
    output = predict(model=pipeline, inputs=sample, input_block_shape=block)
    done = time.perf_counter()
    values = np.asarray(output.members[tensor_out["id"]].data.values)
    probabilities = package.outputs.to_nhwc(values)[0]
    detail = f"bioimageio.core {__version__}, {side} px blocks, halo {package.outputs.halo}"
    run = PeerRun("core", (done - timed) * 1e3, (loaded - start) * 1e3, _peak_rss_mb(), detail)
    return run, probabilities


def _worker(args: argparse.Namespace) -> int:
    image = np.load(args.image)
    worker = _runtime_worker if args.worker == "runtime" else _core_worker
    run, probabilities = worker(args, image)
    np.save(args.probs, np.asarray(probabilities, dtype=np.float32))
    print(json.dumps(dataclasses.asdict(run)))
    return 0


def _cpu() -> str:
    from runtime.cpu import cpu_info

    return cpu_info()["model"]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("onnxruntime", "bioimageio.core", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Both peers on the image, each in its own process; the report as a dict."""
    from runtime.metrics import masks_from_probabilities
    from runtime.zoo import open_package

    package = open_package(args.package)
    _check(args, package)
    image, source = peer_image(package, args.size)
    runs, probabilities = {}, {}
    with tempfile.TemporaryDirectory(prefix="zoo-peer-") as scratch:
        np.save(Path(scratch, "image.npy"), image)
        for peer in PEERS:
            out = Path(scratch, f"{peer}.npy")
            runs[peer] = _run_child(args, peer, Path(scratch, "image.npy"), out)
            probabilities[peer] = np.load(out)
    threshold = package.manifest.threshold
    masks = {p: masks_from_probabilities(probabilities[p], threshold) for p in PEERS}
    return {
        "package": str(args.package),
        "size": args.size,
        "image": source,
        "threads": args.threads,
        "cpu": _cpu(),
        "versions": _versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "runs": {peer: dataclasses.asdict(run) for peer, run in runs.items()},
        "mask_agreement": float(np.mean(masks["runtime"] == masks["core"])),
        "max_probability_difference": float(
            np.abs(probabilities["runtime"] - probabilities["core"]).max()
        ),
    }


def summary(report: dict[str, Any]) -> str:
    """Three lines: each peer's time and memory, then their agreement."""
    lines = [
        f"{peer:8s} {run['ms']:9.0f} ms  peak {run['peak_rss_mb']:6.0f} MB  ({run['detail']})"
        for peer, run in report["runs"].items()
    ]
    lines.append(
        f"masks agree {report['mask_agreement']:.4%} on {report['size']} x {report['size']} px "
        f"(max probability difference {report['max_probability_difference']:.1e})"
    )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.worker:
        return _worker(args)
    try:
        report = compare(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_json_atomic(args.out, report)
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
