"""Featurizer + scaler + SVC pipelines, and finding the featurizers inside a model.

:func:`featurizer_pipelines` builds what ``sklearn-cae evaluate`` compares and
``sklearn-cae fit`` saves: each featurizer (whose features come standardized, each block
balanced: no scaler follows it), optionally an imbalanced-learn sampler
(:data:`SAMPLERS`), and an SVC, calibrated to give class probabilities when the labels
are known (:func:`make_classifier`).
:func:`find_featurizers` looks through pipelines, fitted searches and wrappers for the
featurizers a model holds: the command line sets its run options on them, and
:mod:`sklearn_cae.plotting` draws the auto-encoder of the one it finds.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.svm import SVC

__all__ = [
    "SAMPLERS",
    "describe_steps",
    "featurizer_pipelines",
    "find_featurizers",
    "make_classifier",
    "make_sampler",
]

#: imbalanced-learn's samplers by name (``--resample``): ``(module, class name)``.
SAMPLERS = {
    "smote": ("imblearn.over_sampling", "SMOTE"),
    "undersample": ("imblearn.under_sampling", "RandomUnderSampler"),
    "oversample": ("imblearn.over_sampling", "RandomOverSampler"),
}


def make_classifier(y=None):
    """``SVC(class_weight="balanced")``; given the labels, one with class probabilities.

    Probabilities come from Platt scaling fitted on cross-validated SVC scores
    (scikit-learn's replacement for ``SVC(probability=True)``); the features are
    computed once, only the SVC is refitted per calibration fold.

    Parameters
    ----------
    y : array-like of shape (n_samples,), default=None
        The labels the classifier will be fitted on; they set the calibration folds
        (up to 5, fewer when a class has fewer images). None: a plain SVC.

    Returns
    -------
    SVC or CalibratedClassifierCV

    Warns
    -----
    UserWarning
        When a class of ``y`` has a single image, too few to calibrate on: the SVC is
        returned as it is.
    """
    svc = SVC(class_weight="balanced")
    if y is None:
        return svc
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if smallest < 2:
        warnings.warn(
            "a class has a single image, too few to calibrate probabilities: the model "
            "gives decision scores instead",
            UserWarning,
            stacklevel=2,
        )
        return svc
    return CalibratedClassifierCV(svc, cv=min(5, smallest), ensemble=False)


def make_sampler(resample: str, *, random_state: int = 0, smallest_class: int | None = None):
    """The imbalanced-learn sampler named ``resample``, seeded; None for ``"none"``.

    Parameters
    ----------
    resample : {"none", "smote", "undersample", "oversample"}
        A key of :data:`SAMPLERS`, or "none".
    random_state : int, default=0
        The sampler's seed.
    smallest_class : int, default=None
        The fewest images of a class in any set the sampler will resample: SMOTE
        interpolates between a class's nearest neighbours, 5 by default, fewer when a
        class has too few images to have 5.

    Returns
    -------
    sampler or None

    Raises
    ------
    ValueError
        For SMOTE when a class has a single image.
    """
    if resample == "none":
        return None
    module, name = SAMPLERS[resample]
    params = {"random_state": random_state}
    if resample == "smote" and smallest_class is not None:
        if smallest_class < 2:
            raise ValueError(
                "--resample smote needs two or more images of each class in each training "
                f"set, and a class has {smallest_class}; use --resample oversample"
            )
        params["k_neighbors"] = min(5, smallest_class - 1)
    return getattr(importlib.import_module(module), name)(**params)


def describe_steps(features: str, resample: str = "none") -> str:
    """``features [+ sampler] + SVC``, as the pipelines are built.

    >>> describe_steps("features", "smote")
    'features + SMOTE + SVC'
    """
    sampler = [] if resample == "none" else [SAMPLERS[resample][1]]
    return " + ".join([features, *sampler, "SVC"])


def featurizer_pipelines(
    params: Mapping[str, Any],
    *,
    resample: str = "none",
    random_state: int = 0,
    y=None,
    smallest_class: int | None = None,
    unlabelled: bool = False,
) -> dict[str, Pipeline]:
    """CAETransferFeaturizer and BackboneFeaturizer, each + SVC.

    The featurizers' output is already standardized with each block balanced
    (``balance_blocks``): a ``StandardScaler`` after them would undo the balance. With a
    sampler (``resample``), each pipeline is an ``imblearn.pipeline.Pipeline`` with the
    sampler before the SVC: it resamples the features of the images
    the pipeline is fitted on, never those it predicts.

    Parameters
    ----------
    params : dict of str to object
        Featurizer parameters; each featurizer gets those it takes, except None values
        (which leave its default).
    resample : {"none", "smote", "undersample", "oversample"}, default="none"
        The sampler (see :func:`make_sampler`).
    random_state : int, default=0
        Seeds the featurizers (those that take a seed) and the sampler.
    y : array-like of shape (n_samples,), default=None
        The labels the pipelines will be fitted on: the SVC then gives class
        probabilities (see :func:`make_classifier`).
    smallest_class : int, default=None
        The fewest images of a class in any set the pipelines will be fitted on (see
        :func:`make_sampler`).
    unlabelled : bool, default=False
        Whether the pipelines will be fitted with ``y == -1`` for unlabelled images: the
        featurizer then learns from every image, and the SVC, with its sampler, from the
        labelled ones (wrapped in :class:`sklearn_cae.semi_supervised.LabelledOnly`).

    Returns
    -------
    dict of str to Pipeline
        ``{"CAETransferFeaturizer": ..., "BackboneFeaturizer": ...}``.
    """
    from .featurizer import BackboneFeaturizer, CAETransferFeaturizer

    pipelines = {}
    for cls in (CAETransferFeaturizer, BackboneFeaturizer):
        featurizer = cls(**_params_taken(cls, {**params, "random_state": random_state}))
        sampler = make_sampler(resample, random_state=random_state, smallest_class=smallest_class)
        pipelines[cls.__name__] = _pipeline(featurizer, sampler, make_classifier(y), unlabelled)
    return pipelines


def _pipeline(featurizer, sampler, classifier, unlabelled: bool) -> Pipeline:
    """featurizer [+ sampler] + classifier; with ``unlabelled``, the sampler and the
    classifier fitted on the labelled rows only (they must never see -1 as a class)."""
    if sampler is not None:
        from imblearn.pipeline import make_pipeline as make_resampling_pipeline

        if not unlabelled:
            return make_resampling_pipeline(featurizer, sampler, classifier)
        classifier = make_resampling_pipeline(sampler, classifier)
    if unlabelled:
        from .semi_supervised import make_pipeline as make_labelled_only_pipeline

        return make_labelled_only_pipeline(featurizer, classifier)  # wraps it in LabelledOnly
    return make_pipeline(featurizer, classifier)


def _params_taken(cls, params: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``params`` that ``cls`` takes, without the None ones."""
    accepted = inspect.signature(cls).parameters
    return {name: value for name, value in params.items() if name in accepted and value is not None}


def find_featurizers(estimator, X=None, *, types: tuple[type, ...] | None = None) -> Iterator:
    """Yield each featurizer inside ``estimator``, with ``X`` as it reaches it.

    Looks through pipelines (in step order), fitted searches (``best_estimator_``) and
    wrappers such as ``FrozenEstimator`` (``estimator``). Lazily: ``X`` goes through a
    pipeline step only when the next featurizer is asked for (samplers, which act only
    when fitting, are passed over as the pipeline itself does when predicting).

    Parameters
    ----------
    estimator : estimator
        A featurizer, or an estimator holding some.
    X : array-like, default=None
        Input of ``estimator``; None when only the featurizers are wanted.
    types : tuple of type, default=None
        The featurizer classes to find; by default ``BackboneFeaturizer`` and
        ``CAETransferFeaturizer``.

    Yields
    ------
    featurizer : estimator
    Xt : array-like or None
        ``X`` transformed by the steps before ``featurizer`` (None when ``X`` is).

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.svm import SVC
    >>> from sklearn_cae import BackboneFeaturizer
    >>> from sklearn_cae.pipelines import find_featurizers
    >>> pipe = make_pipeline(BackboneFeaturizer(), SVC())
    >>> [type(featurizer).__name__ for featurizer, _ in find_featurizers(pipe)]
    ['BackboneFeaturizer']
    """
    if types is None:
        from .featurizer import BackboneFeaturizer, CAETransferFeaturizer

        types = (BackboneFeaturizer, CAETransferFeaturizer)
    if isinstance(estimator, types):
        yield estimator, X
        return
    steps = [step for _, step in getattr(estimator, "steps", []) if hasattr(step, "get_params")]
    for k, step in enumerate(steps):
        yield from find_featurizers(step, X, types=types)
        if X is not None and k < len(steps) - 1 and not hasattr(step, "fit_resample"):
            X = step.transform(X)
    for attr in ("best_estimator_", "estimator"):  # fitted searches, then wrappers
        inner = getattr(estimator, attr, None)
        if hasattr(inner, "get_params"):
            yield from find_featurizers(inner, X, types=types)
            return
