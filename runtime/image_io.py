"""Reading images into the arrays `normalize` takes; a bad file is a UserError.

Single images go through Pillow; multi-page TIFF stacks (the form EM data usually comes in)
through tifffile, page by page, so that no page is silently dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.errors import UserError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")


def read_image(path: Path, palette_indices: bool = False) -> np.ndarray:
    """Reads an image file as uint8, uint16 or float32, in full (so truncation shows here).

    Args:
        palette_indices: a palette ('P') image gives its indices (what a mask's palette
            colours stand for), not its colours (what an image's do).
    """
    from PIL import Image, UnidentifiedImageError  # here: a caller with arrays never needs it

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P" and not palette_indices:
                img = img.convert("RGB")  # transparency carries no content
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(img, dtype=np.uint16)
            if img.mode == "I":  # 32-bit integer container, 16-bit content in practice
                array = np.array(img)
                if array.min() < 0 or array.max() > 65535:
                    raise UserError(
                        f"{path}: 32-bit integer pixels are not supported: save 8 or 16 bit"
                    )
                return array.astype(np.uint16)
            if img.mode == "1":  # bilevel: black and white, as 8-bit grey
                return np.array(img.convert("L"))
            if img.mode not in ("L", "LA", "RGB", "RGBA", "P", "F"):
                img = img.convert("RGB")
            return np.array(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise UserError(
            f"cannot read {path} ({type(error).__name__}: it is truncated or not an image): "
            "replace or remove it"
        ) from None


def _tiff_pages(path: Path) -> list[np.ndarray] | None:
    """The pages of a multi-page TIFF, or None for a single-page one (Pillow reads those)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) == 1:
                return None
            pages = [page.asarray() for page in tif.pages]
    except (OSError, ValueError, tifffile.TiffFileError) as error:
        raise UserError(
            f"cannot read the TIFF stack {path} ({type(error).__name__}: truncated or not a "
            "TIFF): replace or remove it"
        ) from None
    if not pages:
        raise UserError(f"TIFF stack {path} has no pages: give a stack with images")
    for index, page in enumerate(pages):
        check_like_first_page(page, pages[0], path, index)
    return pages


def check_like_first_page(page: np.ndarray, first: np.ndarray, path: Path, index: int) -> None:
    """Every page of a stack must have page 0's dtype and shape."""
    if (page.dtype, page.shape) != (first.dtype, first.shape):
        raise UserError(
            f"page {index} of TIFF stack {path} is {page.dtype} {page.shape}, page 0 "
            f"{first.dtype} {first.shape}: every page of a stack must match"
        )


def read_pages(path: Path) -> list[np.ndarray]:
    """Every page of an image file: one for PNG and single TIFFs, all of a TIFF stack."""
    pages = _tiff_pages(path) if path.suffix.lower() in TIFF_SUFFIXES else None
    return pages if pages is not None else [read_image(path)]


def write_tiff_stack(path: Path, pages: list[np.ndarray]) -> None:
    """A multi-page TIFF, one page per array (written to `path` as given: callers make it
    atomic)."""
    import tifffile

    tifffile.imwrite(
        path, np.stack(pages), photometric="minisblack" if pages[0].ndim == 2 else "rgb"
    )


def page_count(path: Path) -> int:
    """Pages of an image file, without decoding them (1 for anything but a TIFF stack)."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return 1
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.pages)
    except (OSError, ValueError, tifffile.TiffFileError):
        return 1  # not a readable stack: reading it as one image says what is wrong


def read_page(path: Path, index: int, pages: int = 1, palette_indices: bool = False) -> np.ndarray:
    """One page of a file that has `pages` pages: only that page is decoded."""
    if pages == 1:
        return read_image(path, palette_indices)
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages[index].asarray()
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as error:
        raise UserError(
            f"cannot read page {index} of the TIFF stack {path} ({type(error).__name__}: "
            "truncated or not a TIFF): replace or remove it"
        ) from None
