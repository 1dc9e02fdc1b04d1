"""The defaults of issue 18: hierarchical taps, balanced blocks, supervision="auto"."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.backbones import hierarchical_layers
from sklearn_cae.pooling import BlockScaler

from .helpers import FAST

# A small CAE at the package's layer and block defaults (FAST_CAE turns the backbone
# blocks off).
SMALL_CAE = {**FAST, "max_epochs": 2, "layer_sizes": (16,), "bottleneck": 8, "random_state": 0}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(24, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def labels():
    return np.tile([0, 1], 12)


def block_variances(features: np.ndarray, widths) -> list[float]:
    edges = np.cumsum([0, *widths])
    return [float(features[:, a:b].var(axis=0).sum()) for a, b in itertools.pairwise(edges)]


# ------------------------------------------------------------------------ layers
def test_hierarchical_layers_are_the_stride_16_and_the_last_stage():
    assert hierarchical_layers("efficientnet_lite0") == ["blocks.4", "blocks.6"]
    assert hierarchical_layers("resnet18") == ["layer3", "layer4"]


def test_backbone_defaults_tap_two_stages_in_balanced_blocks(images):
    feat = BackboneFeaturizer(**FAST)
    features = feat.fit_transform(images)
    assert feat.layers_ == ["blocks.4", "blocks.6"]
    assert features.shape == (24, 112 + 320) and features.dtype == np.float32
    names = feat.get_feature_names_out()
    assert names[0] == "blocks.4_avg_0" and names[112] == "blocks.6_avg_0"
    # Each block has total variance 1 on the training images: neither drowns the other.
    np.testing.assert_allclose(block_variances(features, [112, 320]), 1, rtol=1e-3)
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(feat.transform(images), features, rtol=1e-4, atol=1e-5)


def test_balance_blocks_false_gives_the_raw_pooled_maps(images):
    raw = BackboneFeaturizer(**FAST, balance_blocks=False).fit(images)
    assert raw.block_scaler_ is None
    maps = raw.backbone_maps(images[:4])
    pooled = np.hstack([m.mean(axis=(2, 3)) for m in maps])
    np.testing.assert_allclose(raw.transform(images[:4]), pooled, rtol=1e-5, atol=1e-6)
    balanced = BackboneFeaturizer(**FAST).fit(images)
    expected = balanced.block_scaler_.transform(raw.transform(images))
    np.testing.assert_allclose(balanced.transform(images), expected, rtol=1e-5, atol=1e-5)


def test_one_layer_and_grid_search_over_layer_lists_still_work(images, labels):
    one = BackboneFeaturizer(**FAST, layer="blocks.4").fit(images)
    assert one.layers_ == ["blocks.4"] and one.transform(images).shape == (24, 112)
    search = GridSearchCV(
        Pipeline([("feat", BackboneFeaturizer(**FAST)), ("clf", SVC())]),
        {"feat__layer": ["blocks.4", ["blocks.4", "blocks.6"], None]},
        cv=2,
    ).fit(images, labels)
    assert search.best_params_["feat__layer"] in ("blocks.4", ["blocks.4", "blocks.6"], None)


def test_cae_defaults_hold_the_backbone_defaults_beside_the_code(images):
    cae = CAETransferFeaturizer(**SMALL_CAE)
    features = cae.fit_transform(images)
    assert cae.layers_ == ["blocks.4", "blocks.6"] and cae.code_layers_ == ["blocks.4"]
    assert len(cae.cae_) == 1 and len(cae.reconstruct(images[:2])) == 1
    names = cae.get_feature_names_out()
    assert features.shape == (24, 8 + 112 + 320) == (24, len(names))
    assert [names[0], names[8], names[120]] == [
        "blocks.4_code_avg_0",
        "blocks.4_avg_0",
        "blocks.6_avg_0",
    ]
    live = features[:, :8].var(axis=0) > 0  # ReLU codes may have dead channels
    assert block_variances(features, [8, 112, 320])[1:] == pytest.approx([1, 1], rel=1e-3)
    assert block_variances(features[:, :8][:, live], [live.sum()])[0] <= 1 + 1e-3
    # The backbone blocks are BackboneFeaturizer()'s (up to the float16 maps' rounding).
    backbone = BackboneFeaturizer(**FAST).fit_transform(images)
    np.testing.assert_allclose(features[:, 8:], backbone, atol=0.02)
    np.testing.assert_allclose(cae.transform(images), features, atol=1e-4)


def test_cae_without_backbone_blocks_taps_only_its_layer(images):
    cae = CAETransferFeaturizer(**SMALL_CAE, include_backbone=False).fit(images)
    assert cae.layers_ == cae.code_layers_ == ["blocks.4"]
    two = CAETransferFeaturizer(**SMALL_CAE, layer=["blocks.3", "blocks.4"]).fit(images)
    assert two.code_layers_ == two.layers_ == ["blocks.3", "blocks.4"] and len(two.cae_) == 2


# ------------------------------------------------------------------- supervision
@pytest.mark.parametrize(
    ("y", "expected"),
    [
        (None, 0.0),
        ("semi", 1.0),  # labels with -1 for the unlabelled
        ("full", 0.0),  # every image labelled: the classifier has the labels
        ("continuous", 0.0),  # not class labels: ignored
        ("one class", 0.0),
    ],
)
def test_supervision_auto_uses_labels_when_some_images_are_unlabelled(images, labels, y, expected):
    targets = {
        None: None,
        "semi": np.where(np.arange(24) % 3 == 0, labels, -1),
        "full": labels,
        "continuous": np.linspace(0, 1, 24),
        "one class": np.where(np.arange(24) < 4, 0, -1),
    }[y]
    cae = CAETransferFeaturizer(**SMALL_CAE, corrupted_views=0).fit(images, targets)
    assert cae.supervision_ == expected
    assert (cae.cae_[0].module_.head is not None) == bool(expected)


def test_explicit_supervision_zero_ignores_labels(images, labels):
    cae = CAETransferFeaturizer(**SMALL_CAE, supervision=0.0, corrupted_views=0)
    cae.fit(images, labels)
    assert cae.supervision_ == 0.0 and cae.cae_[0].module_.head is None


def test_label_smoothing_reaches_the_loss(images, labels):
    cae = CAETransferFeaturizer(
        **SMALL_CAE, corrupted_views=0, supervision=1.0, cae_params={"label_smoothing": 0.5}
    ).fit(images, labels)
    assert cae.cae_[0].label_smoothing == 0.5


# -------------------------------------------------------------------- BlockScaler
def test_block_scaler_gives_each_block_unit_total_variance():
    X = np.random.default_rng(0).normal(3, 5, size=(200, 7)).astype(np.float32)
    scaler = BlockScaler([2, 5]).fit(X)
    Z = scaler.transform(X)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(block_variances(Z, [2, 5]), 1, rtol=1e-4)
    np.testing.assert_allclose(BlockScaler().fit_transform(X).var(axis=0).sum(), 1, rtol=1e-4)
    with pytest.raises(ValueError, match="adding up to the 7 features"):
        BlockScaler([2, 4]).fit(X)


# -------------------------------------------------------------------- persistence
def test_unbalanced_single_code_model_round_trips_through_pickle(images):
    # 0.1 is unreleased: pickles of earlier development states need not load.
    cae = CAETransferFeaturizer(**SMALL_CAE, include_backbone=False, balance_blocks=False)
    cae.fit(images)
    restored = pickle.loads(pickle.dumps(cae))
    assert restored.code_layers_ == ["blocks.4"] and restored.block_scaler_ is None
    np.testing.assert_array_equal(restored.transform(images[:3]), cae.transform(images[:3]))


@pytest.mark.parametrize(
    "y, expected",
    [
        (np.array([0, 1, -1, -1]), 1.0),
        (np.array(["a", "b", "-1", "-1"]), 1.0),
        (np.array(["a", "b", -1, -1], dtype=object), 1.0),
        (np.array([0.0, 1.0, -1.0, -1.0]), 1.0),
        (np.array(["a", "b", "a", "b"]), 0.0),  # every image labelled
        (np.array([0, 0, -1, -1]), 0.0),  # a single labelled class
        (None, 0.0),
    ],
)
def test_auto_supervision_reads_the_unlabelled_marker_of_any_label_kind(y, expected):
    assert CAETransferFeaturizer()._supervision_weight(y) == expected


def test_hidden_float_labels_stay_numeric():
    from sklearn_cae.semi_supervised import hide_labels

    hidden = hide_labels(np.array([0.0, 0, 0, 0, 1, 1, 1, 1]), 0.5)
    assert hidden.dtype.kind == "f" and (hidden == -1).sum() == 4
