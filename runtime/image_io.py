"""Reading images with Pillow into the arrays `normalize` takes; a bad file is a UserError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from runtime.errors import UserError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def read_image(path: Path) -> np.ndarray:
    """Reads an image file as uint8, uint16 or float32, in full (so truncation shows here)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(img, dtype=np.uint16)
            if img.mode == "I":  # 32-bit integer container, 16-bit content in practice
                array = np.array(img)
                if array.min() < 0 or array.max() > 65535:
                    raise UserError(
                        f"{path}: 32-bit integer pixels are not supported: save 8 or 16 bit"
                    )
                return array.astype(np.uint16)
            if img.mode == "1":
                return np.array(img, dtype=np.uint8)
            if img.mode not in ("L", "LA", "RGB", "RGBA", "P", "F"):
                img = img.convert("RGB")
            return np.array(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise UserError(
            f"cannot read {path} ({type(error).__name__}: it is truncated or not an image): "
            "replace or remove it"
        ) from None
