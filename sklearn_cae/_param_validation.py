"""scikit-learn's declarative parameter validation, imported in one place.

``_parameter_constraints``, ``_fit_context`` and ``validate_params`` are how
scikit-learn and imbalanced-learn validate parameters, but they live in private
scikit-learn modules. Every module of this package imports them from here, so a
change of scikit-learn's private API is met in this one file; pyproject.toml pins
the scikit-learn versions they are tested with.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import _fit_context as fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    validate_params,
)

__all__ = [
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "Options",
    "StrOptions",
    "fit_context",
    "is_strict_int",
    "strict_int",
    "validate_params",
]


def is_strict_int(value) -> bool:
    """True for ints and numpy integers, False for bools (``Interval(Integral)`` takes
    ``True`` as 1).

    >>> is_strict_int(3), is_strict_int(True), is_strict_int(3.0)
    (True, False, False)
    """
    return isinstance(value, Integral) and not isinstance(value, bool | np.bool_)


def strict_int(low: int | None = None, high: int | None = None, closed: str = "both"):
    """An ``Interval(Integral, low, high)`` constraint that refuses bools.

    >>> strict_int(1, None, closed="left").is_satisfied_by(True)
    False
    >>> strict_int(1, None, closed="left").is_satisfied_by(2)
    True
    """
    return _StrictIntInterval(Integral, low, high, closed=closed)


class _StrictIntInterval(Interval):
    def is_satisfied_by(self, val) -> bool:
        return not isinstance(val, bool | np.bool_) and super().is_satisfied_by(val)
