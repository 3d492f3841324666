"""Data sources: the embedded synthetic generators (EM membranes, surface defects) and folders of
images with masks."""

from __future__ import annotations

import math

from runtime.errors import UserError
from train.config import DataConfig
from train.data.folder import Sample, load_folder

SYNTHETIC = "synthetic"
DEFECTS = "synthetic-defects"  # small, rare defects on texture, images of several sizes

__all__ = ["DEFECTS", "SYNTHETIC", "Sample", "load_samples", "split_samples"]


def load_samples(config: DataConfig, classes: int, seed: int = 0) -> list[Sample]:
    """All samples of the configured source, masks as class indices (1 = membrane for synthetic,
    1 = defect for synthetic-defects)."""
    if config.source == DEFECTS:
        from train.data.defects import generate_defects

        pairs = generate_defects(config.synthetic_count, config.synthetic_size, seed=seed)
        return [Sample(f"defects-{i}", image, mask) for i, (image, mask) in enumerate(pairs)]
    if config.source == SYNTHETIC:
        from train.data.synthetic import generate_em

        images, masks = generate_em(config.synthetic_count, config.synthetic_size, seed=seed)
        return [
            Sample(f"synthetic-{i}", image, mask)
            for i, (image, mask) in enumerate(zip(images, masks, strict=True))
        ]
    return load_folder(config.source, classes, config.foreground, config.mask_threshold)


def split_samples(samples: list[Sample], val_fraction: float) -> tuple[list[Sample], list[Sample]]:
    """The last `val_fraction` of the samples (natural name order) are held out for validation.

    A contiguous tail, not a random draw: neighbouring slices of a stack are nearly the same
    image, and a random split would leak them into validation.
    """
    if len(samples) < 2:
        raise UserError(
            f"{len(samples)} sample(s) cannot be split into training and validation: add images"
        )
    n_val = min(max(1, math.ceil(round(len(samples) * val_fraction, 6))), len(samples) - 1)
    return samples[:-n_val], samples[-n_val:]
