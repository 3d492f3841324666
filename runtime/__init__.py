"""On-device inference and the numpy pieces every stage shares. Never imports TensorFlow."""

from runtime.errors import UserError
from runtime.preprocess import Preprocessing, normalize

__all__ = ["Preprocessing", "UserError", "normalize"]
