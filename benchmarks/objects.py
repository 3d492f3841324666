"""Per-object scores of a segmentation: was each labelled object found, and what did the model
mark that is not there (issue 31).

On small, rare objects (surface defects covering ~0.5% of the pixels) the pixel Dice hides what
a production line asks first: was the defect flagged at all? Objects here are the 8-connected
components of the foreground (class > 0; with several foreground classes, the components of
each class, pooled), in the labels and in the prediction:

- A labelled object counts as **found** when predicted foreground covers at least one of its
  pixels. A line operator needs the defect flagged; how well its outline was drawn is what the
  pixel Dice (and the per-object Dice below) already score, so finding asks for no more.
- A **false** object is a predicted component that touches no labelled pixel.
- Each labelled object's **Dice** is against the union of the predicted components that overlap
  it (0 when missed): one predicted blob spanning two defects finds both, and its extent beyond
  each lowers each one's Dice.
- Objects are binned by their equivalent diameter sqrt(4 * area / pi) in px (`BINS`): the
  smallest defects are the ones a model loses first, and a pooled recall hides that.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from scipy import ndimage

from benchmarks.schema import ObjectScores
from runtime.typed_json import from_json

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # diagonal neighbours join: a thin scratch is one
BIN_EDGES = (4.0, 8.0, 16.0, 32.0)  # equivalent diameters in px between the bins
BINS = ("<4", "4-8", "8-16", "16-32", ">=32")


def equivalent_diameter(area: float) -> float:
    """The diameter of a disc of this area, in px."""
    return math.sqrt(4.0 * area / math.pi)


def size_bin(area: float) -> int:
    """The index into `BINS` of an object of this area (a lower edge belongs to its bin)."""
    return int(np.searchsorted(BIN_EDGES, equivalent_diameter(area), side="right"))


@dataclasses.dataclass(frozen=True)
class LabelledObject:
    """One labelled component of one class, and how the prediction met it."""

    area: int  # px
    found: bool  # predicted foreground covers at least one of its pixels
    dice: float  # against the union of the predicted components that overlap it; 0 if missed
    cls: int = 1  # its class


@dataclasses.dataclass(frozen=True)
class ObjectCounts:
    """One image's object counts, or many images' summed with `+`: every field adds up, so
    recall is pooled (found / labelled over all images), defined even where some images have
    no objects at all."""

    images: int = 0
    labelled: int = 0  # labelled objects
    found: int = 0
    false: int = 0  # predicted components that touch no labelled pixel
    labelled_images: int = 0  # images with at least one labelled object
    blank_images: int = 0  # of those, the ones whose prediction has no foreground at all
    # Per size bin (`BINS`): labelled objects, found ones, and the sum of their Dice.
    bin_labelled: tuple[int, ...] = (0,) * len(BINS)
    bin_found: tuple[int, ...] = (0,) * len(BINS)
    bin_dice: tuple[float, ...] = (0.0,) * len(BINS)

    def __add__(self, other: ObjectCounts) -> ObjectCounts:
        if not isinstance(other, ObjectCounts):
            return NotImplemented
        return ObjectCounts(
            **{
                f.name: _add(getattr(self, f.name), getattr(other, f.name))
                for f in dataclasses.fields(self)
            }
        )


def _add(a: Any, b: Any) -> Any:
    """A count's sum, or a per-bin tuple's, bin by bin."""
    return tuple(x + y for x, y in zip(a, b, strict=True)) if isinstance(a, tuple) else a + b


@dataclasses.dataclass(frozen=True)
class ImageObjects:
    """What `match_objects` found on one image: every labelled object, and the false ones."""

    labelled: tuple[LabelledObject, ...]
    false: int  # predicted components that touch no labelled pixel
    predicted: int  # predicted components, false ones included
    blank: bool  # the prediction has no foreground at all

    def counts(self) -> ObjectCounts:
        bins = [size_bin(o.area) for o in self.labelled]
        return ObjectCounts(
            images=1,
            labelled=len(self.labelled),
            found=sum(o.found for o in self.labelled),
            false=self.false,
            labelled_images=int(bool(self.labelled)),
            blank_images=int(bool(self.labelled) and self.blank),
            bin_labelled=tuple(bins.count(b) for b in range(len(BINS))),
            bin_found=tuple(
                sum(o.found for o, b in zip(self.labelled, bins, strict=True) if b == k)
                for k in range(len(BINS))
            ),
            bin_dice=tuple(
                float(sum(o.dice for o, b in zip(self.labelled, bins, strict=True) if b == k))
                for k in range(len(BINS))
            ),
        )


def _planes(
    pred: np.ndarray, true: np.ndarray, classes: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(class, predicted, labelled) foreground planes: class > 0 for a binary model, else each
    foreground class on its own (a defect of one kind is not found by a mark of another)."""
    if classes <= 2:
        yield 1, pred > 0, true > 0
        return
    for c in range(1, classes):
        yield c, pred == c, true == c


def _match_plane(
    pred: np.ndarray, true: np.ndarray, cls: int
) -> tuple[list[LabelledObject], int, int]:
    """Labelled objects, false components and predicted components of one boolean plane."""
    true_ids, n_true = ndimage.label(true, EIGHT_CONNECTED)
    pred_ids, n_pred = ndimage.label(pred, EIGHT_CONNECTED)
    true_area = np.bincount(true_ids.ravel(), minlength=n_true + 1)
    pred_area = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)
    both = (true_ids > 0) & (pred_ids > 0)
    # Every overlapping (labelled, predicted) pair once: pixels are counted per pair below.
    pairs = np.unique(true_ids[both].astype(np.int64) * (n_pred + 1) + pred_ids[both])
    t, p = np.divmod(pairs, n_pred + 1)
    # A labelled object's predicted pixels all belong to components that overlap it: they are
    # its intersection with their union, whose area is the sum of theirs (components are
    # disjoint).
    inter = np.bincount(true_ids[both], minlength=n_true + 1)
    union = np.bincount(t, weights=pred_area[p], minlength=n_true + 1)
    objects = [
        LabelledObject(
            area=int(true_area[i]),
            found=bool(inter[i] > 0),
            dice=float(2.0 * inter[i] / (true_area[i] + union[i])),
            cls=cls,
        )
        for i in range(1, n_true + 1)
    ]
    touched = np.unique(p).size  # predicted components that overlap some labelled object
    return objects, n_pred - touched, n_pred


def match_objects(pred: np.ndarray, true: np.ndarray, classes: int = 1) -> ImageObjects:
    """Every labelled object of one image, found or not, and the predicted components that touch
    no labelled pixel. `pred` and `true` are (H, W) class-index masks; `classes` as the model's
    (1 for a sigmoid model)."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(
            f"masks must be two (H, W) arrays of one shape: {pred.shape}, {true.shape}"
        )
    labelled: list[LabelledObject] = []
    false = predicted = 0
    for cls, p, t in _planes(pred, true, classes):
        objects, plane_false, plane_predicted = _match_plane(p, t, cls)
        labelled += objects
        false += plane_false
        predicted += plane_predicted
    return ImageObjects(tuple(labelled), false, predicted, blank=not (pred > 0).any())


def object_counts(pred: np.ndarray, true: np.ndarray, classes: int = 1) -> ObjectCounts:
    """`match_objects`' counts of one image, to sum over many."""
    return match_objects(pred, true, classes).counts()


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None  # None: nothing to divide by (no objects, no images)


def summarize(counts: Iterable[ObjectCounts]) -> dict[str, Any]:
    """Many images' counts as the reports show them (`benchmarks.schema.ObjectScores` reads it):
    pooled object recall, false components per image, the images that got no foreground at all,
    and per size bin that has objects its count, recall and mean object Dice."""
    total = sum(counts, ObjectCounts())
    bins = zip(BINS, total.bin_labelled, total.bin_found, total.bin_dice, strict=True)
    return {
        "images": total.images,
        "labelled": total.labelled,
        "found": total.found,
        "recall": _ratio(total.found, total.labelled),
        "false": total.false,
        "false_per_image": _ratio(total.false, total.images),
        "labelled_images": total.labelled_images,
        "blank_images": total.blank_images,
        "bins": [
            {"bin": name, "count": n, "found": f, "recall": f / n, "mean_dice": d / n}
            for name, n, f, d in bins
            if n
        ],
    }


def object_scores(counts: Iterable[ObjectCounts]) -> ObjectScores:
    """`summarize`, typed as the benchmark report holds it."""
    return from_json(ObjectScores, summarize(counts), "objects")


def score_masks(
    masks: Iterable[np.ndarray], labels: Iterable[np.ndarray], classes: int = 1
) -> ObjectScores:
    """Per-object scores of predicted masks against their labels, image by image."""
    return object_scores(object_counts(m, t, classes) for m, t in zip(masks, labels, strict=True))
