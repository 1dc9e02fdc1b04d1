"""sklearn-cae: unsupervised deep transfer features for medical images.

A frozen ImageNet CNN, a convolutional auto-encoder trained without labels on its
feature maps, and the auto-encoder's pooled code as features for any scikit-learn
estimator (Ahn et al., ISBI 2019).

Submodules load lazily, so ``import sklearn_cae`` does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "CAETransferFeaturizer": "featurizer",
    "BackboneFeaturizer": "featurizer",
    "available_layers": "backbones",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
