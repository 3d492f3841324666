"""`python -m runtime.predict BUNDLE INPUT... --out DIR`: segment image files with a bundle.

One mask PNG per image; a multi-page TIFF stack gives a mask stack with the same page count.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.backends import BACKENDS
from runtime.errors import UserError
from runtime.image_io import IMAGE_SUFFIXES, read_pages, write_tiff_stack
from runtime.io import atomic_path
from runtime.segmenter import Segmenter, overlay


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.predict",
        description="Segment images with a bundle's model; writes one mask PNG per image, and "
        "a multi-page mask TIFF per TIFF stack.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bundle", type=Path, help="bundle folder (with manifest.json)")
    parser.add_argument("inputs", type=Path, nargs="+", help="image files or folders of images")
    parser.add_argument("--out", type=Path, required=True, help="folder for the mask PNGs")
    parser.add_argument(
        "--precision",
        default="auto",
        help="which model of the bundle: auto (the fastest this device verifies, chosen once and "
        "cached), int8 (the gated one), fp32, ...",
    )
    parser.add_argument("--backend", default="auto", help=f"auto, {', '.join(BACKENDS)}")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="interpreter threads (default: the interpreter's choice)",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="sigmoid threshold (default: the manifest's)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the model on the bundle's golden tiles first (exit 1 if it fails here)",
    )
    parser.add_argument(
        "--overlay", action="store_true", help="also write the image with the mask tinted on it"
    )
    return parser.parse_args(argv)


def collect_images(inputs: list[Path]) -> list[Path]:
    """Files as given, and the image files of folders in name order; nothing is a UserError."""
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"input {path} does not exist: give image files or folders")
    if not found:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return found


def mask_pixels(mask: np.ndarray, classes: int) -> np.ndarray:
    """Binary masks as 0/255 so they can be looked at; class-index masks as they are."""
    return (mask * 255).astype(np.uint8) if classes == 1 else mask


def _save(pages: list[np.ndarray], path: Path) -> Path:
    """One page as PNG, a stack as a multi-page TIFF of the same page count; atomically."""
    target = path.with_suffix(".png" if len(pages) == 1 else ".tif")
    with atomic_path(target) as tmp:
        if len(pages) == 1:
            Image.fromarray(pages[0]).save(tmp, format="PNG")
        else:
            write_tiff_stack(tmp, pages)
    return target


def main(args: argparse.Namespace) -> int:
    try:
        images = collect_images(args.inputs)
        segmenter = Segmenter.from_bundle(
            args.bundle, args.precision, args.backend, args.threads, verify=args.verify
        )
        args.out.mkdir(parents=True, exist_ok=True)
        progress = _progress(images)
        for path in progress:
            pages = read_pages(path)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results = [segmenter.predict(page, args.threshold) for page in pages]
            for warning in {str(w.message) for w in caught}:
                print(f"{path.name}: {warning}", file=sys.stderr)
            classes = segmenter.manifest.classes
            _save([mask_pixels(r.mask, classes) for r in results], args.out / f"{path.stem}_mask")
            if args.overlay:
                tinted = [overlay(p, r.mask) for p, r in zip(pages, results, strict=True)]
                _save(tinted, args.out / f"{path.stem}_overlay")
            ms = sum(r.seconds for r in results) * 1000
            stack = f" ({len(pages)} pages)" if len(pages) > 1 else ""
            _report(progress, f"{path.name}{stack}: {ms:.0f} ms")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        print(
            f"error: cannot write to {args.out} ({error.strerror}): choose another --out",
            file=sys.stderr,
        )
        return 2
    print(f"{len(images)} mask(s) in {args.out}")
    return 0


def _progress(images: list[Path]):
    """A tqdm bar for many files when tqdm is installed; the plain list otherwise."""
    if len(images) < 5:
        return images
    try:
        from tqdm import tqdm
    except ImportError:
        return images
    return tqdm(images, unit="image", file=sys.stderr)


def _report(progress, line: str) -> None:
    if hasattr(progress, "write"):
        progress.write(line, file=sys.stdout)
    else:
        print(line)


def console() -> int:
    """The console script's entry point (pyproject's [project.scripts])."""
    return main(parse_args())


if __name__ == "__main__":
    sys.exit(console())
