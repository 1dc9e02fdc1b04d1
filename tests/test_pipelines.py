"""The featurizers inside scikit-learn and imbalanced-learn tooling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from sklearn_cae import CAETransferFeaturizer

from .helpers import FAST_CAE


def _pipeline(**params) -> Pipeline:
    return Pipeline([("feat", CAETransferFeaturizer(**{**FAST_CAE, **params})), ("clf", SVC())])


def test_pipeline_fit_predict(small_breast):
    X, y = small_breast
    pipe = _pipeline().fit(X, y)
    predictions = pipe.predict(X)
    assert predictions.shape == y.shape
    assert set(predictions) <= set(y)


def test_grid_search_over_layer_layer_sizes_and_bottleneck(small_breast):
    X, y = small_breast
    grid = {
        "feat__layer": ["blocks.2", "blocks.4"],
        "feat__layer_sizes": [(8,), (16, 8)],
        "feat__bottleneck": [4, 8],
    }
    search = GridSearchCV(_pipeline(max_epochs=1), grid, cv=2, scoring="balanced_accuracy")
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 8
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    best = search.best_estimator_.named_steps["feat"]
    assert best.bottleneck == search.best_params_["feat__bottleneck"]
    assert search.predict(X).shape == y.shape


def test_cross_validate(small_breast):
    X, y = small_breast
    scores = cross_validate(
        _pipeline(), X, y, cv=StratifiedKFold(3), scoring=["balanced_accuracy", "roc_auc"]
    )
    assert scores["test_roc_auc"].shape == (3,)
    assert np.all((scores["test_roc_auc"] >= 0) & (scores["test_roc_auc"] <= 1))


def test_imbalanced_learn_pipeline_with_smote(small_breast):
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import make_pipeline

    X, y = small_breast
    X, y = X[6:], y[6:]  # make it imbalanced: 18 vs 24
    pipe = make_pipeline(CAETransferFeaturizer(**FAST_CAE), SMOTE(random_state=0), SVC())
    pipe.fit(X, y)
    assert pipe.predict(X).shape == y.shape


def test_joblib_dump_then_load_in_a_fresh_process_without_gpu_or_network(small_breast, tmp_path):
    X, y = small_breast
    pipe = _pipeline().fit(X, y)
    model, data = tmp_path / "model.joblib", tmp_path / "X.npy"
    joblib.dump(pipe, model)
    np.save(data, X)
    script = textwrap.dedent(
        f"""
        import joblib, numpy as np, socket
        def no_network(*args, **kwargs):
            raise RuntimeError("network access attempted")
        socket.socket.connect = no_network
        pipe = joblib.load({str(model)!r})
        np.save({str(tmp_path / "out.npy")!r}, pipe.decision_function(np.load({str(data)!r})))
        """
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), pipe.decision_function(X), atol=1e-5)


@pytest.mark.slow
def test_real_data_cae_features_beat_chance(breast):
    """Unlabelled fit on BreastMNIST train, SVC on its labels, scored on the test split."""
    from sklearn.metrics import balanced_accuracy_score

    (X, y), (X_test, y_test) = breast
    pipe = Pipeline(
        [
            ("feat", CAETransferFeaturizer(image_size=64, max_epochs=5, random_state=0)),
            ("clf", SVC(class_weight="balanced")),
        ]
    ).fit(X, y)
    score = balanced_accuracy_score(y_test, pipe.predict(X_test))
    assert score > 0.7, f"balanced accuracy {score:.3f} on BreastMNIST test"
