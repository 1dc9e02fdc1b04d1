"""sklearn_cae.plotting: each figure is drawn from a real fitted featurizer."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from sklearn_cae import CAETransferFeaturizer  # noqa: E402
from sklearn_cae.plotting import (  # noqa: E402
    plot_embedding,
    plot_loss_curves,
    plot_reconstructions,
    reconstruct_feature_maps,
)

from .helpers import FAST_CAE  # noqa: E402


@pytest.fixture(scope="module")
def fitted(small_breast):
    X, y = small_breast
    params = {**FAST_CAE, "image_size": 64, "layer": "blocks.2", "max_epochs": 3}
    params["validation_fraction"] = 0.2  # a held-out loss curve to plot
    return CAETransferFeaturizer(**params).fit(X), X, y


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_reconstructions_match_the_training_maps(fitted):
    featurizer, X, _ = fitted
    maps, reconstructions = reconstruct_feature_maps(featurizer, X[:4], layer="blocks.2")
    assert maps.shape == reconstructions.shape == (4, *featurizer.map_shapes_[0])
    # Standardised with the training statistics: roughly zero mean, unit spread.
    assert abs(maps.mean()) < 0.5 and 0.3 < maps.std() < 3
    # The trained auto-encoder reconstructs better than predicting zeros (the mean map).
    assert ((maps - reconstructions) ** 2).mean() < (maps**2).mean()


def test_plot_reconstructions_draws_a_grid(fitted):
    featurizer, X, _ = fitted
    fig = plot_reconstructions(featurizer, X[:3], n_channels=2)
    assert len(fig.axes) == 3 * (1 + 2 * 2)
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles[0] == "input" and titles[1].startswith("map") and titles[2].startswith("recon")
    assert fig.axes[0].get_ylabel().startswith("MSE")
    fig.canvas.draw()


def test_plot_reconstructions_rejects_an_unknown_layer(fitted):
    featurizer, X, _ = fitted
    with pytest.raises(ValueError, match="has no CAE"):
        plot_reconstructions(featurizer, X[:2], layer="blocks.5")
    with pytest.raises(ValueError, match="index"):
        plot_reconstructions(featurizer, X[:2], layer=3)
    with pytest.raises(ValueError, match="index"):  # a bool is not an index
        plot_reconstructions(featurizer, X[:2], layer=True)


def test_plot_embedding_colours_each_class(fitted):
    featurizer, X, y = fitted
    features = featurizer.transform(X)
    ax = plot_embedding(features, y, class_names=["malignant", "benign"])
    assert len(ax.collections) == 2
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == [f"malignant ({(y == 0).sum()})", f"benign ({(y == 1).sum()})"]
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert offsets.shape == (len(X), 2) and np.isfinite(offsets).all()


def test_plot_embedding_pca_on_given_axes_and_bad_input(fitted):
    featurizer, X, y = fitted
    _, ax = plt.subplots()
    assert plot_embedding(featurizer.transform(X), y, method="pca", ax=ax) is ax
    with pytest.raises(ValueError, match="method"):
        plot_embedding(np.ones((5, 2)), np.arange(5), method="mds")
    with pytest.raises(ValueError, match="one row per label"):
        plot_embedding(np.ones((5, 2)), np.arange(4))


def test_plot_loss_curves_from_featurizer_pipeline_and_net(fitted):
    featurizer, X, y = fitted
    ax = plot_loss_curves(featurizer)
    train, valid = ax.get_lines()[:2]
    history = featurizer.cae_[0].history
    np.testing.assert_allclose(train.get_ydata(), history[:, "train_loss"])
    np.testing.assert_allclose(valid.get_ydata(), history[:, "valid_loss"])
    assert len(train.get_xdata()) == len(history)
    pipe = make_pipeline(featurizer, SVC()).fit(X, y)
    assert len(plot_loss_curves(pipe).get_lines()) == 3  # train, valid, best-epoch star
    assert len(plot_loss_curves(featurizer.cae_[0], log_scale=True).get_lines()) == 3


def test_plot_loss_curves_needs_a_fitted_featurizer():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        plot_loss_curves(CAETransferFeaturizer())


def test_plot_reconstructions_of_image_files(covid_root):
    paths = sorted((covid_root / "images" / "val" / "Covid").glob("*"))[:2]
    featurizer = CAETransferFeaturizer(**FAST_CAE).fit(paths)
    fig = plot_reconstructions(featurizer, paths, n_channels=1)
    assert len(fig.axes) == 2 * 3
    shown = fig.axes[0].get_images()[0].get_array()
    from sklearn_cae.images import read_image

    assert shown.shape[:2] == read_image(paths[0]).shape[:2]
    assert 0 <= shown.min() and shown.max() <= 1


def _flip(X):
    return np.asarray(X)[:, ::-1]


def test_reconstructions_accept_pipelines_searches_and_wrappers(fitted):
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import FunctionTransformer

    featurizer, X, y = fitted
    expected = reconstruct_feature_maps(featurizer, _flip(X[:3]))
    # The steps before the featurizer run on X, as the pipeline's predict would.
    pipe = make_pipeline(FunctionTransformer(_flip), FrozenEstimator(featurizer), SVC())
    pipe.fit(X, y)
    search = GridSearchCV(pipe, {"svc__C": [1.0]}, cv=2).fit(X, y)
    for estimator, X_in in [
        (pipe, X[:3]),
        (search, X[:3]),
        (FrozenEstimator(featurizer), _flip(X[:3])),
    ]:
        maps, reconstructions = reconstruct_feature_maps(estimator, X_in)
        np.testing.assert_allclose(maps, expected[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(reconstructions, expected[1], rtol=1e-5, atol=1e-5)
    fig = plot_reconstructions(pipe, X[:2], n_channels=1)
    assert len(fig.axes) == 2 * 3
    assert fig.get_suptitle().endswith("blocks.2 feature maps")
    assert len(plot_loss_curves(search).get_lines()) == 3


def test_plotting_needs_a_fitted_featurizer_inside(fitted):
    from sklearn.exceptions import NotFittedError
    from sklearn.preprocessing import StandardScaler

    _, X, y = fitted
    with pytest.raises(NotFittedError):
        plot_reconstructions(make_pipeline(CAETransferFeaturizer(), SVC()), X[:2])
    scaler_only = make_pipeline(StandardScaler(), SVC()).fit(X.reshape(len(X), -1), y)
    with pytest.raises(TypeError, match="holding one"):
        reconstruct_feature_maps(scaler_only, X[:2])
    with pytest.raises(TypeError, match="holding one"):
        plot_loss_curves(scaler_only)
