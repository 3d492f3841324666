"""The paper's overlap-tile strategy: any image size through a model with a fixed tile size."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Starts of the fewest tiles that cover [0, length) sharing about `overlap` pixels.

    The tiles are spread evenly, so neighbours share as much as that tile count allows: more
    context at every seam for the same cost (512 px in 256 px tiles: starts 0, 128, 256).
    Starts are multiples of `align` (2**depth for a U-Net, whose pooling grid must line up
    with the whole image's) when `length - tile` is one; `predict_tiled` pads so that it is.
    """
    if tile <= overlap:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    if length <= tile:
        return [0]
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


def tile_count(height: int, width: int, out_size: int, overlap: int = 0, align: int = 1) -> int:
    """How many tiles `predict_tiled` runs for a (height, width) image."""
    return len(_grid(height, out_size, overlap, align)[1]) * len(
        _grid(width, out_size, overlap, align)[1]
    )


def predict_tiled(
    image: np.ndarray,
    predict: Predict,
    in_size: int,
    out_size: int,
    overlap: int = 0,
    batch_size: int = 4,
    align: int = 1,
) -> np.ndarray:
    """Runs `predict` over mirror-padded tiles and stitches an (H, W, K) output.

    Args:
        image: (H, W, C) model input, already normalized.
        predict: maps an (N, in_size, in_size, C) batch to (N, out_size, out_size, K).
        in_size: the model's input tile side.
        out_size: the model's output tile side (smaller than in_size for a 'valid' model: the
            difference is the context each output pixel needs, filled by mirroring at borders).
        overlap: output pixels shared by neighbouring tiles, so tile borders are never used.
        batch_size: tiles per `predict` call.
        align: tile starts are multiples of this (2**depth): a tile then pools the same pixel
            groups as the whole image would, and its output matches the whole image's.
    """
    height, width = image.shape[:2]
    context = (in_size - out_size) // 2
    (full_h, ys), (full_w, xs) = (_grid(side, out_size, overlap, align) for side in (height, width))
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
            [padded[y : y + in_size, x : x + in_size] for y, x in corners[i : i + batch_size]]
        )
        outputs.extend(predict(tiles))
    result = np.empty((full_h, full_w, outputs[0].shape[-1]), dtype=outputs[0].dtype)
    tile_of = dict(zip(corners, outputs, strict=True))
    for y, (y0, y1) in zip(ys, _owned_spans(ys, out_size, full_h), strict=True):
        for x, (x0, x1) in zip(xs, _owned_spans(xs, out_size, full_w), strict=True):
            result[y0:y1, x0:x1] = tile_of[(y, x)][y0 - y : y1 - y, x0 - x : x1 - x]
    return result[:height, :width]
