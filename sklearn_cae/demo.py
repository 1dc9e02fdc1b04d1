"""The demo: CAE features against transfer-learned features and raw pixels.

Cross-validates on BreastMNIST's official training split (loaded through
``medmnist``; from ``$MEDMNIST_ROOT`` when set) in two labelling regimes: all labels,
and a few labels with many unlabelled images -- the setting the method is for. In each
fold every featurizer is fitted on all the fold's training images (the unsupervised
ones without labels; the semi-supervised CAE with the labels of the labelled part and
``-1`` for the rest); the same SVC is then fitted on the labelled images and scored on
the held-out fold. Prints a progress line per method and fold, then balanced accuracy,
ROC AUC and seconds per method and regime.

The featurizers share a temporary :class:`~sklearn_cae.cache.FeatureCache`, so each
image goes through the backbone once for all folds, regimes and featurizers (only the
CAE's corrupted views are computed per fit); features are identical with and without
a cache.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.metrics import get_scorer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from .cache import FeatureCache
from .cae import UNLABELLED
from .datasets import load_medmnist, stratified_subset
from .evaluation import (
    ALL_LABELS,
    Progress,
    cross_validate_methods,
    format_table,
    stratified_folds,
)
from .featurizer import BackboneFeaturizer, CAETransferFeaturizer
from .pipelines import make_classifier

__all__ = ["demo_featurizers", "run_demo"]


def _flatten(X):
    return np.asarray(X, dtype=np.float32).reshape(len(X), -1) / 255.0


def demo_featurizers(random_state: int = 0, cache=None) -> dict[str, object]:
    """The featurizers the demo compares, at their defaults (each followed by an SVC).

    The featurizers' output comes standardized and block-balanced; the raw pixels get a
    ``StandardScaler`` of their own. ``cache`` (a :class:`~sklearn_cae.cache.FeatureCache`
    or a folder, default None) is shared by both featurizers: it saves time, and changes
    no feature.
    """
    return {
        "raw pixels + PCA": make_pipeline(
            FunctionTransformer(_flatten), PCA(50, random_state=random_state), StandardScaler()
        ),
        "BackboneFeaturizer": BackboneFeaturizer(cache=cache),
        "CAETransferFeaturizer": CAETransferFeaturizer(cache=cache, random_state=random_state),
    }


def _regime_scorer(X, y, regimes: dict[str, float], random_state: int):
    """A fold scorer (see :mod:`sklearn_cae.evaluation`) giving scores per regime.

    A featurizer that never reads labels is fitted once for all regimes; the
    semi-supervised one once per regime, with ``-1`` for the unlabelled images. The
    classifier is fitted on the features of the labelled images and scored on the
    held-out fold.
    """
    scoring = {"balanced acc.": get_scorer("balanced_accuracy"), "ROC AUC": get_scorer("roc_auc")}

    def score_fold(featurizer, train, test) -> dict[str, dict[str, float]]:
        # "auto" (the default) uses the labels when y marks unlabelled images with -1.
        semi = getattr(featurizer, "supervision", 0) != 0
        results, features = {}, None
        for regime, fraction in regimes.items():
            labelled = stratified_subset(y[train], fraction, random_state)
            if semi or features is None:
                y_fit = None
                if semi:  # the labels of the labelled part, -1 for the rest
                    y_fit = np.full(len(train), UNLABELLED)
                    y_fit[labelled] = y[train][labelled]
                model = clone(featurizer)
                features = model.fit_transform(X[train], y_fit), model.transform(X[test])
            train_features, test_features = features
            classifier = make_classifier().fit(train_features[labelled], y[train][labelled])
            results[regime] = {
                name: scorer(classifier, test_features, y[test]) for name, scorer in scoring.items()
            }
        return results

    return score_fold


def _fill_caches(featurizers: dict, X) -> dict[str, float]:
    """Store each featurizer's backbone maps of ``X`` in its cache; seconds per featurizer.

    Computed here, once, in the order and batches of ``X``, the maps are the same for
    every fold, whichever runs first and wherever (see ``fill_cache``).
    """
    seconds = {}
    for name, featurizer in featurizers.items():
        if hasattr(featurizer, "fill_cache"):
            start = time.perf_counter()
            featurizer.fill_cache(X)
            seconds[name] = time.perf_counter() - start
            Progress().line(f"{name}: backbone maps of {len(X)} images ({seconds[name]:.1f} s)")
    return seconds


def run_demo(
    dataset: str = "breastmnist",
    n_splits: int = 5,
    random_state: int = 0,
    label_fraction: float = 0.1,
    n_jobs: int | None = -1,
) -> list:
    """Cross-validate the demo featurizers, print progress and a table; return its rows.

    Parameters
    ----------
    dataset : str, default="breastmnist"
        A 2-D MedMNIST data set; its training split is cross-validated.
    n_splits : int, default=5
        Folds.
    random_state : int, default=0
        Seeds the folds, the labelled subsets and the CAEs.
    label_fraction : float, default=0.1
        Fraction of each training fold that is labelled in the few-labels regime.
    n_jobs : int or None, default=-1
        Folds cross-validated at once (-1: one per CPU core; None or 1: one after the
        other). The scores are the same either way: every image's backbone maps are
        computed once, before the folds (``fill_cache``). (On CPUs whose convolutions
        round differently with the number of threads, the corrupted views and the
        codes, computed in each fold with its share of the cores, can differ in their
        last bits.)

    Returns
    -------
    list of tuple
        ``(method, regime, bacc mean, bacc std, auc mean, auc std, seconds)`` per row.
    """
    X, y = load_medmnist(dataset, split="train")
    folds = stratified_folds(y, n_splits, random_state)
    regimes = {ALL_LABELS: 1.0, f"{label_fraction:.0%} labels": label_fraction}
    print(
        f"{dataset}: {len(X)} training images {X.shape[1:]}, {n_splits}-fold CV, SVC; "
        f"regimes: {', '.join(regimes)} (featurizers fitted on all the fold's images)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="sklearn_cae_demo_") as folder:
        featurizers = demo_featurizers(random_state, cache=FeatureCache(folder))
        filling = _fill_caches(featurizers, X)
        results = cross_validate_methods(
            featurizers,
            folds,
            _regime_scorer(X, y, regimes, random_state),
            n_jobs=n_jobs,
        )
    results = [replace(r, seconds=r.seconds + filling.get(r.method, 0.0)) for r in results]
    print(format_table(results))
    at_once = min(effective_n_jobs(n_jobs), n_splits)
    print(
        "seconds: a method's wall time over all folds and both regimes, folds run "
        f"{at_once} at a time (each featurizer is fitted once per fold; the semi-supervised "
        "CAE once per fold and regime), with its backbone maps, computed once per image "
        "before the folds."
    )
    return [
        (
            *(r.method, r.regime),
            *(r.scores["balanced acc."].mean(), r.scores["balanced acc."].std()),
            *(r.scores["ROC AUC"].mean(), r.scores["ROC AUC"].std()),
            r.seconds,
        )
        for r in results
    ]
