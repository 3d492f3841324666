"""On-device inference and the numpy pieces every stage shares. Never imports TensorFlow.

seg = Segmenter.from_bundle("bundle/")   # precision="auto": the fastest model verified here
result = seg.predict("image.png")   # result.mask, result.probabilities
"""

from runtime.errors import UserError
from runtime.golden import VerificationFailed
from runtime.preprocess import Preprocessing, normalize
from runtime.segmenter import Prediction, Segmenter, overlay

__all__ = [
    "Prediction",
    "Preprocessing",
    "Segmenter",
    "UserError",
    "VerificationFailed",
    "normalize",
    "overlay",
]
