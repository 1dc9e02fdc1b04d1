"""The demo: CAE features against transfer-learned features and raw pixels.

Cross-validates three pipelines on BreastMNIST's official training split (loaded
through ``medmnist``; from ``$MEDMNIST_ROOT`` when set) and prints balanced accuracy,
ROC AUC and seconds per method.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from .datasets import load_medmnist
from .featurizer import BackboneFeaturizer, CAETransferFeaturizer

__all__ = ["demo_pipelines", "run_demo"]


def _flatten(X):
    return np.asarray(X, dtype=np.float32).reshape(len(X), -1) / 255.0


def demo_pipelines(random_state: int = 0) -> dict[str, Pipeline]:
    """The three pipelines the demo compares, each ending in the same SVC."""

    def classifier():
        return [StandardScaler(), SVC(class_weight="balanced")]

    return {
        "raw pixels + PCA": make_pipeline(
            FunctionTransformer(_flatten), PCA(50, random_state=random_state), *classifier()
        ),
        "BackboneFeaturizer": make_pipeline(BackboneFeaturizer(), *classifier()),
        "CAETransferFeaturizer": make_pipeline(
            CAETransferFeaturizer(random_state=random_state), *classifier()
        ),
    }


def run_demo(dataset: str = "breastmnist", n_splits: int = 5, random_state: int = 0) -> list:
    """Cross-validate the demo pipelines and print a table; return its rows."""
    X, y = load_medmnist(dataset, split="train")
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    print(f"{dataset}: {len(X)} training images {X.shape[1:]}, {n_splits}-fold CV, SVC")
    rows = []
    for name, pipe in demo_pipelines(random_state).items():
        start = time.perf_counter()
        scores = cross_validate(pipe, X, y, cv=cv, scoring=["balanced_accuracy", "roc_auc"])
        seconds = time.perf_counter() - start
        bacc, auc = scores["test_balanced_accuracy"], scores["test_roc_auc"]
        rows.append((name, bacc.mean(), bacc.std(), auc.mean(), auc.std(), seconds))
    header = f"| {'method':<22} | {'balanced acc.':>15} | {'ROC AUC':>15} | {'seconds':>7} |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, bacc, bacc_sd, auc, auc_sd, seconds in rows:
        print(
            f"| {name:<22} | {bacc:.3f} ± {bacc_sd:.3f}   | {auc:.3f} ± {auc_sd:.3f}   "
            f"| {seconds:7.1f} |"
        )
    return rows
