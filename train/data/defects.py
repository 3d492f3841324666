"""Synthetic surface-defect images: small, rare scratches, pits and cracks on a textured tile.

An openly usable stand-in for industrial defect sets such as the magnetic-tile one, where every
image has its own size and the defects cover well under 1% of the pixels: a model that learns
only the background still scores 99% pixel accuracy, and a fixed normalization meets images
whose brightness and contrast differ a lot. Each image has 0 to 3 defects (about a fifth has
none) on a grainy, machined-looking surface with an uneven illumination; dark and bright grains
and soft stains of defect-like contrast are not defects, so a grey-level threshold cannot
segment them, while the defects' shapes (a filled pit a few pixels across, a thin line tens
of pixels long) can be learnt. Only numpy is used, like the EM generator.

`python -m train.data.defects --out DIR` writes a set as DIR/image and DIR/label PNGs (labels
0/255), the folder layout `python -m train --data` reads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from runtime.errors import UserError
from runtime.io import check_out_folder
from train.data.synthetic import _as_int, _blur, _check_count, _check_seed, _check_size
from train.data.synthetic import _smooth_field as _field

_REFERENCE = 256.0  # lengths below are in pixels of a size-256 set; other sizes scale them
_NONE_SHARE = 0.2  # images without any defect
_CONTRAST = (20.0, 60.0)  # grey levels of a defect against its surroundings, before the blur
# Sizes at 256 px; larger than the first guess (radius 2-7, lines 15-90 px), which gave
# a median defect share of 0.16%, a third of a magnetic-tile image's.
_PIT_RADIUS = (3.0, 8.0)
_SCRATCH_LENGTH = (30.0, 120.0)
_SCRATCH_WIDTH = (1.5, 3.5)
_CRACK_LENGTH = (40.0, 120.0)
_CRACK_WIDTH = (1.5, 3.0)
_KINDS = ("pits", "scratch", "crack")
_KIND_ODDS = (0.4, 0.35, 0.25)
_STEP = 0.5  # px between the sampled points of a line defect


def generate_defects(count: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generates `count` textured surface images of several sizes with their defect masks.

    Image i is drawn from its own generator seeded with (seed, i), so it does not depend on
    `count`: asking for more images extends a dataset instead of reshuffling it.

    Args:
        count: Number of images, at least 1.
        size: The typical side, at least 16: each image's height and width are drawn
            independently from [max(16, size / 2), 2 * size], and the defects, grains and
            texture scale with size / 256 (at 256: pits of radius 3-8 px, scratches and cracks
            1.5-3.5 px wide and 30-120 px long).
        seed: Non-negative seed; the same (count, size, seed) always gives the same arrays.

    Returns:
        (image, mask) pairs: image uint8 (H, W) grey, mask uint8 (H, W), 1 = defect.

    Raises:
        ValueError: If an argument is out of range.
    """
    return [(image, mask) for image, mask, _ in _generate(count, size, seed)]


def _generate(count: int, size: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(image, mask, number of defects) per image, drawn one at a time as they are asked for;
    the arguments are checked at once."""
    n, size, seed = _check_count(count), _check_side(size), _check_seed(seed)
    return (_render(np.random.default_rng([seed, i]), size) for i in range(n))


def _check_side(size: int) -> int:
    side = _as_int(size, "size", "256")  # a (height, width) pair is refused here
    _check_size(side)
    return side


def _render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One image, mask and defect count; every random choice comes from `rng`, in a fixed order."""
    low = max(16, (size + 1) // 2)
    # Log-uniform sides: as many images below `size` as above, and every aspect ratio.
    sides = np.rint(np.exp(rng.uniform(np.log(low), np.log(2 * size), 2)))
    height, width = (int(side) for side in sides)
    scale = size / _REFERENCE
    shape = (height, width)
    surface = _surface(rng, shape, scale)
    image = np.zeros(shape, np.float32)
    mask = np.zeros(shape, bool)
    n = _defect_count(rng, height * width / size**2)
    for kind in rng.choice(len(_KINDS), n, p=_KIND_ODDS):
        draw = (_pits, _scratch, _crack)[kind]
        draw(rng, image, mask, scale)
    image += surface
    illumination = _illumination(rng, shape, scale)
    mean = rng.uniform(60.0, 190.0)
    image = _blur((mean + image) * illumination, rng.uniform(0.4, 0.9))
    image += rng.normal(0.0, rng.uniform(2.0, 5.0), shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, mask.astype(np.uint8), n


def _defect_count(rng: np.random.Generator, area_ratio: float) -> int:
    """0 to 3 defects; a larger image (area / size**2 from 1/4 to 4) tends to have more."""
    if rng.random() < _NONE_SHARE:
        return 0
    more = np.clip(0.7 + 0.2 * np.log2(area_ratio), 0.1, 0.9)
    return 1 + int(rng.binomial(2, more))


def _surface(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean texture: grain at two scales, machining marks, mottling, grains and stains.

    Its contrast varies about threefold between images; the grains and stains reach a
    defect's contrast, so intensity alone does not tell a defect.
    """
    gain = rng.uniform(0.5, 1.5)
    fine = _blur(rng.standard_normal(shape, np.float32), max(0.5, 0.6 * scale))
    texture = rng.uniform(3.0, 6.0) / fine.std() * fine
    texture += rng.uniform(2.0, 5.0) * _field(rng, shape, rng.uniform(3.0, 6.0) * scale)
    texture += rng.uniform(2.0, 6.0) * _field(rng, shape, rng.uniform(25.0, 60.0) * scale)
    texture += rng.uniform(0.0, 4.0) * _marks(rng, shape, scale)
    area = shape[0] * shape[1] / (_REFERENCE * scale) ** 2
    # Grains: sharp specks no wider than the smallest pit, dark or bright.
    texture += _spots(
        rng, shape, rng.poisson(area * rng.uniform(100.0, 300.0)), (0.6, 1.6), scale, 20.0, 60.0, 4
    )
    # Stains: soft blobs of a pit's size, no sharp edge.
    texture += _spots(
        rng, shape, rng.poisson(area * rng.uniform(10.0, 30.0)), (3.0, 10.0), scale, 15.0, 45.0, 2
    )
    return gain * texture


def _marks(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Unit-variance parallel machining marks at a random angle, gently bent."""
    h, w = shape
    angle = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    u = yy * np.cos(angle) + xx * np.sin(angle)
    u += rng.uniform(1.0, 4.0) * scale * _field(rng, shape, 80.0 * scale)
    u -= u.min()
    profile = _field(rng, (int(u.max()) + 2, 1), rng.uniform(1.0, 2.5) * scale)[:, 0]
    first = u.astype(np.intp)
    frac = u - first
    return (1.0 - frac) * profile[first] + frac * profile[first + 1]


def _spots(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n: int,
    radius: tuple[float, float],
    scale: float,
    low: float,
    high: float,
    power: int,
) -> np.ndarray:
    """`n` round spots, 70% dark, of profile 1 / (1 + (d / r)**power), summed by bincount."""
    h, w = shape
    r = np.maximum(rng.uniform(*radius, n) * scale, 0.5)
    amplitude = rng.uniform(low, high, n) * np.where(rng.random(n) < 0.7, -1.0, 1.0)
    cy, cx = rng.uniform(0, h, n), rng.uniform(0, w, n)
    pad = int(np.ceil(3.0 * r.max(initial=0.5)))
    off = np.arange(-pad, pad + 1)
    ly = cy.astype(np.intp)[:, None, None] + off[None, :, None]
    lx = cx.astype(np.intp)[:, None, None] + off[None, None, :]
    q = np.hypot(ly - cy[:, None, None], lx - cx[:, None, None]) / r[:, None, None]
    profile = amplitude[:, None, None] / (1.0 + q**power)
    flat = (ly + pad) * (w + 2 * pad) + (lx + pad)
    total = np.bincount(
        np.broadcast_to(flat, profile.shape).ravel(),
        weights=profile.ravel(),
        minlength=(h + 2 * pad) * (w + 2 * pad),
    )
    return total.reshape(h + 2 * pad, w + 2 * pad)[pad : pad + h, pad : pad + w].astype(np.float32)


def _illumination(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A smooth multiplicative gradient: a linear ramp at a random angle and a broad swell."""
    h, w = shape
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ramp = ((yy - h / 2) * np.cos(angle) + (xx - w / 2) * np.sin(angle)) / max(h, w)
    swell = _field(rng, shape, 150.0 * scale)
    return 1.0 + rng.uniform(0.0, 0.4) * ramp + rng.uniform(0.02, 0.1) * swell


def _pits(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, scale: float) -> None:
    """A blowhole: 1 to 4 dark, slightly irregular filled pits close together, some rimmed."""
    h, w = image.shape
    n = 1 + int(rng.binomial(3, 0.4))
    centre = np.array([rng.uniform(0, h), rng.uniform(0, w)])
    for k in range(n):
        y, x = centre if k == 0 else centre + rng.normal(0.0, 8.0 * scale, 2)
        r = max(1.2, rng.uniform(*_PIT_RADIUS) * scale)
        depth = rng.uniform(*_CONTRAST)
        rim = rng.uniform(0.25, 0.5) * depth if rng.random() < 0.4 else 0.0
        wobble = rng.uniform(0.0, 0.15, 2)
        phase = rng.uniform(0.0, 2.0 * np.pi, 2)
        box = _box(image.shape, y, x, 1.6 * r + 2)
        if box is None:
            continue
        dy, dx = _offsets(box, y, x)
        theta = np.arctan2(dy, dx)
        bumps = (
            1.0
            + wobble[0] * np.sin(2 * theta + phase[0])
            + wobble[1] * np.sin(3 * theta + phase[1])
        )
        q = np.hypot(dy, dx) / (r * bumps)
        image[box] += rim * np.exp(-(((q - 1.25) / 0.2) ** 2)) - depth / (1.0 + q**6)
        mask[box] |= q < 1.0


def _scratch(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, scale: float) -> None:
    """A thin smoothly curved line, tapered at its ends, dark or (a third of them) bright."""
    h, w = image.shape
    length = rng.uniform(*_SCRATCH_LENGTH) * scale
    t = np.arange(0.0, length + _STEP, _STEP)
    bend = rng.normal(0.0, 1.0 / (200.0 * scale)), rng.normal(0.0, 1.0 / (100.0 * scale) ** 2)
    heading = rng.uniform(0.0, 2.0 * np.pi) + bend[0] * t + 0.5 * bend[1] * t**2
    y = rng.uniform(0, h) + np.cumsum(np.sin(heading)) * _STEP
    x = rng.uniform(0, w) + np.cumsum(np.cos(heading)) * _STEP
    width = max(1.0, rng.uniform(*_SCRATCH_WIDTH) * scale)
    taper = np.sqrt(np.clip(np.minimum(t, length - t) / (0.2 * length), 0.3, 1.0))
    sign = 1.0 if rng.random() < 0.35 else -1.0
    _line(image, mask, y, x, 0.5 * width * taper, sign * rng.uniform(*_CONTRAST))


def _crack(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, scale: float) -> None:
    """A jagged dark line of short straight runs, with up to two branches."""
    h, w = image.shape
    length = rng.uniform(*_CRACK_LENGTH) * scale
    y, x = _jagged(
        rng, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, 2 * np.pi), length, scale
    )
    parts = [(y, x)]
    for _ in range(int(rng.integers(0, 3))):
        at = int(rng.integers(0, len(y)))
        turn = rng.uniform(0.5, 1.2) * rng.choice([-1.0, 1.0])
        heading = np.arctan2(*np.diff(np.stack([y, x])[:, max(0, at - 4) : at + 4]).sum(axis=1))
        parts.append(
            _jagged(rng, y[at], x[at], heading + turn, rng.uniform(0.3, 0.6) * length, scale)
        )
    width = max(1.0, rng.uniform(*_CRACK_WIDTH) * scale)
    depth = rng.uniform(*_CONTRAST)
    for py, px in parts:
        half = 0.5 * width * rng.uniform(0.7, 1.0, len(py)) ** 0.5
        _line(image, mask, py, px, half, -depth)


def _jagged(
    rng: np.random.Generator, y0: float, x0: float, heading: float, length: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points every _STEP px along runs of 2-6 px whose heading jumps and drifts back."""
    runs = max(2, int(length / (4.0 * scale)) + 1)
    step = rng.uniform(2.0, 6.0, runs) * scale
    turns = heading + np.cumsum(rng.normal(0.0, 0.5, runs)) * 0.5 + rng.normal(0.0, 0.45, runs)
    corners_y = np.concatenate([[y0], y0 + np.cumsum(step * np.sin(turns))])
    corners_x = np.concatenate([[x0], x0 + np.cumsum(step * np.cos(turns))])
    along = np.concatenate([[0.0], np.cumsum(step)])
    t = np.arange(0.0, min(length, along[-1]) + _STEP, _STEP)
    return np.interp(t, along, corners_y), np.interp(t, along, corners_x)


def _line(
    image: np.ndarray,
    mask: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    half_width: np.ndarray,
    contrast: float,
) -> None:
    """Draws the line through points (y, x): its mask is the pixels nearer its centre line
    than the local half width, where the profile is at half of `contrast`."""
    reach = float(half_width.max()) * 2.5 + 2
    top, bottom = int(max(0, y.min() - reach)), int(min(image.shape[0], y.max() + reach + 1))
    left, right = int(max(0, x.min() - reach)), int(min(image.shape[1], x.max() + reach + 1))
    if top >= bottom or left >= right:
        return
    box = np.s_[top:bottom, left:right]
    py, px = np.mgrid[top:bottom, left:right].astype(np.float32)
    best = np.full(py.shape, np.inf, np.float32)
    half = np.ones(py.shape, np.float32)
    for start in range(0, len(y), 64):  # a few MB at a time
        chunk = slice(start, start + 64)
        d = np.hypot(py[..., None] - y[chunk], px[..., None] - x[chunk])
        nearest = d.argmin(axis=-1)
        d = np.take_along_axis(d, nearest[..., None], axis=-1)[..., 0]
        closer = d < best
        best = np.where(closer, d, best)
        half = np.where(closer, half_width[chunk][nearest], half)
    q = best / np.maximum(half, 0.55)  # at least one pixel wide: the mask stays 8-connected
    image[box] += contrast / (1.0 + q**4)
    mask[box] |= q < 1.0


def _box(shape: tuple[int, int], y: float, x: float, reach: float) -> tuple[slice, slice] | None:
    top, bottom = int(max(0, y - reach)), int(min(shape[0], y + reach + 1))
    left, right = int(max(0, x - reach)), int(min(shape[1], x + reach + 1))
    return None if top >= bottom or left >= right else np.s_[top:bottom, left:right]


def _offsets(box: tuple[slice, slice], y: float, x: float) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = box
    py, px = np.mgrid[rows, cols].astype(np.float32)
    return py - y, px - x


def write_folder(out: Path, count: int, size: int, seed: int, overwrite: bool = False) -> str:
    """Writes the set as out/image/defects-{i}.png and out/label/defects-{i}.png (labels 0/255).

    Returns a one-line summary: images, sizes, median and overall defect share, defects.

    Raises:
        UserError: a bad argument, or `out` already holds files and not `overwrite`.
    """
    from PIL import Image  # here: the generator itself needs numpy only

    try:
        images = _generate(count, size, seed)
    except ValueError as error:
        raise UserError(str(error)) from None
    check_out_folder(out, overwrite)
    folders = out / "image", out / "label"
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("defects-*.png"):  # from an earlier, larger set
            stale.unlink()
    shares, heights, widths, defects, pixels, covered = [], [], [], 0, 0, 0
    for i, (image, mask, found) in enumerate(images):
        Image.fromarray(image).save(folders[0] / f"defects-{i}.png")
        Image.fromarray(mask * np.uint8(255)).save(folders[1] / f"defects-{i}.png")
        shares.append(float(mask.mean()))
        heights.append(image.shape[0])
        widths.append(image.shape[1])
        defects += found
        pixels += mask.size
        covered += int(mask.sum())
    return (
        f"{len(shares)} images in {out} ({min(heights)}-{max(heights)} px high, {min(widths)}-"
        f"{max(widths)} px wide): defects cover {np.median(shares):.2%} of the median image, "
        f"{covered / pixels:.2%} of all pixels; {defects} defects, "
        f"{sum(s == 0 for s in shares)} images without any"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train.data.defects",
        description="Write a synthetic surface-defect data set (small, rare scratches, pits and "
        "cracks on a textured tile; images of several sizes) as a folder that `python -m train "
        "--data` reads: DIR/image/defects-{i}.png and DIR/label/defects-{i}.png (0/255).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument("--count", type=int, default=200, help="number of images")
    parser.add_argument(
        "--size", type=int, default=256, help="typical side: sides range from size/2 to 2*size"
    )
    parser.add_argument("--seed", type=int, default=0, help="image i depends on (seed, i) only")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that already holds files (earlier defects-*.png are removed)",
    )
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    try:
        summary = write_folder(args.out, args.count, args.size, args.seed, args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        print(
            f"error: cannot write to {args.out} ({error.strerror}): choose another --out",
            file=sys.stderr,
        )
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
