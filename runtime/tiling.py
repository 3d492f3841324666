"""The paper's overlap-tile strategy: any image size through a model with a fixed tile size."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import numpy as np

from runtime.errors import UserError
from runtime.memory import ModelMemory

Predict = Callable[[np.ndarray], np.ndarray]


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Starts of the fewest tiles that cover [0, length) sharing about `overlap` pixels.

    The tiles are spread evenly, so neighbours share as much as that tile count allows: more
    context at every seam for the same cost (512 px in 256 px tiles: starts 0, 128, 256).
    Starts are multiples of `align` (2**depth for a U-Net, whose pooling grid must line up
    with the whole image's) when `length - tile` is one; `predict_tiled` pads so that it is.
    """
    if length <= tile:
        return [0]
    if tile <= overlap:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    span, step = (length - tile) // align, max(1, (tile - overlap) // align)  # in align units
    count = math.ceil(span / step) + 1
    starts = [round(i * span / (count - 1)) * align for i in range(count)] if span else [0]
    if starts[-1] != length - tile:  # an end off the grid gets one more, flush tile
        starts.append(length - tile)
    return starts


def _owned_spans(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Where tiles overlap, each pixel goes to the tile where it is most central: split midway."""
    cuts = (
        [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] + [length]
    )
    return list(itertools.pairwise(cuts))


def _grid(side: int, out_size: int, overlap: int, align: int) -> tuple[int, list[int]]:
    """The padded length of one image side and its tile starts: a small image grows to a
    tile, every image to a length whose last tile starts on the alignment grid."""
    padded = side + max(out_size - side, 0) + (-max(side - out_size, 0)) % align
    return padded, tile_starts(padded, out_size, overlap, align)


Size = int | tuple[int, int]  # a square side, or (height, width)


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def tile_count(height: int, width: int, out_size: Size, overlap: int = 0, align: int = 1) -> int:
    """How many tiles `predict_tiled` runs for a (height, width) image."""
    out_h, out_w = _pair(out_size)
    return len(_grid(height, out_h, overlap, align)[1]) * len(
        _grid(width, out_w, overlap, align)[1]
    )


def predict_tiled(
    image: np.ndarray,
    predict: Predict,
    in_size: Size,
    out_size: Size,
    overlap: int = 0,
    batch_size: int = 4,
    align: int = 1,
) -> np.ndarray:
    """Runs `predict` over mirror-padded tiles and stitches an (H, W, K) output.

    Args:
        image: (H, W, C) model input, already normalized.
        predict: maps an (N, in_h, in_w, C) batch to (N, out_h, out_w, K).
        in_size: the model's input tile, a side or (height, width).
        out_size: the model's output tile (smaller than in_size for a 'valid' model: the
            difference is the context each output pixel needs, filled by mirroring at borders).
            A tile as large as the image padded to `align` is one pass over the whole image.
        overlap: output pixels shared by neighbouring tiles, so tile borders are never used.
        batch_size: tiles per `predict` call.
        align: tile starts are multiples of this (2**depth): a tile then pools the same pixel
            groups as the whole image would, and its output matches the whole image's.
    """
    height, width = image.shape[:2]
    (in_h, in_w), (out_h, out_w) = _pair(in_size), _pair(out_size)
    if (in_h, in_w) == (out_h, out_w) == (height, width):
        return predict(image[None])[0]  # one pass over an image on the grid: nothing to stitch
    context = (in_h - out_h) // 2
    full_h, ys = _grid(height, out_h, overlap, align)
    full_w, xs = _grid(width, out_w, overlap, align)
    # Mirror so every tile, border ones included, has its context.
    padded = np.pad(
        image,
        ((context, context + full_h - height), (context, context + full_w - width), (0, 0)),
        mode="symmetric",
    )
    corners = [(y, x) for y in ys for x in xs]
    outputs: list[np.ndarray] = []
    for i in range(0, len(corners), batch_size):
        tiles = np.stack(
            [padded[y : y + in_h, x : x + in_w] for y, x in corners[i : i + batch_size]]
        )
        outputs.extend(predict(tiles))
    result = np.empty((full_h, full_w, outputs[0].shape[-1]), dtype=outputs[0].dtype)
    tile_of = dict(zip(corners, outputs, strict=True))
    for y, (y0, y1) in zip(ys, _owned_spans(ys, out_h, full_h), strict=True):
        for x, (x0, x1) in zip(xs, _owned_spans(xs, out_w, full_w), strict=True):
            result[y0:y1, x0:x1] = tile_of[(y, x)][y0 - y : y1 - y, x0 - x : x1 - x]
    return result[:height, :width]


def receptive_field(depth: int) -> int:
    """The input pixels (per side) that one output pixel of a depth-`depth` U-Net can see.

    Two 3x3 convolutions a block, 2x2 pooling, and up-sampling as `train.model` builds it:
    nearest neighbour and a 2x2 convolution (a 2x2 stride-2 transposed convolution sees less).
    Depth 4: 215 px; depth 2: 47 px.
    """
    size, step = 1, 1  # the field, and one pixel of the current level in input pixels
    for _ in range(depth):
        size += 2 * 2 * step + step  # the block's two 3x3 convolutions, then the pooling
        step *= 2
    size += 2 * 2 * step  # the bottleneck
    for _ in range(depth):
        step //= 2
        size += step + 2 * 2 * step  # the 2x2 up-convolution, then the block
    return size


def align_up(length: int, align: int) -> int:
    return max(align, -(-length // align) * align)


def default_overlap(multiple: int, output_size: int, resizable: bool) -> int:
    """Output pixels neighbouring tiles share, unless the caller says.

    A model that takes any size tiles only images beyond its memory budget, in large tiles:
    three quarters of the receptive field (rounded up to the pooling grid), so every kept pixel
    has 3/8 of the field of real context on each side. Masks of tiled against whole images,
    measured: the demo U-Net (depth 4, field 215 px; 1024 px images) agreed on 99.88% at 64 px
    in int8, 99.93% at 112 and 99.97% at 160; the tiny test U-Net (depth 2, field 47 px) on
    99.77% at 24 px, 99.91% at 32 and 99.97% at 36. At the whole field the masks are the same.
    A fixed tile keeps the eighth of a tile it always had.
    """
    if resizable:
        return align_up(receptive_field(multiple.bit_length() - 1) * 3 // 4, multiple)
    return output_size // 8


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """How `predict_tiled` runs one image: the input tile, how many, how many to a run."""

    tile: tuple[int, int]  # (height, width) of each model input
    count: int  # tiles for the image: 1 is one pass over the whole image
    batch: int  # tiles per interpreter run


def plan_fixed(
    height: int,
    width: int,
    tile: tuple[int, int],
    overlap: int,
    align: int,
    memory: ModelMemory | None,
    budget_mb: float,
) -> TilePlan:
    """A model with a fixed tile (`tile`: its input and output sides): as many tiles to a run
    as `budget_mb` allows when it takes a batch (`memory` given), else one at a time."""
    in_side, out_side = tile
    count = tile_count(height, width, out_side, overlap, align)
    room = memory.pixels_within(budget_mb) if memory else 0
    return TilePlan((in_side, in_side), count, max(1, min(count, room // in_side**2)))


def _tile_side(length: int, count: int, overlap: int, align: int) -> int:
    """The smallest aligned tile side that covers `length` with `count` tiles sharing `overlap`."""
    return align_up(-(-(length + (count - 1) * overlap) // count), align)


def plan_tiles(
    height: int, width: int, align: int, overlap: int, memory: ModelMemory, budget_mb: float
) -> TilePlan:
    """The whole image (padded to `align`) when one run of it fits `budget_mb`, else the
    tiles that fit and compute the fewest pixels, as many to a batch as fit too.

    Raises:
        UserError: the budget leaves no tile larger than the overlap.
    """
    full = (align_up(height, align), align_up(width, align))
    room = memory.pixels_within(budget_mb)
    if full[0] * full[1] <= room:
        return TilePlan(full, 1, 1)
    best: tuple[int, int, tuple[int, int]] | None = None  # (pixels, count, tile)
    for rows in range(1, full[0] // align + 1):
        tile_h = _tile_side(full[0], rows, overlap, align)
        if tile_h <= overlap or tile_h * align > room:
            continue
        # The fewest columns whose tiles fit beside this height.
        widest = room // tile_h // align * align
        columns = next(
            (
                n
                for n in range(1, full[1] // align + 1)
                if _tile_side(full[1], n, overlap, align) <= widest
            ),
            None,
        )
        if columns is None:
            continue
        tile = (tile_h, min(_tile_side(full[1], columns, overlap, align), full[1]))
        count = tile_count(height, width, tile, overlap, align)
        pixels = count * tile[0] * tile[1]
        if best is None or (pixels, count) < best[:2]:
            best = (pixels, count, tile)
    if best is None:
        need = memory.mb((overlap + 2 * align) ** 2)
        raise UserError(
            f"max_memory_mb {budget_mb:g} leaves no room for tiles larger than this model's "
            f"{overlap} px overlap: give at least {math.ceil(need)}"
        )
    _, count, tile = best
    return TilePlan(tile, count, max(1, min(count, room // (tile[0] * tile[1]))))


def plan_image(
    height: int,
    width: int,
    model: tuple[int, int, int],
    overlap: int,
    memory: ModelMemory | None,
    shape: tuple[bool, bool],
    budget_mb: float,
) -> TilePlan:
    """How the runtime runs a (height, width) image through a model.

    Args:
        model: its input tile, output tile and pooling grid (2**depth).
        memory: what the bundle measured for it (None in bundles made before).
        shape: whether it takes any (height and width, batch).
    """
    tile, out_tile, align = model
    resizable, batchable = shape
    if resizable and memory is not None:
        return plan_tiles(height, width, align, overlap, memory, budget_mb)
    batch_memory = memory if batchable else None
    return plan_fixed(height, width, (tile, out_tile), overlap, align, batch_memory, budget_mb)
