"""Few labels, many images: one pipeline fitted with ``y == -1`` for unlabelled images.

scikit-learn's semi-supervised convention (:mod:`sklearn.semi_supervised`) marks an
unlabelled image with the label ``-1`` (:data:`UNLABELLED`). A featurizer fitted inside a
:class:`~sklearn.pipeline.Pipeline` then learns from every image, but the classifier after
it receives the same ``y``, and a plain classifier (``SVC``, ``LogisticRegression``)
learns ``-1`` as one more class. This module makes the one-call pipeline work:

* :class:`LabelledOnly` wraps a classifier so that it is fitted on the labelled rows only
  (``classes_`` without ``-1``); its ``score`` ignores unlabelled rows;
* :func:`make_pipeline` is :func:`sklearn.pipeline.make_pipeline` that wraps a final
  classifier in :class:`LabelledOnly` unless it handles ``-1`` itself;
* :func:`labelled_scorer` and :class:`LabelledStratifiedKFold` make ``cross_validate``
  and ``GridSearchCV`` score labelled rows only;
* :func:`unlabelled_mask` says which entries of ``y`` are unlabelled, with ``-1`` among
  numbers, ``"-1"`` among strings, or ``-1`` in an object array of strings;
* :func:`hide_labels`, :func:`few_labels_fold_scorer`, :func:`load_unlabelled` and
  :func:`with_unlabelled`: the few-label protocol and unlabelled images for the command
  line (``sklearn-cae evaluate DATA --labelled-fraction 0.1``, ``--unlabelled``).

A transformer cannot see the step that follows it, so nothing inside a plain
``sklearn.pipeline.Pipeline`` can tell that its final classifier will learn ``-1``.
The safeguards are where that is knowable: :func:`make_pipeline` wraps the classifier,
and :func:`labelled_scorer` refuses to score a model whose ``classes_`` holds ``-1``,
saying how to fix it.
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone, is_classifier
from sklearn.metrics import get_scorer
from sklearn.model_selection import BaseCrossValidator, StratifiedKFold
from sklearn.pipeline import make_pipeline as _sklearn_make_pipeline
from sklearn.semi_supervised import LabelPropagation, LabelSpreading, SelfTrainingClassifier
from sklearn.utils import _safe_indexing
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d

from ._param_validation import Interval, validate_params
from .cae import UNLABELLED

__all__ = [
    "UNLABELLED",
    "LabelledOnly",
    "LabelledStratifiedKFold",
    "few_labels_fold_scorer",
    "hide_labels",
    "labelled_rows",
    "labelled_scorer",
    "load_unlabelled",
    "make_pipeline",
    "unlabelled_mask",
    "with_unlabelled",
]

# Final steps that take y == -1 as "unlabelled" themselves.
_SEMI_SUPERVISED = (LabelPropagation, LabelSpreading, SelfTrainingClassifier)

_HOW_TO_MARK = (
    f"mark unlabelled images with {UNLABELLED} (sklearn_cae.semi_supervised.UNLABELLED): "
    "-1 among integer labels, '-1' among string labels, or -1 in an object array of "
    "strings"
)


# ------------------------------------------------------------------------- labels
def unlabelled_mask(y) -> np.ndarray:
    """Which entries of ``y`` are unlabelled: ``-1``, or ``"-1"`` among strings.

    The labelled entries must be class labels of one kind: numbers, or strings (an
    object array may mix ``-1`` with string labels). ``None`` and NaN are refused with
    a message that says how to mark unlabelled images.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels, :data:`UNLABELLED` for unlabelled images.

    Returns
    -------
    ndarray of bool, shape (n_samples,)

    Raises
    ------
    ValueError
        When ``y`` is not 1-D, holds ``None`` or NaN, or mixes numbers and strings
        among its labelled entries.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cae.semi_supervised import unlabelled_mask
    >>> unlabelled_mask([0, -1, 1]).tolist()
    [False, True, False]
    >>> unlabelled_mask(np.array(["benign", -1, "malignant"], dtype=object)).tolist()
    [False, True, False]
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per image), got shape {y.shape}.")
    if y.dtype.kind in "biuf":
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise ValueError(f"y holds NaN at position {_first(np.isnan(y))}: {_HOW_TO_MARK}.")
        return y == UNLABELLED
    if y.dtype.kind in "US":
        return y.astype(str) == str(UNLABELLED)
    return _object_unlabelled_mask(y)


def _object_unlabelled_mask(y: np.ndarray) -> np.ndarray:
    """``unlabelled_mask`` of an object array: -1 or '-1'; labels all numbers or all str."""
    missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in y], bool)
    if missing.any():
        raise ValueError(
            f"y holds {y[missing][0]!r} at position {_first(missing)}: {_HOW_TO_MARK}."
        )
    mask = np.array([_is_marker(v) for v in y], dtype=bool)
    kinds = {_label_kind(v) for v in y[~mask]}
    if len(kinds) > 1:
        raise ValueError(
            f"y mixes numbers and strings among its labels ({sorted(kinds)}): class labels "
            f"must be of one kind; {_HOW_TO_MARK}."
        )
    return mask


def _is_marker(value) -> bool:
    if isinstance(value, str):
        return value == str(UNLABELLED)
    return (
        isinstance(value, Integral | Real) and not isinstance(value, bool) and value == UNLABELLED
    )


def _label_kind(value) -> str:
    return "strings" if isinstance(value, str) else "numbers"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def labelled_rows(y) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the labelled entries of ``y`` and their labels.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels, :data:`UNLABELLED` for unlabelled images (see
        :func:`unlabelled_mask`).

    Returns
    -------
    positions : ndarray of int
    labels : ndarray
        A str array for string labels, a numeric one for numbers (also when ``y`` is an
        object array).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cae.semi_supervised import labelled_rows
    >>> positions, labels = labelled_rows(np.array(["benign", -1, "malignant"], dtype=object))
    >>> positions.tolist(), labels.tolist()
    ([0, 2], ['benign', 'malignant'])
    """
    y = np.asarray(y)
    keep = np.flatnonzero(~unlabelled_mask(y))
    labels = y[keep]
    if labels.dtype == object and len(labels):  # one kind, as unlabelled_mask checked
        labels = labels.astype(str) if isinstance(labels[0], str) else np.array(labels.tolist())
    return keep, labels


# ------------------------------------------------------------------ the classifier
def _estimator_has(attr: str):
    """Whether the wrapped (or, once fitted, the fitted) estimator has ``attr``."""

    def check(self) -> bool:
        if hasattr(self, "estimator_"):
            return hasattr(self.estimator_, attr)
        return hasattr(self.estimator, attr)

    return check


def _delegate(method: str, summary: str):
    """A method of ``LabelledOnly`` that calls the fitted estimator's ``method`` on ``X``.

    Present only when the estimator has ``method`` (``hasattr`` says so, as scikit-learn's
    meta-estimators do).
    """

    def delegated(self, X):
        check_is_fitted(self)
        return getattr(self.estimator_, method)(X)

    delegated.__name__ = delegated.__qualname__ = method
    delegated.__doc__ = (
        f"{summary}\n\n        Parameters\n        ----------\n"
        "        X : array-like of shape (n_samples, n_features)\n\n"
        "        Returns\n        -------\n        ndarray\n"
    )
    return available_if(_estimator_has(method))(delegated)


class LabelledOnly(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A classifier fitted on the labelled rows only: ``y == -1`` rows are dropped.

    The last step of a pipeline whose featurizer learns from unlabelled images
    (``fit(X, y)`` with ``y == -1`` for them, :mod:`sklearn.semi_supervised`'s
    convention): the featurizer uses every image, the classifier the labelled ones.
    Without it a plain classifier learns ``-1`` as a class.

    Parameters
    ----------
    estimator : classifier
        Cloned and fitted on the labelled rows.

    Attributes
    ----------
    estimator_ : classifier
        The fitted clone.
    classes_ : ndarray
        The classes of the labelled rows (never ``-1``).
    n_labelled_ : int
        Labelled rows seen in ``fit``.
    n_features_in_ : int
        Number of features seen in ``fit`` (when the estimator reports it).
    feature_names_in_ : ndarray of str
        Names of the features seen in ``fit`` (when the estimator reports them).

    See Also
    --------
    make_pipeline : Builds a pipeline whose final classifier is wrapped in this.
    sklearn.semi_supervised.SelfTrainingClassifier : Also fits on the unlabelled rows,
        with its own confident predictions as labels.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.svm import SVC
    >>> from sklearn_cae.semi_supervised import LabelledOnly
    >>> X = np.array([[0.0], [0.1], [1.0], [1.1], [0.5], [0.6]])
    >>> y = np.array([0, 0, 1, 1, -1, -1])
    >>> clf = LabelledOnly(SVC()).fit(X, y)
    >>> clf.classes_.tolist(), clf.n_labelled_
    ([0, 1], 4)
    >>> clf.score(X, y)  # the labelled rows only
    1.0
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit a clone of ``estimator`` on the rows of ``X`` whose label is not ``-1``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels, ``-1`` for unlabelled rows.
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to the estimator's ``fit`` for the labelled rows, when given.
        **fit_params : dict
            Passed to the estimator's ``fit``; arrays of length ``n_samples`` are cut to
            the labelled rows.

        Returns
        -------
        self : LabelledOnly
        """
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None "
                "(give -1 for unlabelled rows)."
            )
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        if issparse(X):
            X = X.tocsr()  # row indexing; the estimator says whether it takes sparse input
        elif not hasattr(X, "__getitem__"):
            X = np.asarray(X)
        keep, labels = labelled_rows(y)
        if not len(keep):
            raise ValueError(
                f"every label of y is -1 (unlabelled): {type(self).__name__} needs labelled "
                "rows to fit its classifier."
            )
        if sample_weight is not None:
            fit_params["sample_weight"] = sample_weight
        fit_params = {
            name: _safe_indexing(value, keep) if _is_per_sample(value, len(y)) else value
            for name, value in fit_params.items()
        }
        self.estimator_ = clone(self.estimator).fit(_safe_indexing(X, keep), labels, **fit_params)
        self.classes_ = self.estimator_.classes_
        self.n_labelled_ = len(keep)
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.estimator_, attr):
                setattr(self, attr, getattr(self.estimator_, attr))
        return self

    predict = _delegate("predict", "Predict classes with the fitted estimator.")
    predict_proba = _delegate(
        "predict_proba", "Class probabilities from the fitted estimator, in ``classes_`` order."
    )
    predict_log_proba = _delegate(
        "predict_log_proba", "Log class probabilities from the fitted estimator."
    )
    decision_function = _delegate("decision_function", "Decision scores of the fitted estimator.")

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on the labelled rows of ``(X, y)``; rows with ``y == -1`` are ignored.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Test samples.
        y : array-like of shape (n_samples,)
            True labels; rows marked ``-1`` are left out.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        float
        """
        keep, labels = labelled_rows(y)
        weight = None if sample_weight is None else _safe_indexing(sample_weight, keep)
        return super().score(_safe_indexing(X, keep), labels, sample_weight=weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__()
        tags.input_tags.sparse = inner.input_tags.sparse
        tags.input_tags.allow_nan = inner.input_tags.allow_nan
        tags.input_tags.pairwise = inner.input_tags.pairwise
        tags.input_tags.categorical = inner.input_tags.categorical
        tags.input_tags.string = inner.input_tags.string
        tags.classifier_tags.multi_class = inner.classifier_tags is None or (
            inner.classifier_tags.multi_class
        )
        tags.classifier_tags.poor_score = bool(
            inner.classifier_tags and inner.classifier_tags.poor_score
        )
        return tags


def _is_per_sample(value, n_samples: int) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str) and len(value) == n_samples


def make_pipeline(*steps, memory=None, transform_input=None, verbose: bool = False):
    """:func:`sklearn.pipeline.make_pipeline`, with a final classifier fitted on labelled rows.

    A final step that is a classifier and does not itself take ``-1`` as "unlabelled"
    (anything but :mod:`sklearn.semi_supervised`'s estimators and :class:`LabelledOnly`)
    is wrapped in :class:`LabelledOnly`. The featurizer before it is fitted on every
    image: ``pipe.fit(X, y)`` with ``y == -1`` for the unlabelled ones is one call.

    Parameters
    ----------
    *steps : list of estimators
        As for :func:`sklearn.pipeline.make_pipeline`.
    memory, transform_input, verbose
        As for :func:`sklearn.pipeline.make_pipeline`.

    Returns
    -------
    Pipeline

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.svm import SVC
    >>> from sklearn_cae.semi_supervised import make_pipeline
    >>> make_pipeline(StandardScaler(), SVC()).steps[-1]
    ('labelledonly', LabelledOnly(estimator=SVC()))
    """
    if steps and _learns_unlabelled_as_class(steps[-1]):
        steps = (*steps[:-1], LabelledOnly(steps[-1]))
    return _sklearn_make_pipeline(
        *steps, memory=memory, transform_input=transform_input, verbose=verbose
    )


def _learns_unlabelled_as_class(estimator) -> bool:
    """Whether ``estimator`` is a classifier that would take ``-1`` for a class."""
    if estimator is None or isinstance(estimator, str):  # None, "passthrough"
        return False
    return is_classifier(estimator) and not isinstance(estimator, (*_SEMI_SUPERVISED, LabelledOnly))


# -------------------------------------------------------------------- scoring, CV
def labelled_scorer(scoring: str):
    """A scorer that scores the labelled rows only (``y != -1``).

    For ``cross_validate`` and ``GridSearchCV`` when the data hold unlabelled rows:
    scikit-learn's scorers would count ``-1`` as a class. It refuses a model whose
    ``classes_`` holds ``-1`` (a classifier that learnt "unlabelled" as a class) and
    says how to fix it.

    Parameters
    ----------
    scoring : str
        A scikit-learn scorer name, e.g. ``"balanced_accuracy"`` or ``"roc_auc"``.

    Returns
    -------
    callable
        ``scorer(estimator, X, y) -> float``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.svm import SVC
    >>> from sklearn_cae.semi_supervised import LabelledOnly, labelled_scorer
    >>> X = np.array([[0.0], [0.1], [1.0], [1.1], [0.5], [0.6]])
    >>> y = np.array([0, 0, 1, 1, -1, -1])
    >>> labelled_scorer("roc_auc")(LabelledOnly(SVC()).fit(X, y), X, y)
    1.0
    """
    scorer = get_scorer(scoring)

    def score_labelled(estimator, X, y, **kwargs) -> float:
        _check_classes(estimator)
        keep, labels = labelled_rows(y)
        kwargs = {
            k: _safe_indexing(v, keep) if _is_per_sample(v, len(y)) else v
            for k, v in kwargs.items()
        }
        return scorer(estimator, _safe_indexing(X, keep), labels, **kwargs)

    score_labelled.__name__ = f"labelled_{scoring}"
    return score_labelled


def _check_classes(estimator) -> None:
    classes = getattr(estimator, "classes_", None)
    if classes is not None and unlabelled_mask(np.asarray(classes)).any():
        raise ValueError(
            f"{type(estimator).__name__} learnt -1 (unlabelled) as a class (classes_ = "
            f"{list(np.asarray(classes).tolist())}): fit its classifier on the labelled rows "
            "only: wrap it in sklearn_cae.semi_supervised.LabelledOnly (e.g. "
            "LabelledOnly(SVC())), build the pipeline with "
            "sklearn_cae.semi_supervised.make_pipeline, or use a sklearn.semi_supervised "
            "estimator."
        )


class LabelledStratifiedKFold(BaseCrossValidator):
    """Stratified K folds of the labelled rows; every unlabelled row is in every training set.

    Test folds hold labelled rows only, stratified by class; the unlabelled rows
    (``y == -1``) never are test rows, so a featurizer fitted on each training set
    learns from all of them.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    shuffle : bool, default=False
        Shuffle each class's labelled rows before splitting.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffle.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cae.semi_supervised import LabelledStratifiedKFold
    >>> y = np.array([0, 1, 0, 1, -1, -1])
    >>> [(train.tolist(), test.tolist()) for train, test in
    ...  LabelledStratifiedKFold(2).split(np.zeros((6, 1)), y)]
    [([2, 3, 4, 5], [0, 1]), ([0, 1, 4, 5], [2, 3])]
    """

    def __init__(self, n_splits: int = 5, *, shuffle: bool = False, random_state=None):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        """The number of folds.

        Parameters
        ----------
        X, y, groups : ignored

        Returns
        -------
        int
        """
        return self.n_splits

    def split(self, X, y, groups=None):
        """Yield ``(train, test)`` positions.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : array-like of shape (n_samples,)
            Class labels, ``-1`` for unlabelled rows.
        groups : ignored

        Yields
        ------
        train, test : ndarray of int
        """
        keep, labels = labelled_rows(y)
        unlabelled = np.flatnonzero(unlabelled_mask(y))
        folds = StratifiedKFold(self.n_splits, shuffle=self.shuffle, random_state=self.random_state)
        for train, test in folds.split(np.zeros((len(keep), 1)), labels):
            yield np.sort(np.concatenate([keep[train], unlabelled])), keep[test]


# --------------------------------------------------------- the few-label protocol
def _with_room_for_the_marker(y: np.ndarray) -> np.ndarray:
    """A copy of ``y`` that can hold :data:`UNLABELLED`: ints and floats stay numeric,
    other labels (strings) become an object array."""
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    return y.copy() if y.dtype.kind == "f" else y.astype(object)


@validate_params(
    {
        "y": ["array-like"],
        "labelled_fraction": [Interval(Real, 0, 1, closed="right")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def hide_labels(y, labelled_fraction: float, random_state: int = 0) -> np.ndarray:
    """``y`` with all but a stratified ``labelled_fraction`` of the labels set to ``-1``.

    The labelled images are :func:`sklearn_cae.datasets.stratified_subset`'s (at least
    2 a class), as in the demo and the benchmarks. Numeric labels stay numeric; string
    labels become an object array with ``-1`` for the hidden ones.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels, all known.
    labelled_fraction : float in (0, 1]
        Fraction of each class that keeps its label.
    random_state : int >= 0, default=0
        Seed of the draw.

    Returns
    -------
    ndarray of shape (n_samples,)

    Examples
    --------
    >>> from sklearn_cae.semi_supervised import hide_labels
    >>> hide_labels(["a"] * 4 + ["b"] * 4, 0.5).tolist()
    [-1, -1, 'a', 'a', 'b', 'b', -1, -1]
    """
    from .datasets import stratified_subset

    y = np.asarray(y)
    if unlabelled_mask(y).any():
        raise ValueError(
            "hide_labels needs every label known, and y already holds -1 (unlabelled)."
        )
    keep = stratified_subset(y, labelled_fraction, random_state)
    hidden = _with_room_for_the_marker(y)
    mask = np.ones(len(y), bool)
    mask[keep] = False
    hidden[mask] = UNLABELLED
    return hidden


def few_labels_fold_scorer(X, y, labelled_fraction: float, scoring: dict, random_state: int = 0):
    """A fold scorer (:mod:`sklearn_cae.evaluation`) for the few-label protocol.

    In each fold, all but a stratified ``labelled_fraction`` of the training fold's
    labels are hidden (``-1``, :func:`hide_labels`); a clone of the method is fitted on
    every training image, then scored on the held-out fold, whose labels are all known.
    The method must take ``y == -1`` (a pipeline from :func:`make_pipeline`).
    ``sklearn-cae evaluate DATA --labelled-fraction 0.1`` runs this.

    Parameters
    ----------
    X : list of str or ndarray
        Images or image paths.
    y : ndarray of shape (n_samples,)
        Labels, all known.
    labelled_fraction : float in (0, 1]
        Fraction of each training fold that stays labelled.
    scoring : dict of str to callable
        Metric name to scorer (``scorer(estimator, X, y)``).
    random_state : int, default=0
        Seed of the labelled draw.

    Returns
    -------
    callable
        ``score_fold(method, train, test)`` returning ``{regime: {name: score}}`` with
        the regime ``"10% labels"`` (for a fraction of 0.1).
    """
    from .datasets import take_rows
    from .evaluation import split_final_step

    y = np.asarray(y)
    regime = f"{labelled_fraction:.0%} labels"

    def score_fold(method, train, test) -> dict[str, dict[str, float]]:
        y_fit = hide_labels(y[train], labelled_fraction, random_state)
        model = clone(method).fit(take_rows(X, train), y_fit)
        final, features = split_final_step(model, take_rows(X, test))
        return {
            regime: {name: scorer(final, features, y[test]) for name, scorer in scoring.items()}
        }

    return score_fold


def load_unlabelled(path: str | os.PathLike) -> list[str] | np.ndarray:
    """Unlabelled images to fit beside the labelled ones: a folder or an ``.npz`` file.

    What ``--unlabelled PATH`` reads: every image file under a folder
    (:func:`sklearn_cae.datasets.find_image_files`: recursively, sorted, hidden files
    left out), or the ``images`` array of an ``.npz`` file.

    Parameters
    ----------
    path : str or path

    Returns
    -------
    list of str or ndarray

    Raises
    ------
    FileNotFoundError
        When ``path`` is missing or a folder holds no image file.
    ValueError
        When an ``.npz`` file has no ``images`` array, or ``path`` is another file.
    """
    from .datasets import IMAGE_EXTENSIONS, find_image_files

    path = Path(path).expanduser()
    if path.is_dir():
        files = find_image_files(path)
        if not files:
            raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(f"unlabelled images: no such folder or file: {path}")
    if path.suffix.lower() != ".npz":
        raise ValueError(f"unlabelled images must be a folder or an .npz file, got {path}")
    with np.load(path, allow_pickle=False) as archive:
        if "images" not in archive.files:
            raise ValueError(f"{path} has no 'images' array (it has {archive.files})")
        return archive["images"]


def with_unlabelled(X, y, X_unlabelled) -> tuple[list | np.ndarray, np.ndarray]:
    """The labelled images followed by the unlabelled ones, whose labels are ``-1``.

    Parameters
    ----------
    X : list of str or ndarray
        Labelled images (paths or an array).
    y : array-like of shape (n_samples,)
        Their labels.
    X_unlabelled : list of str or ndarray
        Unlabelled images of the same kind (paths with paths, arrays of the same image
        shape with arrays).

    Returns
    -------
    X_all : list of str or ndarray
    y_all : ndarray
        ``y`` then ``-1``: numeric labels stay numeric, string labels become an object
        array.

    Examples
    --------
    >>> from sklearn_cae.semi_supervised import with_unlabelled
    >>> X, y = with_unlabelled(["a.png", "b.png"], ["benign", "malignant"], ["c.png"])
    >>> X, y.tolist()
    (['a.png', 'b.png', 'c.png'], ['benign', 'malignant', -1])
    """
    y = np.asarray(y)
    if isinstance(X, list) != isinstance(X_unlabelled, list):
        kinds = ["image paths" if isinstance(x, list) else "an array" for x in (X, X_unlabelled)]
        raise ValueError(
            f"the labelled images are {kinds[0]} and the unlabelled ones {kinds[1]}: give "
            "both as image files (folders) or both as arrays (.npz files)"
        )
    if isinstance(X, list):
        X_all = [*X, *X_unlabelled]
    else:
        if np.shape(X)[1:] != np.shape(X_unlabelled)[1:]:
            raise ValueError(
                f"labelled images of shape {np.shape(X)[1:]} and unlabelled ones of shape "
                f"{np.shape(X_unlabelled)[1:]}: the arrays must hold images of one shape"
            )
        X_all = np.concatenate([X, X_unlabelled])
    base = _with_room_for_the_marker(y)
    y_all = np.concatenate([base, np.full(len(X_unlabelled), UNLABELLED, dtype=base.dtype)])
    return X_all, y_all
