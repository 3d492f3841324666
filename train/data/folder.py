"""A folder of images and masks: `image/` with `label/` (or `labels/`, `masks/`, `mask/`).

Files pair by name; a multi-page TIFF stack of images pairs with a stack of masks of the same
page count, and each page is a sample, as a folder of slices would be.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from runtime.errors import UserError
from runtime.image_io import check_like_first_page, page_count, read_page
from train.config import Foreground

# Lossless formats only: JPEG would smear the class values of masks.
DATA_SUFFIXES = (".png", ".tif", ".tiff")
IMAGE_DIRS = ("image", "images")
MASK_DIRS = ("label", "labels", "masks", "mask")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One raw image (H, W[, C], uint8/uint16/float) and its class-index mask (H, W, uint8)."""

    name: str
    image: np.ndarray
    mask: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape[:2]


@dataclasses.dataclass(frozen=True, eq=False)
class FileSample:
    """A sample of a folder, read from disk each time it is used: a data set of any size then
    fits in memory (the training pipeline decodes in parallel and may cache on disk)."""

    name: str
    image_path: Path
    mask_path: Path
    page: int
    pages: int  # of the files: 1, or a TIFF stack's page count
    shape: tuple[int, int]
    table: np.ndarray  # mask value -> class index
    mask_threshold: float | None

    @property
    def image(self) -> np.ndarray:
        return read_page(self.image_path, self.page, self.pages)

    @property
    def mask(self) -> np.ndarray:
        raw = read_page(self.mask_path, self.page, self.pages, palette_indices=True)
        plane = _mask_plane(raw, self.mask_path)
        return self.table[_binarized(plane, self.mask_threshold)]


def _binarized(mask: np.ndarray, threshold: float | None) -> np.ndarray:
    return mask if threshold is None else (mask >= threshold).astype(np.uint8)


def natural_key(name: str) -> list[int | str]:
    """Sorts "2" before "10", so slices of a stack keep their order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _files(folder: Path) -> dict[str, Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES]
    return {p.stem: p for p in files}


def _subfolder(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise UserError(f"{root} has no {what} folder ({' or '.join(names)}): put the {what}s there")


def _pair_files(root: Path) -> list[tuple[str, Path, Path]]:
    image_dir = _subfolder(root, IMAGE_DIRS, "image")
    mask_dir = _subfolder(root, MASK_DIRS, "mask")
    images, masks = _files(image_dir), _files(mask_dir)
    if not images:
        raise UserError(f"{image_dir} holds no PNG or TIFF images: add some")
    for missing, have, where in ((images, masks, mask_dir), (masks, images, image_dir)):
        unpaired = sorted(set(missing) - set(have), key=natural_key)
        if unpaired:
            shown = ", ".join(missing[s].name for s in unpaired[:3])
            raise UserError(
                f"{len(unpaired)} file(s) without a partner of the same name in {where}: {shown}"
                f"{' ...' if len(unpaired) > 3 else ''}: add the partners or remove these"
            )
    stems = sorted(images, key=natural_key)
    return [(stem, images[stem], masks[stem]) for stem in stems]


def _mask_plane(mask: np.ndarray, path: Path | str) -> np.ndarray:
    """A mask as one plane: grey, grey with an opaque alpha, or colour with equal channels."""
    if mask.ndim == 3 and mask.shape[-1] in (2, 4):  # LA or RGBA: the last channel is alpha
        alpha, mask = mask[..., -1], mask[..., :-1]
        opaque = np.iinfo(alpha.dtype).max if np.issubdtype(alpha.dtype, np.integer) else 1.0
        if (alpha != opaque).any():
            share = float(np.mean(alpha != opaque))
            raise UserError(
                f"mask {path} has transparent pixels ({share:.1%} not fully opaque): masks "
                "cannot leave pixels unlabelled; save it without alpha, or opaque"
            )
    if mask.ndim == 3:
        if not all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, mask.shape[-1])):
            raise UserError(f"mask {path} is a colour image: save class indices as a grey image")
        mask = mask[..., 0]
    if not np.issubdtype(mask.dtype, np.integer):
        raise UserError(f"mask {path} holds {mask.dtype} values: save integer class indices")
    return mask


def _near_binary(counts: dict[int, int]) -> tuple[int, int, float] | None:
    """The two dominant values and their share of the pixels, when they hold nearly all of them
    and the others lie between them (a binary mask that was resized or anti-aliased)."""
    values = np.array(sorted(counts))
    tallies = np.array([counts[v] for v in values])
    top = np.argsort(tallies)[-2:]
    share = float(tallies[top].sum() / tallies.sum())
    if share < 0.9:
        return None
    low, high = sorted(int(values[i]) for i in top)
    if values.min() < low or values.max() > high:
        return None  # values outside the two are classes, not soft edges
    return low, high, share


def _class_lookup(
    counts: dict[int, int], first_seen: dict[int, str], classes: int, foreground: Foreground
) -> dict[int, int]:
    """Maps every mask value in the data set (with its pixel count) to a class index."""
    values = np.array(sorted(counts))
    labels = max(classes, 2)
    if len(values) == 1:
        raise UserError(f"every mask holds the single value {values[0]}: there is nothing to learn")
    if len(values) == 2 and labels == 2:  # a binary mask with any two values
        low, high = int(values[0]), int(values[1])
        fg = high if foreground is Foreground.BRIGHT else low
        return {low: int(low == fg), high: int(high == fg)}
    near = _near_binary(counts) if labels == 2 else None
    if near:
        low, high, share = near
        raise UserError(
            f"the masks look binary with soft edges: {low} and {high} hold {share:.1%} of the "
            f"pixels, {len(values) - 2} other values lie in between: pass --mask-threshold "
            f"{(low + high) / 2:g} to binarize them (or --classes {int(values.max()) + 1} if "
            "the values are classes)"
        )
    if values.max() >= labels:
        path = first_seen[int(next(v for v in values if v >= labels))]
        raise UserError(
            f"mask {path} holds class {int(values.max())} but the model has {classes} class(es) "
            f"(mask values {', '.join(map(str, values[:8]))}): pass --classes "
            f"{int(values.max()) + 1} or fix the masks"
        )
    return {int(v): int(v) for v in values}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageOnlySample:
    """An image without a label, read on demand. Its mask is all background and unused: only
    label-free fine-tuning, which learns the teacher's probabilities, takes these."""

    name: str
    image_path: Path
    page: int
    pages: int
    shape: tuple[int, int]

    @property
    def image(self) -> np.ndarray:
        return read_page(self.image_path, self.page, self.pages)

    @property
    def mask(self) -> np.ndarray:
        return np.zeros(self.shape, np.uint8)


def load_images(root: str | Path) -> list[ImageOnlySample]:
    """Every image page of a folder (or of its image/ subfolder), in natural name order, each
    decoded once now so that a broken file fails here and not during fine-tuning.

    Raises:
        UserError: a missing folder, one without images, or an unreadable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist: give a folder of images")
    inner = [root / name for name in IMAGE_DIRS if (root / name).is_dir()]
    folder = inner[0] if inner else root
    files = sorted(_files(folder).items(), key=lambda item: natural_key(item[0]))
    if not files:
        raise UserError(f"no images ({', '.join(DATA_SUFFIXES)}) in {folder}: add images")
    samples = []
    for stem, path in files:
        pages = page_count(path)
        for page in range(pages):
            shape = read_page(path, page, pages).shape[:2]
            name = stem if pages == 1 else f"{stem}#{page}"
            samples.append(ImageOnlySample(name, path, page, pages, shape))
    return samples


def _entries(root: Path) -> list[tuple[str, Path, Path, int, int]]:
    """(name, image file, mask file, page, pages) for every image page, checked for pairing."""
    entries = []
    for stem, image_path, mask_path in _pair_files(root):
        pages, mask_pages = page_count(image_path), page_count(mask_path)
        if pages == 0 or mask_pages == 0:
            empty = image_path if pages == 0 else mask_path
            raise UserError(f"TIFF stack {empty} has no pages: give a stack with images")
        if pages != mask_pages:
            raise UserError(
                f"image stack {image_path} has {pages} page(s) but its mask stack "
                f"{mask_path} has {mask_pages}: give one mask page per image page"
            )
        for page in range(pages):
            name = stem if pages == 1 else f"{stem}#{page}"
            entries.append((name, image_path, mask_path, page, pages))
    return entries


def load_folder(
    root: str | Path, classes: int, foreground: Foreground, mask_threshold: float | None = None
) -> list[FileSample]:
    """Checks every image/mask pair and returns them, in natural order of their names, as
    samples read on demand.

    Every file is decoded once here, one at a time (memory stays that of one image): a broken
    file fails now, not hours into training, and the mask values of the whole data set decide
    the classes. `mask_threshold` binarizes the masks first (values >= it are the bright
    class), for binary masks whose edges were anti-aliased or resized.

    Raises:
        UserError: a missing or empty folder, unpaired files or stacks, an unreadable image, a
            mask whose size differs from its image, or more mask values than the model has
            classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist: give a folder with image/ and label/")
    counts: dict[int, int] = {}
    first_seen: dict[int, str] = {}
    first_pages: dict[Path, np.ndarray] = {}
    shapes = {}
    entries = _entries(root)
    for name, image_path, mask_path, page, pages in entries:
        image = read_page(image_path, page, pages)
        raw_mask = read_page(mask_path, page, pages, palette_indices=True)
        if pages > 1:
            for array, path in ((image, image_path), (raw_mask, mask_path)):
                check_like_first_page(array, first_pages.setdefault(path, array), path, page)
        where = str(mask_path) if pages == 1 else f"{mask_path} page {page}"
        mask = _binarized(_mask_plane(raw_mask, where), mask_threshold)
        if image.shape[:2] != mask.shape:
            raise UserError(
                f"mask {where} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}: masks must match their images"
            )
        for value, count in zip(*np.unique(mask, return_counts=True), strict=True):
            counts[int(value)] = counts.get(int(value), 0) + int(count)
            first_seen.setdefault(int(value), where)
        shapes[name] = mask.shape
    lookup = _class_lookup(counts, first_seen, classes, foreground)
    table = np.zeros(max(lookup) + 1, dtype=np.uint8)
    for value, index in lookup.items():
        table[value] = index
    return [
        FileSample(name, ip, mp, page, pages, shapes[name], table, mask_threshold)
        for name, ip, mp, page, pages in entries
    ]
