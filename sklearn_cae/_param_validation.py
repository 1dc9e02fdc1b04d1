"""scikit-learn's declarative parameter validation, imported in one place.

``_parameter_constraints``, ``_fit_context`` and ``validate_params`` are how
scikit-learn and imbalanced-learn validate parameters, but they live in private
scikit-learn modules. Every module of this package imports them from here, so a
change of scikit-learn's private API is met in this one file; pyproject.toml pins
the scikit-learn versions they are tested with.
"""

from __future__ import annotations

from sklearn.base import _fit_context as fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Hidden,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    validate_params,
)

__all__ = [
    "HasMethods",
    "Hidden",
    "Interval",
    "InvalidParameterError",
    "Options",
    "StrOptions",
    "fit_context",
    "validate_params",
]
