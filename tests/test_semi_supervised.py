"""One pipeline fitted with y == -1 for unlabelled images (issue 18, part 3)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import make_pipeline as sklearn_make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cae import CAETransferFeaturizer
from sklearn_cae.semi_supervised import (
    UNLABELLED,
    LabelledOnly,
    LabelledStratifiedKFold,
    few_labels_fold_scorer,
    hide_labels,
    labelled_scorer,
    load_unlabelled,
    make_pipeline,
    unlabelled_mask,
    with_unlabelled,
)

from .helpers import FAST_CAE

SEMI_CAE = {**FAST_CAE, "supervision": 1.0}


def _features(n=200, n_classes=2, seed=0):
    """Separable features and labels, with all but 30 labels hidden (-1)."""
    X, y = make_classification(
        n, 8, n_informative=4, n_classes=n_classes, class_sep=3.0, random_state=seed
    )
    return X, y, hide_labels(y, 30 / n, random_state=seed)


@pytest.fixture(scope="module")
def images_200(breast):
    """200 BreastMNIST training images, 170 of their labels hidden, and 100 test images."""
    (X, y), (X_test, y_test) = breast
    rng = np.random.default_rng(0)
    index = rng.choice(len(X), 200, replace=False)
    y_semi = y[index].copy()
    y_semi[rng.choice(200, 170, replace=False)] = UNLABELLED
    return X[index], y_semi, X_test[:100], y_test[:100]


# -------------------------------------------------------------------- the issue
def test_plain_pipeline_learns_unlabelled_as_a_class_and_the_scorer_refuses_it(images_200):
    """The issue's reproduction: SVC after the featurizer learnt -1 as a class."""
    X, y_semi, X_test, y_test = images_200
    pipe = sklearn_make_pipeline(CAETransferFeaturizer(**SEMI_CAE), StandardScaler(), SVC()).fit(
        X, y_semi
    )
    assert -1 in pipe.classes_
    with pytest.raises(ValueError, match=r"learnt -1 \(unlabelled\) as a class.*LabelledOnly"):
        labelled_scorer("balanced_accuracy")(pipe, X_test, y_test)


def test_one_call_pipeline_uses_every_image_and_the_labelled_rows(images_200):
    X, y_semi, X_test, y_test = images_200
    pipe = make_pipeline(CAETransferFeaturizer(**SEMI_CAE), StandardScaler(), SVC())
    pipe.fit(X, y_semi)
    featurizer, classifier = pipe[0], pipe[-1]
    last_epoch = featurizer.cae_[0].history[-1, "batches"]
    assert sum(batch["train_batch_size"] for batch in last_epoch) == 200  # every image
    assert classifier.n_labelled_ == 30
    assert pipe.classes_.tolist() == [0, 1]
    predictions = pipe.predict(X_test)
    assert set(np.unique(predictions)) <= {0, 1}
    assert pipe.score(X_test, y_test) > 0.5


def test_cross_validate_scores_labelled_rows_only():
    X, _, y_semi = _features()
    scores = cross_validate(
        make_pipeline(StandardScaler(), SVC()),
        X,
        y_semi,
        cv=LabelledStratifiedKFold(3, shuffle=True, random_state=0),
        scoring={
            "bacc": labelled_scorer("balanced_accuracy"),
            "auc": labelled_scorer("roc_auc"),
        },
    )
    assert (scores["test_bacc"] > 0.7).all() and (scores["test_auc"] > 0.8).all()
    # Plain KFold puts unlabelled rows in the test folds: the scorer skips them, and so
    # does LabelledOnly's own score (the default scoring).
    default = cross_validate(make_pipeline(StandardScaler(), SVC()), X, y_semi, cv=KFold(3))
    assert (default["test_score"] > 0.7).all()


def test_grid_search_over_the_wrapped_classifier():
    X, _, y_semi = _features()
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), SVC()),
        {"labelledonly__estimator__C": [0.1, 1.0]},
        cv=LabelledStratifiedKFold(3),
        scoring=labelled_scorer("balanced_accuracy"),
    ).fit(X, y_semi)
    assert grid.best_estimator_.classes_.tolist() == [0, 1]
    assert grid.best_score_ > 0.7


# ------------------------------------------------------------------ make_pipeline
@pytest.mark.parametrize(
    "final, wrapped",
    [
        (SVC(), True),
        (LogisticRegression(), True),
        (sklearn_make_pipeline(StandardScaler(), SVC()), True),
        (LabelledOnly(SVC()), False),
        (SelfTrainingClassifier(LogisticRegression()), False),
        (LabelSpreading(), False),
        (StandardScaler(), False),
        ("passthrough", False),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, bool | str) else str(v),
)
def test_make_pipeline_wraps_a_classifier_that_would_learn_unlabelled(final, wrapped):
    pipe = make_pipeline(StandardScaler(), final)
    last = pipe.steps[-1][1]
    assert isinstance(last, LabelledOnly) == wrapped or last is final
    assert (last is not final) == wrapped


@pytest.mark.parametrize(
    "final", [SelfTrainingClassifier(LogisticRegression()), LabelSpreading(kernel="knn")]
)
def test_semi_supervised_final_steps_never_predict_unlabelled(final):
    X, _, y_semi = _features()
    pipe = make_pipeline(StandardScaler(), final).fit(X, y_semi)
    assert -1 not in pipe.classes_ and -1 not in pipe.predict(X)


# ------------------------------------------------------------------- LabelledOnly
def _expected_failed_checks(estimator):
    # The string "-1" marks an unlabelled row, as -1 does among numbers; this check
    # names its two classes "-1" and "1".
    expected = {"check_classifiers_classes": "'-1' among string labels means unlabelled"}
    if isinstance(estimator.estimator, SVC):  # as scikit-learn expects of SVC itself
        reason = "SVC: sample_weight is not equivalent to removing/repeating samples"
        expected["check_sample_weight_equivalence_on_dense_data"] = reason
        expected["check_sample_weight_equivalence_on_sparse_data"] = reason
    return expected


@parametrize_with_checks(
    [LabelledOnly(LogisticRegression()), LabelledOnly(SVC())],
    expected_failed_checks=_expected_failed_checks,
)
def test_labelled_only_is_a_scikit_learn_estimator(estimator, check):
    check(estimator)


def test_labelled_only_drops_unlabelled_rows_and_their_weights():
    X, y, y_semi = _features()
    weights = np.arange(len(y), dtype=float) + 1
    clf = LabelledOnly(LogisticRegression()).fit(X, y_semi, sample_weight=weights)
    keep = y_semi != UNLABELLED
    reference = LogisticRegression().fit(X[keep], y[keep], sample_weight=weights[keep])
    np.testing.assert_allclose(clf.decision_function(X), reference.decision_function(X))
    assert clf.classes_.tolist() == [0, 1] and clf.n_labelled_ == 30
    assert clf.score(X, y_semi) == reference.score(X[keep], y[keep])


def test_labelled_only_string_labels_with_the_marker():
    X, y, y_semi = _features(n_classes=3)
    names = np.array(["benign", "malignant", "normal"], dtype=object)
    y_names = np.where(y_semi == UNLABELLED, UNLABELLED, names[y]).astype(object)
    clf = LabelledOnly(SVC()).fit(X, y_names)
    assert clf.classes_.tolist() == ["benign", "malignant", "normal"]
    assert set(clf.predict(X)) <= set(names)


def test_labelled_only_numbers_in_an_object_array():
    X, _, y_semi = _features()
    clf = LabelledOnly(SVC()).fit(X, y_semi.astype(object))
    assert clf.classes_.tolist() == [0, 1] and clf.classes_.dtype.kind == "i"


def test_labelled_only_refuses_no_labels():
    X, _, _ = _features()
    with pytest.raises(ValueError, match="every label of y is -1"):
        LabelledOnly(SVC()).fit(X, np.full(len(X), UNLABELLED))


# ---------------------------------------------------------------- label handling
@pytest.mark.parametrize(
    "y, expected",
    [
        ([0, -1, 1], [False, True, False]),
        (np.array([0.0, -1.0, 1.0]), [False, True, False]),
        (np.array(["a", "-1", "b"]), [False, True, False]),
        (np.array(["a", -1, "b"], dtype=object), [False, True, False]),
        (np.array(["a", "-1", "b"], dtype=object), [False, True, False]),
        (np.array([0, -1, 1], dtype=object), [False, True, False]),
        (np.array([True, False]), [False, False]),
    ],
)
def test_unlabelled_mask(y, expected):
    assert unlabelled_mask(y).tolist() == expected


@pytest.mark.parametrize(
    "y, match",
    [
        (np.array(["a", None, "b"], dtype=object), "holds None at position 1: mark unlabelled"),
        (np.array([0.0, np.nan, 1.0]), "holds NaN at position 1: mark unlabelled"),
        (np.array(["a", 0, "b"], dtype=object), "mixes numbers and strings"),
        (np.zeros((3, 2)), "must be 1-D"),
    ],
)
def test_unlabelled_mask_refuses_what_is_not_a_marker(y, match):
    with pytest.raises(ValueError, match=match):
        unlabelled_mask(y)


@pytest.mark.parametrize(
    "unlabelled", [UNLABELLED, "-1"], ids=["object array with -1", "string array with '-1'"]
)
def test_featurizer_takes_string_labels_with_the_marker(small_breast, unlabelled):
    X, y = small_breast
    names = np.array(["benign", "malignant"])[y].astype(object if unlabelled == -1 else str)
    names[::2] = unlabelled
    F = CAETransferFeaturizer(**SEMI_CAE).fit_transform(X, names)
    assert F.shape[0] == len(X) and np.isfinite(F).all()


@pytest.mark.parametrize(
    "labels, match",
    [
        (
            ["benign"] * 5 + [-1] * 43,
            r"only one class among the 5 labelled images: 'benign'",
        ),
        ([0] * 5 + [-1] * 43, r"only one class among the 5 labelled images: 0\b"),
        ([-1] * 48, "there is no labelled image"),
        (["benign", None] * 24, "holds None at position 1: mark unlabelled images with -1"),
        (["benign", 1] * 24, "mixes numbers and strings"),
    ],
)
def test_featurizer_says_what_is_wrong_with_the_labels(small_breast, labels, match):
    with pytest.raises(ValueError, match=match):
        CAETransferFeaturizer(**SEMI_CAE).fit(small_breast[0], np.array(labels, dtype=object))


# ----------------------------------------------------------- few-label protocol
def test_hide_labels_keeps_a_stratified_fraction():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    hidden = hide_labels(y, 0.1, random_state=3)
    kept = hidden != UNLABELLED
    assert np.bincount(hidden[kept]).tolist() == [5, 3, 2]
    assert (hidden[kept] == y[kept]).all()
    names = hide_labels(np.array(["a", "b"] * 10), 0.2)
    assert names.dtype == object and set(names.tolist()) == {"a", "b", -1}
    with pytest.raises(ValueError, match="already holds -1"):
        hide_labels(hidden, 0.5)


def test_few_labels_fold_scorer_fits_on_every_training_image():
    X, y, _ = _features(n=120)
    seen = []

    class Spy(StandardScaler):
        def fit(self, X, y=None, **params):
            seen.append(np.asarray(y))
            return super().fit(X, y, **params)

    score_fold = few_labels_fold_scorer(
        X, y, 0.1, {"bacc": labelled_scorer("balanced_accuracy")}, random_state=0
    )
    train, test = np.arange(100), np.arange(100, 120)
    result = score_fold(make_pipeline(Spy(), SVC()), train, test)
    assert list(result) == ["10% labels"] and 0 <= result["10% labels"]["bacc"] <= 1
    assert len(seen[0]) == 100 and (seen[0] == UNLABELLED).sum() == 100 - 10


def test_load_and_append_unlabelled_images(tmp_path):
    from PIL import Image

    folder = tmp_path / "unlabelled" / "nested"
    folder.mkdir(parents=True)
    for name in ("b.png", "a.jpg"):
        Image.new("L", (8, 8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    files = load_unlabelled(tmp_path / "unlabelled")
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.jpg", "b.png"]
    X, y = with_unlabelled(["x.png"], np.array(["benign"]), files)
    assert X == ["x.png", *files] and y.tolist() == ["benign", -1, -1]

    np.savez(tmp_path / "more.npz", images=np.zeros((3, 8, 8), np.uint8))
    images = load_unlabelled(tmp_path / "more.npz")
    X, y = with_unlabelled(np.ones((2, 8, 8), np.uint8), [0, 1], images)
    assert X.shape == (5, 8, 8) and y.tolist() == [0, 1, -1, -1, -1]

    with pytest.raises(ValueError, match="both as image files"):
        with_unlabelled(np.ones((2, 8, 8)), [0, 1], files)
    with pytest.raises(ValueError, match="images of one shape"):
        with_unlabelled(np.ones((2, 4, 4)), [0, 1], images)
    with pytest.raises(FileNotFoundError, match="no such folder or file"):
        load_unlabelled(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        load_unlabelled(tmp_path / "empty")


@pytest.mark.parametrize(
    "kwargs, word",
    [({"labelled_fraction": 5.0}, "labelled_fraction"), ({"random_state": -3}, "random_state")],
)
def test_hide_labels_validates_its_own_parameters(kwargs, word):
    from sklearn.utils._param_validation import InvalidParameterError

    from sklearn_cae.semi_supervised import hide_labels

    arguments = {"labelled_fraction": 0.5, "random_state": 0, **kwargs}
    with pytest.raises(InvalidParameterError, match=f"'{word}' parameter of hide_labels"):
        hide_labels([0, 0, 1, 1], **arguments)
