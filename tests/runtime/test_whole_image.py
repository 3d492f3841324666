"""Whole-image inference: exports of any size, XNNPACK after a resize, the memory plan, the
overlap the receptive field asks for, and whole against tiled masks."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import Segmenter, UserError
from runtime.bundle import read_manifest
from runtime.memory import ModelMemory, measure_model
from runtime.preprocess import normalize
from runtime.private_api import undelegated_operators
from runtime.tiling import (
    default_overlap,
    plan_fixed,
    plan_tiles,
    receptive_field,
    tile_count,
)

# What LiteRT runs itself in a U-Net exported for any size: XNNPACK takes no nearest-neighbour
# resize (a model with a fixed tile runs the same four outside it), and the resize's target
# size is computed from the input's shape. Every convolution, pooling and concatenation must
# stay delegated.
CHEAP_OPS = {"RESIZE_NEAREST_NEIGHBOR", "SHAPE", "SLICE", "STRIDED_SLICE", "MUL", "PACK"}


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    from train.data.synthetic import generate_em

    return generate_em(1, (height, width), seed)[0][0]


# --- the plan (numpy only) -------------------------------------------------------------------

MEMORY = ModelMemory(base_mb=16.0, bytes_per_pixel=600.0)  # ~LiteRT int8 of the demo U-Net


def test_an_image_that_fits_the_budget_runs_in_one_pass_padded_to_the_pooling_grid():
    plan = plan_tiles(500, 300, 16, 112, MEMORY, budget_mb=384)
    assert plan.tile == (512, 304) and plan.count == 1 and plan.batch == 1


def test_a_larger_image_runs_in_the_fewest_pixels_of_tiles_that_fit():
    budget = 384
    plan = plan_tiles(2048, 2048, 16, 112, MEMORY, budget)
    assert MEMORY.mb(plan.tile[0] * plan.tile[1]) <= budget
    assert plan.count == tile_count(2048, 2048, plan.tile, 112, 16) > 1
    assert all(side % 16 == 0 and side > 112 for side in plan.tile)
    # Square tiles of the largest side that fits would compute more pixels.
    side = int((MEMORY.pixels_within(budget)) ** 0.5) // 16 * 16
    squares = tile_count(2048, 2048, side, 112, 16) * side * side
    assert plan.count * plan.tile[0] * plan.tile[1] <= squares
    # A strip: the whole width where the budget allows it.
    strip = plan_tiles(1024, 4096, 16, 112, MEMORY, budget)
    assert strip.count > 1 and MEMORY.mb(strip.tile[0] * strip.tile[1]) <= budget


def test_fixed_tiles_run_as_batches_within_the_budget():
    small = ModelMemory(base_mb=1.0, bytes_per_pixel=100.0)
    plan = plan_fixed(1024, 1024, (60, 20), 4, 4, small, budget_mb=2)
    assert plan.tile == (60, 60) and plan.count == tile_count(1024, 1024, 20, 4, 4)
    assert plan.batch == small.pixels_within(2) // 3600 > 1
    assert plan_fixed(1024, 1024, (60, 20), 4, 4, None, budget_mb=2).batch == 1  # batch 1 only


def test_a_budget_too_small_for_the_overlap_is_a_user_error():
    with pytest.raises(UserError, match=r"max_memory_mb 20 .* give at least \d+"):
        plan_tiles(1024, 1024, 16, 112, MEMORY, budget_mb=20)


def test_the_memory_line_goes_through_two_measurements():
    memory = ModelMemory.through([(256 * 256, 55.0), (512 * 512, 171.0)])
    assert memory.mb(256 * 256) == pytest.approx(55.0, abs=0.01)
    assert memory.mb(512 * 512) == pytest.approx(171.0, abs=0.01)
    assert memory.bytes_per_pixel == pytest.approx(116 * 2**20 / (512 * 512 - 256 * 256), rel=1e-3)
    # A noisy non-positive slope falls back to the larger run's MB per pixel: never 0.
    assert ModelMemory.through([(100, 5.0), (400, 4.0)]).bytes_per_pixel > 0


def test_receptive_field_of_the_u_nets_built_here():
    assert receptive_field(4) == 215 and receptive_field(2) == 47
    assert default_overlap(16, 256, resizable=True) == 176  # 3/4 of 215, on the 16 px grid
    assert default_overlap(4, 64, resizable=True) == 36  # 3/4 of 47, on the 4 px grid
    assert default_overlap(16, 256, resizable=False) == 32  # a fixed tile: an eighth of it


def test_receptive_field_is_what_the_model_sees():
    """One input pixel changed: the outputs that change span at most the field, and nearly
    all of it (an untrained model, so no path is dead by training)."""
    from train.config import preset
    from train.model import build_unet
    from train.tfk import keras

    keras.utils.set_random_seed(0)
    config = preset("tiny").replace(batch_norm=False)
    model = build_unet(config)
    field = receptive_field(config.depth)
    x = np.random.default_rng(0).standard_normal((1, 128, 128, 1)).astype(np.float32)
    poked = x.copy()
    poked[0, 64, 64, 0] += 10.0
    changed = np.abs(model(poked).numpy() - model(x).numpy())[0, ..., 0] > 0
    rows, cols = np.nonzero(changed)
    for extent in (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1):
        assert field - 2 * 2**config.depth <= extent <= field


# --- the bundle's models ---------------------------------------------------------------------


def test_exports_take_any_size_and_record_their_memory(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    for artifact in manifest.artifacts:
        assert artifact.shape == (-1, -1, -1, 1) and artifact.resizable, artifact.file
        assert artifact.memory.bytes_per_pixel > 0, artifact.file


def test_a_valid_model_keeps_its_fixed_tile_and_runs_tiles_as_a_batch(tiny_valid_bundle):
    for artifact in read_manifest(tiny_valid_bundle).artifacts:
        assert artifact.shape == (-1, 60, 60, 1), artifact.file
        assert artifact.batchable and not artifact.resizable
        assert artifact.memory.bytes_per_pixel > 0
    seg = Segmenter.from_bundle(tiny_valid_bundle, precision="fp32", backend="litert")
    plan = seg.plan(200, 200)
    assert plan.tile == (60, 60) and 1 < plan.batch <= plan.count
    one_by_one = Segmenter.from_bundle(
        tiny_valid_bundle, "fp32", "litert", max_memory_mb=seg.artifact.memory.mb(3600)
    )
    assert one_by_one.plan(200, 200).batch == 1
    image = _image(200, 200)
    np.testing.assert_allclose(
        seg.predict(image).probabilities, one_by_one.predict(image).probabilities, atol=1e-5
    )


def test_xnnpack_delegates_every_heavy_op_after_a_resize(tiny_bundle):
    from runtime.backends import LiteRTBackend

    for file in ("model_fp32.tflite", "model_int8.tflite"):
        backend = LiteRTBackend(tiny_bundle / file, num_threads=1)
        for shape in ((1, 64, 64, 1), (1, 256, 192, 1), (3, 96, 96, 1)):
            backend.run(np.zeros(shape, np.float32))
            left = undelegated_operators(backend.interpreter)
            assert set(left) <= CHEAP_OPS, (file, shape, left)
            assert left["RESIZE_NEAREST_NEIGHBOR"] == 2  # depth 2: one per decoder level
        detail = backend.interpreter.get_input_details()[0]
        assert tuple(detail["shape"]) == (3, 96, 96, 1)
        if file == "model_int8.tflite":  # still int8 in and out after the resize
            assert detail["dtype"] == np.int8 and detail["quantization"][0] > 0


@pytest.mark.parametrize("file", ["model_fp32.tflite", "model_fp32.onnx"])
def test_a_batch_of_tiles_runs_as_one_and_equals_the_tiles_one_by_one(tiny_bundle, file):
    from runtime.backends import BACKENDS, backend_for

    fmt = file.rsplit(".", 1)[1]
    backend = BACKENDS[backend_for(fmt)][1](tiny_bundle / file, 1)
    tiles = np.random.default_rng(0).standard_normal((3, 64, 96, 1)).astype(np.float32)
    together = backend.run(tiles)
    apart = np.concatenate([backend.run(tile[None]) for tile in tiles])
    assert together.shape == (3, 64, 96, 1)
    np.testing.assert_allclose(together, apart, atol=1e-5)


def test_measured_memory_grows_with_the_pixels(tiny_bundle):
    shapes = [(1, 128, 128, 1), (1, 512, 512, 1)]
    memory = measure_model(tiny_bundle / "model_fp32.tflite", "tflite", shapes)
    assert memory.bytes_per_pixel > 0 and memory.mb(512 * 512) > memory.mb(128 * 128)


def test_the_segmenter_runs_an_image_that_fits_in_one_pass(tiny_bundle):
    from train.tfk import keras

    model = keras.models.load_model(tiny_bundle.parent / "run-same" / "model.keras", compile=False)
    seg = Segmenter.from_bundle(tiny_bundle, precision="fp32", backend="litert")
    image = _image(160, 136, seed=3)
    whole = seg.predict(image)
    assert whole.tiles == 1 and seg.plan(160, 136).tile == (160, 136)
    expected = model(normalize(image, seg.manifest.preprocessing)[None], training=False)
    np.testing.assert_allclose(whole.probabilities, expected.numpy()[0], atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tiled_masks_agree_with_the_whole_image(tiny_bundle, precision):
    """A budget that forces tiles: at the default overlap (3/4 of the field) >= 99.9% of
    pixels agree. At the whole field the tiles see all the whole image does: fp32 gives the
    same probabilities; int8 differs by at most 8 output steps (1/256) on < 0.1% of pixels."""
    seg = Segmenter.from_bundle(tiny_bundle, precision=precision, backend="litert")
    images = [_image(320, 288, seed=s) for s in (1, 2)]
    whole = [seg.predict(image) for image in images]
    assert all(p.tiles == 1 for p in whole)
    memory = seg.artifact.memory
    budget = memory.mb(96 * 96)  # tiles of at most 96 x 96 px
    for overlap in (seg.overlap, receptive_field(2) + 1):
        tiled = Segmenter.from_bundle(
            tiny_bundle, precision, "litert", overlap=overlap, max_memory_mb=budget
        )
        results = [tiled.predict(image) for image in images]
        assert all(r.tiles > 4 for r in results)
        agreement = np.mean(
            [np.mean(r.mask == w.mask) for r, w in zip(results, whole, strict=True)]
        )
        if overlap == seg.overlap:
            assert agreement >= 0.999, (precision, overlap, agreement)
        else:
            assert agreement >= 0.9999, (precision, overlap, agreement)
            for r, w in zip(results, whole, strict=True):
                np.testing.assert_allclose(
                    r.probabilities, w.probabilities, atol=2e-3 if precision == "fp32" else 8 / 256
                )
