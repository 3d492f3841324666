"""Training step time of a preset on this machine, per precision and oneDNN instruction set.

    python -m benchmarks.train_speed --preset paper --crop 256 --batch-size 2 \
        --precision float32 mixed_bfloat16 --isa default AVX2

Each (precision, ISA) pair runs in its own process, since Keras' policy is global and oneDNN
reads `ONEDNN_MAX_CPU_ISA` once, when TensorFlow loads. The step is the trainer's: the
preset's U-Net, Adam and the default loss, on random crops (speed does not depend on the
pixels). It answers "how many epochs fit in my budget" and "does bf16 pay on this CPU"
before hours of training are spent. GMAC/s counts a training step as three forward passes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
ISAS = ("default", "AVX2", "AVX512_CORE", "AVX512_CORE_BF16", "AVX512_CORE_AMX")


def time_steps(
    preset: str, crop: int, batch: int, precision: str, steps: int, warmup: int
) -> tuple[float, int]:
    """Seconds per training step (median of `steps` after `warmup`), in this process, and the
    MACs of one crop's forward pass."""
    import numpy as np
    import tensorflow as tf

    from optimize.filter_prune import count_macs
    from train.config import Loss
    from train.config import preset as preset_config
    from train.losses import make_loss
    from train.model import build_unet
    from train.tfk import keras

    config = preset_config(preset)
    keras.mixed_precision.set_global_policy(precision)
    model = build_unet(config, crop)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_loss(Loss.AUTO, config.classes))
    rng = np.random.default_rng(0)
    x = rng.random((batch, crop, crop, config.channels), dtype=np.float32)
    labels = rng.integers(0, 2, (batch, crop, crop, 1)).astype(np.float32)
    marks = [time.perf_counter()]
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda *_: marks.append(time.perf_counter())
    )
    data = tf.data.Dataset.from_tensors((x, labels)).repeat()
    model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[clock])
    times = np.diff(marks)[warmup:]
    keras.mixed_precision.set_global_policy("float32")
    forward = count_macs(build_unet(config, crop), crop)
    return float(np.median(times)), forward


def _measure_in_child(args: argparse.Namespace, precision: str, isa: str) -> dict[str, Any]:
    env = dict(os.environ)
    if isa != "default":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    code = (
        "import json, benchmarks.train_speed as t; "
        f"s, m = t.time_steps({args.preset!r}, {args.crop}, {args.batch_size}, {precision!r}, "
        f"{args.steps}, {args.warmup}); print(json.dumps({{'seconds': s, 'macs': m}}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    row = {"precision": precision, "isa": isa}
    if done.returncode:  # e.g. bf16 capped at AVX2: oneDNN has no bf16 convolution there
        return {**row, "failed": _reason(done.stderr)}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = result["seconds"]
    macs = 3 * result["macs"] * args.batch_size
    return {
        **row,
        "seconds_per_step": round(seconds, 4),
        "crops_per_second": round(args.batch_size / seconds, 3),
        "train_gmac_per_second": round(macs / seconds / 1e9, 1),
    }


def _reason(stderr: str) -> str:
    """The failing kernel's own words when TensorFlow logged them (oneDNN's "could not create a
    primitive descriptor"), else the exception's line."""
    lines = stderr.splitlines()
    kernels = [
        line.split("OP_REQUIRES failed at ", 1)[1] for line in lines if "OP_REQUIRES" in line
    ]
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return (kernels or raised or lines or ["no output"])[-1].strip()[:200]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--crop", type=int, default=256, help="training crop side (default: 256)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["float32"])
    parser.add_argument("--isa", nargs="+", choices=ISAS, default=["default"])
    parser.add_argument("--steps", type=int, default=8, help="timed steps (default: 8)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = [_measure_in_child(args, p, i) for i in args.isa for p in args.precision]
    print(f"{args.preset}, {args.crop} px crops, batch {args.batch_size}")
    print(f"{'ISA':<18}{'precision':<16}{'s/step':>8}{'crops/s':>9}{'GMAC/s':>8}")
    for row in rows:
        if "failed" in row:
            print(f"{row['isa']:<18}{row['precision']:<16}failed: {row['failed']}")
            continue
        print(
            f"{row['isa']:<18}{row['precision']:<16}{row['seconds_per_step']:>8.3f}"
            f"{row['crops_per_second']:>9.2f}{row['train_gmac_per_second']:>8.1f}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"preset": args.preset, "crop": args.crop, "rows": rows}, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
