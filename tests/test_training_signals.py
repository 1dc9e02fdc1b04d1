"""Training signals of the CAE: realistic corruptions (denoising), semi-supervision,
the cheap architecture and its learning-rate schedule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_cae import CAETransferFeaturizer
from sklearn_cae.cae import AutoEncoderNet, ConvAutoEncoder, MapViews
from sklearn_cae.corruptions import corrupt
from sklearn_cae.images import ImageSource

from .helpers import FAST_CAE


# ------------------------------------------------------------------------ corruptions
def _square_images(n: int = 6, size: int = 64) -> torch.Tensor:
    images = torch.full((n, 1, size, size), 0.2)
    images[:, :, 20:36, 28:44] = 0.8
    return images


def test_corrupt_keeps_shape_range_and_is_reproducible():
    images = _square_images()
    first = corrupt(images, torch.Generator().manual_seed(0))
    again = corrupt(images, torch.Generator().manual_seed(0))
    other = corrupt(images, torch.Generator().manual_seed(1))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, images)


def test_corrupt_is_spatially_aligned():
    # Intensity corruptions only: the bright square stays where it was in every image.
    images = _square_images(n=32)
    corrupted = corrupt(images, torch.Generator().manual_seed(0))
    inside = corrupted[:, :, 22:34, 30:42].mean(dim=(1, 2, 3))
    outside = corrupted[:, :, 44:, :].mean(dim=(1, 2, 3))
    assert torch.all(inside > outside)
    correlation = [
        np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
        for a, b in zip(images, corrupted, strict=True)
    ]
    assert min(correlation) > 0.8


# ------------------------------------------------------------------- the auto-encoder
def test_encoder_is_one_context_conv_then_1x1():
    model = ConvAutoEncoder(112, layer_sizes=(64, 32), bottleneck=16)
    kernels = sorted(m.kernel_size[0] for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert kernels == [1, 1, 1, 1, 3, 3]  # first encoder and last decoder conv see 3x3
    reconstruction, code, logits = model(torch.zeros(2, 112, 8, 8))
    assert reconstruction.shape == (2, 112, 8, 8) and code.shape == (2, 16, 8, 8)
    assert logits is None
    _, _, logits = ConvAutoEncoder(112, bottleneck=16, n_classes=3)(torch.zeros(2, 112, 8, 8))
    assert logits.shape == (2, 3)


def test_map_views_draws_inputs_among_views_and_targets_the_clean_maps():
    clean = np.zeros((4, 2, 3, 3), dtype=np.float16)
    corrupted = [np.ones_like(clean)]
    views = MapViews(clean, corrupted, labels=np.array([0, 1, -1, -1]))
    assert len(views) == 4
    torch.manual_seed(0)
    drawn = set()
    for _ in range(20):
        item, label = views[1]
        assert torch.equal(item["targets"], torch.zeros(2, 3, 3, dtype=torch.float16))
        drawn.add(float(item["inputs"].max()))
        assert label == 1
    assert drawn == {0.0, 1.0}
    assert MapViews(clean)[2][1] == -1


def test_supervised_loss_adds_cross_entropy_of_labelled_images_only():
    net = AutoEncoderNet(
        ConvAutoEncoder,
        torch.nn.MSELoss,
        module__in_channels=2,
        module__n_classes=2,
        supervision=2.0,
    ).initialize()
    maps = torch.zeros(3, 2, 4, 4)
    reconstruction, code = torch.zeros_like(maps), torch.zeros(3, 4, 4, 4)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
    X = {"inputs": maps, "targets": maps}
    unlabelled = net.get_loss((reconstruction, code, logits), torch.tensor([-1, -1, -1]), X=X)
    assert float(unlabelled) == 0.0
    loss = net.get_loss((reconstruction, code, logits), torch.tensor([1, -1, -1]), X=X)
    expected = 2.0 * torch.nn.functional.cross_entropy(logits[:1], torch.tensor([1]))
    torch.testing.assert_close(loss, expected)


def test_learning_rate_follows_a_cosine_to_zero(small_breast):
    X, _ = small_breast
    feat = CAETransferFeaturizer(**{**FAST_CAE, "max_epochs": 4, "lr": 0.01}).fit(X)
    lrs = feat.cae_[0].history[:, "event_lr"]
    assert lrs[0] == pytest.approx(0.01)
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert feat.cae_[0].optimizer_.param_groups[0]["lr"] == pytest.approx(0, abs=1e-9)


# --------------------------------------------------------------------------- denoising
def test_corrupted_views_change_the_code_reproducibly(small_breast):
    X, _ = small_breast
    plain = CAETransferFeaturizer(**FAST_CAE).fit_transform(X)
    denoise = CAETransferFeaturizer(**{**FAST_CAE, "corrupted_views": 2}).fit_transform(X)
    again = CAETransferFeaturizer(**{**FAST_CAE, "corrupted_views": 2}).fit_transform(X)
    np.testing.assert_array_equal(denoise, again)
    assert not np.allclose(plain, denoise)


def test_corrupted_views_run_the_backbone_once_more_per_view(small_breast):
    X, _ = small_breast
    feat = CAETransferFeaturizer(**{**FAST_CAE, "corrupted_views": 2})
    seen = []
    original = ImageSource.batches

    def counting(self, *args, **kwargs):
        for raw, unit in original(self, *args, **kwargs):
            seen.append(len(unit))
            yield raw, unit

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ImageSource, "batches", counting)
        feat.fit(X)
    assert sum(seen) == 3 * len(X)  # the clean pass and two corrupted views


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_bad_corrupted_views(small_breast, value):
    with pytest.raises(ValueError, match="corrupted_views"):
        CAETransferFeaturizer(**{**FAST_CAE, "corrupted_views": value}).fit(small_breast[0])


# ---------------------------------------------------------------------- semi-supervision
def _semi(**params):
    return CAETransferFeaturizer(**{**FAST_CAE, "max_epochs": 4, "supervision": 1.0, **params})


def test_supervision_ignores_y_when_zero(small_breast):
    X, y = small_breast
    with_y = CAETransferFeaturizer(**FAST_CAE).fit_transform(X, y)
    without = CAETransferFeaturizer(**FAST_CAE).fit_transform(X)
    np.testing.assert_array_equal(with_y, without)


def test_supervision_uses_labels_and_unlabelled_marker(small_breast):
    X, y = small_breast
    partial = y.copy()
    partial[::2] = -1
    unsupervised = CAETransferFeaturizer(**{**FAST_CAE, "max_epochs": 4}).fit_transform(X)
    semi = _semi().fit_transform(X, partial)
    assert semi.shape == unsupervised.shape
    assert not np.allclose(semi, unsupervised)
    # Only the labelled images count: changing an unlabelled image's hidden label (it
    # stays -1) changes nothing, changing a labelled one does.
    np.testing.assert_array_equal(semi, _semi().fit_transform(X, partial))
    flipped = partial.copy()
    flipped[1] = 1 - flipped[1]
    assert not np.array_equal(semi, _semi().fit_transform(X, flipped))


def test_supervised_training_loss_includes_the_classifier(small_breast):
    X, y = small_breast
    semi = _semi(supervision=5.0).fit(X, y)
    plain = CAETransferFeaturizer(**{**FAST_CAE, "max_epochs": 4}).fit(X)
    # Same seed, same reconstruction part: the first epoch's loss is larger by the
    # cross-entropy term (about 5 * log 2 at the start).
    assert semi.cae_[0].history[0, "train_loss"] > plain.cae_[0].history[0, "train_loss"] + 1
    assert semi.cae_[0].module_.head is not None and plain.cae_[0].module_.head is None


@pytest.mark.parametrize(
    "y, match",
    [
        (None, "needs labels"),
        (np.full(48, -1), "at least two classes"),
        (np.zeros(48, dtype=int), "at least two classes"),
        (np.linspace(0, 1, 48), "at least two classes"),
        (np.zeros((48, 2), dtype=int), "1-D array of 48 labels"),
        (np.zeros(10, dtype=int), "1-D array of 48 labels"),
    ],
)
def test_supervision_bad_labels(small_breast, y, match):
    with pytest.raises(ValueError, match=match):
        _semi().fit(small_breast[0], y)
    with pytest.raises(ValueError, match="supervision"):
        _semi(supervision=-1.0).fit(small_breast[0], small_breast[1])


def test_supervision_accepts_string_labels(small_breast):
    X, y = small_breast
    names = np.array(["benign", "malignant"])[y]
    features = _semi().fit_transform(X, names)
    np.testing.assert_array_equal(features, _semi().fit_transform(X, y))


def test_semi_supervised_in_cross_validate_and_grid_search(small_breast):
    X, y = small_breast
    pipe = make_pipeline(_semi(max_epochs=2), StandardScaler(), SVC())
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_validate(pipe, X, y, cv=cv, scoring="balanced_accuracy", error_score="raise")
    assert np.all(np.isfinite(scores["test_score"]))
    grid = GridSearchCV(
        pipe,
        {"caetransferfeaturizer__supervision": [0.0, 1.0]},
        cv=cv,
        scoring="balanced_accuracy",
        error_score="raise",  # a failing candidate fails the test instead of scoring nan
        return_train_score=True,
    ).fit(X, y)
    folds = np.array([grid.cv_results_[f"split{k}_test_score"] for k in range(3)]).T
    assert np.all(np.isfinite(folds))
    # The search fits what cross_validate fits: the pipeline's own supervision (1.0)
    # scores the same folds alike, so clone and set_params reach the featurizer intact.
    supervised = list(grid.cv_results_["param_caetransferfeaturizer__supervision"]).index(1.0)
    np.testing.assert_allclose(folds[supervised], scores["test_score"])
    # The parameter reaches the featurizer: the candidates do not score alike, and the
    # labels' signal separates the training images better than the codes without it.
    assert not np.array_equal(folds[0], folds[1])
    train = grid.cv_results_["mean_train_score"]
    assert train[supervised] > train[1 - supervised]


def test_frozen_semi_supervised_featurizer_for_the_labelled_subset(small_breast):
    # Fit on every image (most unlabelled), then train classifiers on the few labels
    # without refitting the featurizer.
    X, y = small_breast
    partial = np.full_like(y, -1)
    labelled = np.r_[0:6, 24:30]
    partial[labelled] = y[labelled]
    featurizer = _semi().fit(X, partial)
    before = featurizer.transform(X)
    pipe = make_pipeline(FrozenEstimator(featurizer), StandardScaler(), SVC())
    pipe.fit(X[labelled], y[labelled])
    np.testing.assert_array_equal(featurizer.transform(X), before)
    assert pipe.predict(X).shape == y.shape


# ----------------------------------------------------------------------- CPU threads
def test_cpu_threads_follow_the_size_of_the_work_and_are_restored():
    from sklearn_cae.devices import cpu_threads_for

    before = torch.get_num_threads()
    with cpu_threads_for(torch.device("cpu"), 64 * 8 * 8):
        assert torch.get_num_threads() == 1  # the default CAE's small maps
    assert torch.get_num_threads() == before
    with cpu_threads_for(torch.device("cpu"), 10**9):
        assert torch.get_num_threads() == before  # never more than torch had
    with pytest.raises(RuntimeError), cpu_threads_for(torch.device("cpu"), 1):
        raise RuntimeError("training failed")
    assert torch.get_num_threads() == before


def test_cae_training_runs_with_one_thread_on_small_maps(small_breast):
    seen = []

    class Spy(AutoEncoderNet):
        def fit_loop(self, X, y=None, epochs=None, **fit_params):
            seen.append(torch.get_num_threads())
            return super().fit_loop(X, y, epochs=epochs, **fit_params)

    feat = CAETransferFeaturizer(**FAST_CAE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sklearn_cae.cae.AutoEncoderNet", Spy)
        feat.fit(small_breast[0])
    assert seen == [1]


def test_fit_autoencoder_takes_class_indices_with_gaps():
    from sklearn_cae.cae import fit_autoencoder

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(12, 4, 4, 4)).astype(np.float32)
    labels = np.array([0, 2, 0, 0, -1, -1, 0, 2, -1, -1, -1, -1])  # no image of class 1
    net = fit_autoencoder(
        MapViews(maps, labels=labels),
        layer_sizes=(8,),
        bottleneck=4,
        supervision=1.0,
        max_epochs=1,
        batch_size=6,
    )
    # Balanced over the classes present (4 and 2 images); the absent one never weighs.
    np.testing.assert_allclose(net.class_weight, [0.75, 1.0, 1.5])
    assert net.module_.head.out_features == 3
