"""Deploy without Python or torch: a fitted pipeline as one ONNX graph.

:func:`export_onnx` turns a fitted pipeline (a featurizer, then scikit-learn steps)
into one ONNX graph that onnxruntime (C++, C#, Java, Python, ...) runs without torch.
The graph takes images already resized to the featurizer's ``image_size``: ``float32``
on the ``uint8`` scale, not rounded (the default: the featurizer's own input), or
``uint8`` (``input_dtype="uint8"``). :func:`resize_images` does that resize with numpy
and Pillow only (importing this module does not import torch), as the featurizer does
it: see its docstring and docs/persistence.rst.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "export_onnx": "_onnx",
    "ExportError": "_onnx",
    "INPUT_DTYPES": "_runtime",
    "resize_images": "_runtime",
    "read_metadata": "_runtime",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
