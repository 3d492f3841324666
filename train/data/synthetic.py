"""Synthetic electron-microscopy images of neuronal tissue, with exact membrane masks.

The embedded default dataset: it needs no download, is identical on every machine for a given
seed, and looks enough like ISBI 2012 serial-section EM (dark membranes between textured cells,
dark organelles that are not membrane, blur, noise, uneven illumination) that a model trained
on it has to learn the real task's cues rather than a shortcut. Only numpy is used, so it runs
wherever the on-device floor does.
"""

from __future__ import annotations

import operator

import numpy as np

_MIN_SIDE = 16
_CELLS_PER_256_SQUARED = (40.0, 90.0)  # cell density range, drawn per image
_WIDTH_PX = (1.5, 5.0)  # membrane width range, varying smoothly along the membranes
_SEED_MARGIN = 24  # seeds also fall this far outside the image, so border cells are not huge
_TILE = 16  # tile side for the nearest-seed search (16 measured faster than 32)


def generate_em(
    count: int, size: int | tuple[int, int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generates `count` synthetic EM images with their membrane masks.

    Image i is drawn from its own generator seeded with (seed, i), so it does not depend on
    `count`: asking for more images extends a dataset instead of reshuffling it.

    Args:
        count: Number of images, at least 1.
        size: Side of a square image, or (height, width); each side at least 16.
        seed: Non-negative seed; the same (count, size, seed) always gives the same arrays.

    Returns:
        images: uint8 (count, H, W) grayscale, membranes dark as in ISBI 2012.
        masks: uint8 (count, H, W), 1 = membrane, 0 = cell interior.

    Raises:
        ValueError: If an argument is out of range.
    """
    n = _check_count(count)
    height, width = _check_size(size)
    seed = _check_seed(seed)
    images = np.empty((n, height, width), np.uint8)
    masks = np.empty((n, height, width), np.uint8)
    for i in range(n):
        images[i], masks[i] = _render(np.random.default_rng([seed, i]), height, width)
    return images, masks


def _check_count(count: int) -> int:
    n = _as_int(count, "count", "30")
    if n < 1:
        raise ValueError(f"count must be at least 1, got {n}: ask for one image or more")
    return n


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if np.ndim(size) == 0 else tuple(size)
    if len(pair) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size!r}: pass e.g. 256")
    height, width = (_as_int(side, "size", "256") for side in pair)
    if min(height, width) < _MIN_SIDE:
        raise ValueError(
            f"size {height}x{width} is too small: make each side at least {_MIN_SIDE} pixels"
        )
    return height, width


def _check_seed(seed: int) -> int:
    value = _as_int(seed, "seed", "0")
    if value < 0:
        raise ValueError(f"seed must be non-negative, got {value}: pass e.g. 0")
    return value


def _as_int(value: object, name: str, example: str) -> int:
    """Python or numpy integers pass; a float or string is refused rather than truncated."""
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}: pass e.g. {example}") from None


def _render(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One image and mask; every random choice comes from `rng`, in a fixed order."""
    # Pad to whole tiles for the nearest-seed search; everything is cropped at the end.
    ph, pw = -(-height // _TILE) * _TILE, -(-width // _TILE) * _TILE
    shape = (ph, pw)
    yy, xx = np.mgrid[:ph, :pw].astype(np.float32)
    # A smooth domain warp bends the straight Voronoi edges into wavy membranes.
    warp = rng.uniform(3.0, 6.0)
    px = xx + warp * _smooth_field(rng, shape, 18.0)
    py = yy + warp * _smooth_field(rng, shape, 18.0)
    sx, sy, weight = _seeds(rng, height, width)
    d1, d2, cell = _two_nearest(px, py, sx, sy, weight)
    gap = d2 - d1
    lo, hi = _WIDTH_PX
    membrane_width = lo + (hi - lo) * 0.5 * (1.0 + np.tanh(1.2 * _smooth_field(rng, shape, 20.0)))
    mask = gap < membrane_width

    image = _interior(rng, shape, cell, len(sx))
    image -= _organelles(rng, shape, gap, membrane_width)
    # Half-dark at the mask edge, so the label sits on the half-maximum of the dark profile.
    contrast = rng.uniform(55.0, 90.0) * (1.0 + 0.25 * _smooth_field(rng, shape, 30.0))
    image -= contrast / (1.0 + (gap / membrane_width) ** 6)
    image = _blur(image, rng.uniform(0.5, 1.0))
    illumination = 1.0 + rng.uniform(0.05, 0.2) * _smooth_field(rng, shape, 120.0)
    image = image * illumination + rng.normal(0.0, rng.uniform(5.0, 10.0), shape)
    image = np.clip(np.rint(image[:height, :width]), 0, 255).astype(np.uint8)
    return image, mask[:height, :width].astype(np.uint8)


def _seeds(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell seeds and additive weights over the image plus a margin.

    Some seeds cluster, giving bundles of small axon-like cells next to large ones, and the
    additive weights curve the cell walls, as in real tissue, where a plain Voronoi diagram of
    uniform points would look like crazy paving.
    """
    m = _SEED_MARGIN
    area = (height + 2 * m) * (width + 2 * m)
    n = max(3, round(rng.uniform(*_CELLS_PER_256_SQUARED) * area / 256**2))
    spacing = np.sqrt(area / n)
    y = rng.uniform(-m, height + m, n)
    x = rng.uniform(-m, width + m, n)
    n_clustered = rng.binomial(n, rng.uniform(0.1, 0.4))
    n_centres = max(1, round(area / 256**2 * rng.uniform(1.0, 3.0)))
    centre = rng.integers(0, n_centres, n_clustered)
    centre_y, centre_x = rng.uniform(0, height, n_centres), rng.uniform(0, width, n_centres)
    y[:n_clustered] = centre_y[centre] + rng.normal(0, spacing, n_clustered)
    x[:n_clustered] = centre_x[centre] + rng.normal(0, spacing, n_clustered)
    weight = spacing * 0.3 * rng.beta(1.2, 3.0, n)
    weight[:n_clustered] *= 0.3
    keep = _well_separated(x, y, weight, 0.45 * spacing)
    return x[keep].astype(np.float32), y[keep].astype(np.float32), weight[keep].astype(np.float32)


def _well_separated(x: np.ndarray, y: np.ndarray, weight: np.ndarray, gap: float) -> np.ndarray:
    """Indices of seeds kept greedily so every kept pair has a cell wall at least `gap` apart.

    Two seeds with |s1 - s2| - |w1 - w2| near zero make a sliver cell whose whole area is
    thinner than a membrane, which renders as a dark wedge no real tissue has.
    """
    keep: list[int] = []
    for i in range(len(x)):
        k = np.asarray(keep, np.intp)
        clearance = np.hypot(x[k] - x[i], y[k] - y[i]) - np.abs(weight[k] - weight[i])
        if not keep or clearance.min() >= gap:
            keep.append(i)
    if len(keep) < 2:  # only in tiny images: fall back to the seed farthest from the first
        keep.append(int(np.argmax(np.hypot(x - x[0], y - y[0]))))
    return np.asarray(keep, np.intp)


def _two_nearest(
    px: np.ndarray, py: np.ndarray, sx: np.ndarray, sy: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted distances |p - s| - w to the nearest and second-nearest seed, and the nearest.

    Exact, but only each tile's candidate seeds are measured: a seed whose lower bound over a
    tile exceeds the second-smallest upper bound can be neither nearest nor second-nearest for
    any pixel of it. This keeps the work near O(pixels x ~15) instead of O(pixels x seeds).
    """
    ph, pw = px.shape
    th, tw, t = ph // _TILE, pw // _TILE, _TILE
    d1 = np.empty((ph, pw), np.float32)
    d2 = np.empty((ph, pw), np.float32)
    nearest = np.empty((ph, pw), np.intp)
    for row in range(th):
        rows = slice(row * t, (row + 1) * t)
        # (tw, t*t) pixel coordinates, one line per tile of this row of tiles.
        tx = px[rows].reshape(t, tw, t).transpose(1, 0, 2).reshape(tw, t * t)
        ty = py[rows].reshape(t, tw, t).transpose(1, 0, 2).reshape(tw, t * t)
        near, far = _tile_bounds(tx, ty, sx, sy, weight)
        bound = np.partition(far, 1, axis=1)[:, 1:2]
        k = int((near <= bound).sum(axis=1).max())
        cand = np.argpartition(near, k - 1, axis=1)[:, :k] if k < len(sx) else np.argsort(near)
        dist = (
            np.hypot(tx[:, :, None] - sx[cand][:, None, :], ty[:, :, None] - sy[cand][:, None, :])
            - weight[cand][:, None, :]
        )
        first = dist.argmin(axis=2)[:, :, None]
        best = np.take_along_axis(dist, first, axis=2)
        np.put_along_axis(dist, first, np.inf, axis=2)
        second = dist.min(axis=2)
        owner = np.take_along_axis(np.broadcast_to(cand[:, None, :], dist.shape), first, axis=2)
        for out, values in ((d1, best), (d2, second), (nearest, owner)):
            out[rows] = values.reshape(tw, t, t).transpose(1, 0, 2).reshape(t, pw)
    return d1, d2, nearest


def _tile_bounds(
    tx: np.ndarray, ty: np.ndarray, sx: np.ndarray, sy: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds (tiles, seeds) of each seed's weighted distance over each tile."""
    x0, x1 = tx.min(axis=1)[:, None], tx.max(axis=1)[:, None]
    y0, y1 = ty.min(axis=1)[:, None], ty.max(axis=1)[:, None]
    near = np.hypot(
        np.maximum(np.maximum(x0 - sx, sx - x1), 0), np.maximum(np.maximum(y0 - sy, sy - y1), 0)
    )
    far = np.hypot(
        np.maximum(np.abs(sx - x0), np.abs(sx - x1)), np.maximum(np.abs(sy - y0), np.abs(sy - y1))
    )
    return near - weight, far - weight


def _interior(
    rng: np.random.Generator, shape: tuple[int, int], cell: np.ndarray, n_cells: int
) -> np.ndarray:
    """Cell interiors: per-cell mean, low-frequency shading and fine cytoplasm grain."""
    base = rng.uniform(150.0, 185.0)
    per_cell = rng.normal(0.0, rng.uniform(8.0, 18.0), n_cells).astype(np.float32)
    image = base + per_cell[cell]
    image += rng.uniform(8.0, 16.0) * _smooth_field(rng, shape, 10.0)
    grain = _blur(rng.standard_normal(shape, np.float32), 0.7)
    image += rng.uniform(10.0, 18.0) / grain.std() * grain
    return image


def _organelles(
    rng: np.random.Generator, shape: tuple[int, int], gap: np.ndarray, membrane_width: np.ndarray
) -> np.ndarray:
    """Darkening from mitochondria-like ellipses and vesicle rings, kept off the membranes.

    They are as dark as membranes but compact or ring-shaped, so a model must use shape and
    context, not intensity alone, to tell them apart.
    """
    h, w = shape
    n = rng.poisson(h * w / 256**2 * rng.uniform(80.0, 180.0))
    tries = 4 * n  # most random spots are too close to a membrane for a given size
    ring = rng.random(tries) < 0.75
    major = np.where(ring, rng.uniform(2.0, 4.5, tries), rng.uniform(2.5, 9.0, tries))
    minor = major * np.where(ring, rng.uniform(0.8, 1.0, tries), rng.uniform(0.35, 0.8, tries))
    cy, cx = rng.uniform(0, h, tries), rng.uniform(0, w, tries)
    depth = rng.uniform(35.0, 75.0, tries)
    angle = rng.uniform(0.0, np.pi, tries)
    iy, ix = cy.astype(np.intp), cx.astype(np.intp)
    # The weighted gap grows at most 2 px per px away from a membrane (a little more where the
    # warp compresses): a blob that clears this stays inside its cell.
    clear = gap[iy, ix] > membrane_width[iy, ix] + 2.6 * major + 3.0
    j = np.flatnonzero(clear)[:n]
    # All blobs at once, each in a window of the largest blob's size, summed by bincount into an
    # image padded by that window so no index needs clipping.
    r = int(np.ceil(major.max(initial=0.0))) + 3
    off = np.arange(-r, r + 1)
    ly = iy[j, None, None] + off[None, :, None]
    lx = ix[j, None, None] + off[None, None, :]
    cos, sin = np.cos(angle[j])[:, None, None], np.sin(angle[j])[:, None, None]
    dy, dx = ly - cy[j, None, None], lx - cx[j, None, None]
    u = (dx * cos + dy * sin) / major[j, None, None]
    v = (dy * cos - dx * sin) / minor[j, None, None]
    q = np.sqrt(u**2 + v**2)
    profile = np.where(ring[j, None, None], np.exp(-(((q - 1.0) / 0.35) ** 2)), 1.0 / (1.0 + q**8))
    flat = (ly + r) * (w + 2 * r) + (lx + r)
    dark = np.bincount(
        np.broadcast_to(flat, profile.shape).ravel(),
        weights=(depth[j, None, None] * profile).ravel(),
        minlength=(h + 2 * r) * (w + 2 * r),
    )
    dark = dark.reshape(h + 2 * r, w + 2 * r)[r : r + h, r : r + w]
    dark = np.minimum(dark, 90.0).astype(np.float32)  # overlaps add, but not without bound
    return dark


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Unit-variance random field smooth over `scale` px: cubic B-spline through white noise.

    Each pixel mixes 4 x 4 knots, applied separably as gathers: no FFT, no wide convolution and
    no BLAS call (whose thread wake-ups cost more than the arithmetic here).
    """
    first_y, wy = _bspline_weights(shape[0], scale)
    first_x, wx = _bspline_weights(shape[1], scale)
    knots = rng.standard_normal((first_y[-1] + 4, first_x[-1] + 4)).astype(np.float32)
    rows = sum(wy[:, k, None] * knots[first_y + k] for k in range(4))
    field = sum(wx[None, :, k] * rows[:, first_x + k] for k in range(4))
    # Unit variance everywhere, also between knots, where the weights spread out.
    return field / np.outer(np.linalg.norm(wy, axis=1), np.linalg.norm(wx, axis=1))


def _bspline_weights(n: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """First knot (n,) and weights (n, 4) of the cubic B-spline with knots every `step` px."""
    pos = np.arange(n) / step
    first = np.floor(pos).astype(np.intp)
    t = (pos - first).astype(np.float32)
    weights = np.stack(
        [(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], axis=1
    )
    return first, weights / 6.0


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflected edges: the microscope's point spread."""
    radius = max(1, int(3.0 * sigma + 0.5))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    for axis in (0, 1):
        padded = np.pad(
            image, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], "reflect"
        )
        n = image.shape[axis]
        image = sum(tap * padded.take(np.arange(i, i + n), axis=axis) for i, tap in enumerate(taps))
    return image
