"""The request classifier: an int8 ONNX model scored with onnxruntime, no torch at runtime.

>>> from classifier_onnx import Scorer, render_request
>>> scorer = Scorer.load()
>>> text = render_request([{"role": "user", "content": "What are your store hours?"}])
>>> scorer.score([text])[0].category  # doctest: +SKIP
'simple'

Training, export and evaluation live in ``classifier_onnx.training`` (the ``train`` extra).
"""

from classifier_onnx.features import CATEGORIES, MAX_RENDER_CHARS, render_request
from classifier_onnx.scorer import ClassifierError, ModelNotFound, Score, Scorer, default_model_dir

__all__ = [
    "CATEGORIES",
    "ClassifierError",
    "MAX_RENDER_CHARS",
    "ModelNotFound",
    "Score",
    "Scorer",
    "default_model_dir",
    "render_request",
]
