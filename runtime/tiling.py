"""The paper's overlap-tile strategy: any image size through a model with a fixed tile size."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of output tiles that cover [0, length); the last one is pushed back to the end."""
    if tile <= overlap:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile - overlap))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _owned_spans(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Where tiles overlap, each pixel goes to the tile where it is most central: split midway."""
    cuts = (
        [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] + [length]
    )
    return list(itertools.pairwise(cuts))


def predict_tiled(
    image: np.ndarray,
    predict: Predict,
    in_size: int,
    out_size: int,
    overlap: int = 0,
    batch_size: int = 4,
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
    """
    height, width = image.shape[:2]
    context = (in_size - out_size) // 2
    # Mirror so every tile, border ones included, has its context; small images grow to a tile.
    pad_y, pad_x = max(out_size - height, 0), max(out_size - width, 0)
    padded = np.pad(
        image,
        ((context, context + pad_y), (context, context + pad_x), (0, 0)),
        mode="symmetric",
    )
    full_h, full_w = height + pad_y, width + pad_x
    ys, xs = tile_starts(full_h, out_size, overlap), tile_starts(full_w, out_size, overlap)
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
