"""The CV-and-table helper shared by ``sklearn-cae evaluate`` and the demo."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.tree import DecisionTreeClassifier

from sklearn_cae.evaluation import (
    ALL_LABELS,
    MethodScores,
    Progress,
    cross_validate_methods,
    fit_and_score,
    format_table,
    markdown_table,
    stratified_folds,
)


@pytest.fixture
def data():
    return make_classification(n_samples=60, n_features=5, weights=[0.7], random_state=0)


def test_stratified_folds_are_stratified_k_fold(data):
    _, y = data
    folds = stratified_folds(y, 3, random_state=4)
    expected = StratifiedKFold(3, shuffle=True, random_state=4).split(np.zeros(len(y)), y)
    for (train, test), (train_expected, test_expected) in zip(folds, expected, strict=True):
        np.testing.assert_array_equal(train, train_expected)
        np.testing.assert_array_equal(test, test_expected)


def test_cross_validate_methods_scores_like_cross_val_score(data, capsys):
    X, y = data
    folds = stratified_folds(y, 3, random_state=0)
    methods = {"logistic": LogisticRegression(), "tree": DecisionTreeClassifier(random_state=0)}
    scoring = {"balanced acc.": get_scorer("balanced_accuracy"), "ROC AUC": get_scorer("roc_auc")}
    results = cross_validate_methods(methods, folds, fit_and_score(X, y, scoring))
    assert [(r.method, r.regime) for r in results] == [
        ("logistic", ALL_LABELS),
        ("tree", ALL_LABELS),
    ]
    for result, method in zip(results, methods.values(), strict=True):
        expected = cross_val_score(method, X, y, cv=folds, scoring="roc_auc")
        np.testing.assert_allclose(result.scores["ROC AUC"], expected)
        assert result.scores["balanced acc."].shape == (3,) and result.seconds > 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("logistic: fold 1/3: balanced acc. ")
    assert ", ROC AUC " in lines[0] and lines[0].endswith(" s)")


def test_cross_validate_methods_in_parallel_scores_the_same_folds_in_order(data, capsys):
    X, y = data
    folds = stratified_folds(y, 4, random_state=0)
    methods = {"logistic": LogisticRegression()}
    score = fit_and_score(X, y, {"ROC AUC": get_scorer("roc_auc")})
    [one_by_one] = cross_validate_methods(methods, folds, score)
    sequential_lines = capsys.readouterr().err.splitlines()
    [parallel] = cross_validate_methods(methods, folds, score, n_jobs=2)
    parallel_lines = capsys.readouterr().err.splitlines()
    np.testing.assert_array_equal(parallel.scores["ROC AUC"], one_by_one.scores["ROC AUC"])
    # The same progress lines, fold by fold, but for the seconds each took.
    assert [line.rsplit(" (", 1)[0] for line in parallel_lines] == [
        line.rsplit(" (", 1)[0] for line in sequential_lines
    ]


_HELD = []  # what a fold leaves in its worker, as a loaded backbone and torch's caches do


def _fold_that_grows_its_worker(method, train, test):
    _HELD.append(np.ones(50_000_000))  # 400 MB, written, so resident
    time.sleep(1.2)  # loky looks at a worker's memory at most once a second
    return {ALL_LABELS: {"test images": float(len(test))}}


def test_parallel_folds_do_not_warn_of_a_leak_when_a_worker_grows(data, recwarn):
    """loky restarts a worker 300 MB above its first task's size and warns of a "memory
    leak" (the demo: a raw-pixel fold, then a backbone's); the restart is harmless."""
    import psutil  # noqa: F401 (a test dependency: without it loky never restarts a worker)
    from joblib.externals.loky import get_reusable_executor

    _, y = data
    folds = stratified_folds(y, 6, random_state=0)
    try:
        [result] = cross_validate_methods(
            {"grows": None}, folds, _fold_that_grows_its_worker, n_jobs=2
        )
    finally:  # the workers hold what the folds kept: free it for the other tests
        get_reusable_executor().shutdown(wait=True)
    np.testing.assert_array_equal(result.scores["test images"], [len(t) for _, t in folds])
    assert [str(w.message) for w in recwarn if "worker stopped" in str(w.message)] == []


def test_fit_and_score_takes_rows_of_a_list_of_paths():
    """The CLI's DATA may be a list of image paths: rows are taken as a list."""
    seen = []

    class Recorder(DecisionTreeClassifier):
        def fit(self, X, y):
            seen.append(X)
            return super().fit(np.array([[len(x)] for x in X]), y)

        def predict(self, X):
            return super().predict(np.array([[len(x)] for x in X]))

    X = ["a", "bb", "c", "dd", "e", "ff"]
    y = np.array([0, 1, 0, 1, 0, 1])
    score_fold = fit_and_score(X, y, {"balanced acc.": get_scorer("balanced_accuracy")})
    scores = score_fold(Recorder(), np.array([0, 1, 2, 3]), np.array([4, 5]))
    assert seen == [["a", "bb", "c", "dd"]]
    assert scores == {ALL_LABELS: {"balanced acc.": 1.0}}


def test_several_regimes_come_regime_by_regime(capsys):
    def score_fold(offset, train, test):
        return {
            "all labels": {"score": 0.5 + offset + len(test) / 100},
            "10% labels": {"score": 0.25 + offset},
        }

    folds = [(np.arange(3), np.arange(3, 5)), (np.arange(2), np.arange(2, 5))]
    results = cross_validate_methods({"a": 0.0, "b": 0.125}, folds, score_fold)
    assert [(r.method, r.regime) for r in results] == [
        ("a", "all labels"),
        ("b", "all labels"),
        ("a", "10% labels"),
        ("b", "10% labels"),
    ]
    np.testing.assert_allclose(results[1].scores["score"], [0.645, 0.655])
    assert results[0].seconds == results[2].seconds  # one time per method
    err = capsys.readouterr().err
    assert "a: fold 1/2: all labels: score 0.520; 10% labels: score 0.250 (" in err

    table = format_table(results).splitlines()
    assert table[0] == "| method | labels     |         score | seconds |"
    assert table[1] == "|--------|------------|---------------|---------|"
    assert table[3].startswith("| b      | all labels | 0.650 ± 0.005 |")
    assert len(table) == 6


def test_format_table_one_regime_has_no_regime_column():
    rows = [
        MethodScores(
            "CAETransferFeaturizer",
            ALL_LABELS,
            {"balanced acc.": np.array([0.7, 0.9]), "macro F1": np.array([0.5, 0.5])},
            12.34,
        ),
        MethodScores(
            "BackboneFeaturizer",
            ALL_LABELS,
            {"balanced acc.": np.array([0.6, 0.6]), "macro F1": np.array([0.4, 0.6])},
            3.0,
        ),
    ]
    assert format_table(rows, first_column="features").splitlines() == [
        "| features              | balanced acc. |      macro F1 | seconds |",
        "|-----------------------|---------------|---------------|---------|",
        "| CAETransferFeaturizer | 0.800 ± 0.100 | 0.500 ± 0.000 |    12.3 |",
        "| BackboneFeaturizer    | 0.600 ± 0.000 | 0.500 ± 0.100 |     3.0 |",
    ]


def test_quiet_progress_prints_nothing(capsys):
    progress = Progress(quiet=True)
    progress.line("hidden")
    assert list(progress.bar(range(3))) == [0, 1, 2]
    Progress().line("shown")
    assert capsys.readouterr().err == "shown\n"


def test_held_out_fold_is_featurized_once_for_every_scorer(data):
    """Balanced accuracy (predict) and ROC AUC (decision_function) from one transform."""
    from imblearn.over_sampling import RandomOverSampler
    from imblearn.pipeline import make_pipeline as make_resampling_pipeline
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.svm import SVC

    X, y = data
    calls = []

    def counted(X):
        calls.append(len(X))
        return X

    scoring = {"bacc": get_scorer("balanced_accuracy"), "auc": get_scorer("roc_auc")}
    score_fold = fit_and_score(X, y, scoring)
    train, test = stratified_folds(y, 3, random_state=0)[0]
    for pipe in (
        make_pipeline(FunctionTransformer(counted), SVC()),
        make_resampling_pipeline(
            FunctionTransformer(counted), RandomOverSampler(random_state=0), SVC()
        ),
    ):
        calls.clear()
        scores = score_fold(pipe, train, test)[ALL_LABELS]
        assert calls == [len(train), len(test)]  # fit, then the held-out fold once
        model = pipe.fit(X[train], y[train])  # the same scores as scoring the pipeline
        for name, scorer in scoring.items():
            assert scores[name] == pytest.approx(scorer(model, X[test], y[test]))


def test_markdown_table_pads_columns_on_request():
    rows = [["CAE", 0.5], ["a longer name", "12.25"]]
    assert markdown_table(["method", "s"], rows, align="lr").splitlines() == [
        "| method        |     s |",
        "|---------------|-------|",
        "| CAE           |   0.5 |",
        "| a longer name | 12.25 |",
    ]
    assert markdown_table(["method", "s"], rows).splitlines()[1] == "|---|---|"
    with pytest.raises(ValueError, match="'l' or 'r' per column"):
        markdown_table(["method", "s"], rows, align="lc")
    with pytest.raises(ValueError, match="a row has 1 cells"):
        markdown_table(["method", "s"], [["CAE"]], align="lr")
