"""CAETransferFeaturizer and BackboneFeaturizer: outputs, training, params, state."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer

from .helpers import FAST, FAST_CAE


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(24, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def fitted(images):
    return CAETransferFeaturizer(**FAST_CAE).fit(images)


def test_output_shape_dtype_and_names(fitted, images):
    features = fitted.transform(images)
    assert features.dtype == np.float32
    assert features.shape == (24, 2 * 8)  # avgmax of an 8-channel code
    names = fitted.get_feature_names_out()
    assert len(names) == features.shape[1]
    assert names[0] == "blocks.4_code_avg_0" and names[-1] == "blocks.4_code_max_7"
    assert np.all(np.isfinite(features))


def test_default_features_are_code_then_pooled_backbone_maps(images):
    feat = CAETransferFeaturizer(**{**FAST_CAE, "pooling": "avg", "include_backbone": True})
    features = feat.fit_transform(images)
    names = feat.get_feature_names_out()
    assert features.shape == (len(images), 8 + 112 + 320) == (len(images), len(names))
    assert names[0] == "blocks.4_code_avg_0" and names[8] == "blocks.4_avg_0"
    assert names[120] == "blocks.6_avg_0"
    # The backbone part is the pooled, standardised map: zero mean over the training set.
    np.testing.assert_allclose(features[:, 8:].mean(axis=0), 0, atol=0.1)


def test_fitted_attributes(fitted):
    assert fitted.layers_ == ["blocks.4"]
    assert fitted.backbone_.stage_names[-1] == "blocks.4", "backbone not truncated"
    assert not any(p.requires_grad for p in fitted.backbone_.parameters())
    assert fitted.map_mean_[0].shape == (fitted.n_channels_[0],)
    assert fitted.n_input_channels_ == 1
    assert len(fitted.cae_[0].history) == 2


def test_cae_learns_to_reconstruct(images):
    feat = CAETransferFeaturizer(**{**FAST_CAE, "max_epochs": 8, "patience": None}).fit(images)
    losses = feat.cae_[0].history[:, "train_loss"]
    assert losses[-1] < 0.8 * losses[0]


def test_sparsity_penalty_makes_codes_sparser(images):
    from sklearn_cae.plotting import reconstruct_feature_maps

    def fraction_zero(sparsity):
        params = {**FAST_CAE, "max_epochs": 10, "lr": 0.01, "sparsity": sparsity}
        params["corrupted_views"] = 0  # the clean maps' codes, which transform sees
        feat = CAETransferFeaturizer(**params).fit(images)
        maps = torch.from_numpy(reconstruct_feature_maps(feat, images)[0])
        with torch.inference_mode():
            return (feat.cae_[0].module_.encode(maps) == 0).float().mean().item()

    assert fraction_zero(1.0) > fraction_zero(0.0) + 0.2


def test_sparsity_penalty_is_part_of_the_loss(images):
    plain = CAETransferFeaturizer(**{**FAST_CAE, "sparsity": 0.0}).fit(images)
    sparse = CAETransferFeaturizer(**{**FAST_CAE, "sparsity": 10.0}).fit(images)
    assert sparse.cae_[0].sparsity == 10.0
    # Same seed, same first batch order: the penalty can only add to the first loss.
    first = (plain.cae_[0].history[0, "train_loss"], sparse.cae_[0].history[0, "train_loss"])
    assert first[1] > first[0]


def test_same_random_state_same_features(images):
    a = CAETransferFeaturizer(**FAST_CAE).fit(images).transform(images)
    b = CAETransferFeaturizer(**FAST_CAE).fit(images).transform(images)
    c = CAETransferFeaturizer(**{**FAST_CAE, "random_state": 1}).fit(images).transform(images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fit_transform_equals_fit_then_transform(images):
    feat = CAETransferFeaturizer(**FAST_CAE)
    np.testing.assert_allclose(feat.fit_transform(images), feat.transform(images), atol=1e-5)


def test_y_is_ignored_without_supervision_and_used_by_default(images):
    y = np.arange(len(images)) % 2
    unsupervised = {**FAST_CAE, "supervision": 0.0}
    a = CAETransferFeaturizer(**unsupervised).fit(images, y).transform(images)
    b = CAETransferFeaturizer(**unsupervised).fit(images).transform(images)
    np.testing.assert_array_equal(a, b)
    # "auto": labels are used when some images are unlabelled (y == -1) only.
    c = CAETransferFeaturizer(**FAST_CAE).fit(images, y).transform(images)
    np.testing.assert_array_equal(b, c)
    y[::3] = -1
    d = CAETransferFeaturizer(**FAST_CAE).fit(images, y).transform(images)
    assert not np.allclose(b, d)


@pytest.mark.parametrize(("pooling", "per_channel"), [("avg", 1), ("max", 1), ("spp", 5)])
def test_poolings(images, pooling, per_channel):
    feat = CAETransferFeaturizer(**{**FAST_CAE, "pooling": pooling})
    features = feat.fit_transform(images)
    assert features.shape == (len(images), 8 * per_channel)
    assert len(feat.get_feature_names_out()) == features.shape[1]


def test_several_layers_give_one_cae_each(images):
    feat = CAETransferFeaturizer(**{**FAST_CAE, "layer": ["blocks.2", "blocks.4"]})
    features = feat.fit_transform(images)
    assert isinstance(feat.cae_, list) and len(feat.cae_) == 2
    assert features.shape == (len(images), 2 * 2 * 8)
    assert feat.get_feature_names_out()[-1].startswith("blocks.4_code")


def test_user_callbacks_and_cae_params_reach_skorch(images):
    class CountEpochs(Callback):
        def __init__(self):
            self.epochs = 0

        def on_epoch_end(self, net, **kwargs):
            self.epochs += 1

    counter = CountEpochs()
    feat = CAETransferFeaturizer(
        **FAST_CAE,
        callbacks=[("count", counter)],
        cae_params={"optimizer": torch.optim.SGD, "optimizer__momentum": 0.5},
    ).fit(images)
    trained_counter = dict(feat.cae_[0].callbacks_)["count"]
    assert trained_counter.epochs == 2
    assert isinstance(feat.cae_[0].optimizer_, torch.optim.SGD)
    assert feat.cae_[0].optimizer_.defaults["momentum"] == 0.5


def test_early_stopping_uses_held_out_maps():
    X = np.random.default_rng(1).integers(0, 256, size=(60, 28, 28), dtype=np.uint8)
    feat = CAETransferFeaturizer(
        **{**FAST_CAE, "max_epochs": 40, "patience": 1, "lr": 0.05, "validation_fraction": 0.1}
    )
    feat.fit(X)
    history = feat.cae_[0].history
    assert "valid_loss" in history[-1]
    assert len(history) < 40, "early stopping never triggered"


def test_rgb_input_and_channel_mismatch(images):
    rgb = np.repeat(images[..., np.newaxis], 3, axis=-1)
    feat = CAETransferFeaturizer(**FAST_CAE).fit(rgb)
    assert feat.n_input_channels_ == 3
    # Grey replicated to RGB is the same image to the backbone: same features.
    np.testing.assert_array_equal(feat.transform(images), feat.transform(rgb))
    feat.set_params(channels="strict")
    with pytest.raises(ValueError, match="fitted on 3-channel images"):
        feat.transform(images)


def test_pickle_round_trip(fitted, images):
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(images), fitted.transform(images))


def test_backbone_featurizer(images):
    feat = BackboneFeaturizer(layer=["blocks.2", "blocks.4"], pooling="avgmax", **FAST)
    features = feat.fit_transform(images)
    assert features.shape == (len(images), 2 * (40 + 112))
    assert features.dtype == np.float32
    assert len(feat.get_feature_names_out()) == features.shape[1]


def test_pandas_output(fitted, images):
    pytest.importorskip("pandas")
    frame = CAETransferFeaturizer(**FAST_CAE).set_output(transform="pandas").fit_transform(images)
    assert list(frame.columns) == list(fitted.get_feature_names_out())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bottleneck": -1}, r"'bottleneck' parameter .* must be an int in the range \[1, inf\)"),
        ({"layer_sizes": (16, 0)}, "layer_sizes"),
        ({"layer_sizes": "16"}, r"'layer_sizes' parameter"),
        ({"backbone": "no_such_net"}, "Unknown backbone"),
        ({"layer": "blocks.99"}, r"Unknown layer 'blocks.99'.*Valid layers: \['conv_stem'"),
        ({"pooling": "median"}, r"'pooling' parameter .* must be a str among"),
        ({"image_size": 0}, "image_size"),
        ({"device": "gpu0"}, "device must be"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"lr": -1.0}, r"'lr' parameter .* must be a float in the range \(0(\.0)?, inf\)"),
        ({"sparsity": -0.1}, r"'sparsity' parameter"),
        ({"verbose": "loud"}, r"'verbose' parameter"),
        ({"callbacks": "checkpoint"}, r"'callbacks' parameter"),
        ({"cae_params": [("lr", 1)]}, r"'cae_params' parameter"),
        ({"random_state": "seed"}, r"'random_state' parameter"),
        ({"validation_fraction": 1.5}, "validation_fraction"),
    ],
)
def test_bad_parameters_fail_at_fit_and_leave_nothing_fitted(fitted, images, params, message):
    import copy

    feat = copy.deepcopy(fitted).set_params(**params)
    with pytest.raises(ValueError, match=message):
        feat.fit(images)
    assert not hasattr(feat, "cae_") and not hasattr(feat, "backbone_")


@pytest.mark.parametrize(
    "params", [{"random_state": "seed"}, {"verbose": "loud"}, {"callbacks": "checkpoint"}]
)
def test_bad_parameters_fail_before_the_backbone_runs(images, params, monkeypatch):
    import sklearn_cae.featurizer as featurizer

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the parameters were checked")

    monkeypatch.setattr(featurizer, "load_backbone", no_backbone)
    with pytest.raises(ValueError, match="parameter of CAETransferFeaturizer"):
        CAETransferFeaturizer(**{**FAST_CAE, **params}).fit(images)


def test_fit_transform_takes_no_unknown_arguments(fitted, images):
    with pytest.raises(TypeError, match="sample_weight"):
        CAETransferFeaturizer(**FAST_CAE).fit_transform(images, sample_weight=np.ones(24))
    with pytest.raises(TypeError, match="sample_weight"):
        BackboneFeaturizer(**FAST).fit_transform(images, sample_weight=np.ones(24))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error(images):
    with pytest.raises(ValueError, match="CUDA is not available"):
        CAETransferFeaturizer(**FAST_CAE, device="cuda").fit(images)


def test_nan_loss_is_a_clear_error(images):
    feat = CAETransferFeaturizer(**{**FAST_CAE, "lr": 1e20, "max_epochs": 3})
    with pytest.raises(ValueError, match="NaN or infinite"):
        feat.fit(images)
    assert not hasattr(feat, "cae_")


@pytest.mark.gpu
def test_fitted_on_gpu_transforms_on_cpu(images):
    feat = CAETransferFeaturizer(**FAST_CAE, device="cuda").fit(images)
    on_gpu = feat.transform(images)
    restored = pickle.loads(pickle.dumps(feat)).set_params(device="cpu")
    np.testing.assert_allclose(restored.transform(images), on_gpu, atol=0.1)


# ------------------------------------------------------------------ public maps API
def test_backbone_maps_are_what_the_features_pool(images):
    layers = ["blocks.3", "blocks.4"]
    backbone = BackboneFeaturizer(**FAST, layer=layers, balance_blocks=False).fit(images)
    maps = backbone.backbone_maps(images[:5])
    assert [m.shape[1:] for m in maps] == backbone.map_shapes_
    pooled = np.hstack([m.mean(axis=(2, 3)) for m in maps])
    np.testing.assert_allclose(pooled, backbone.transform(images[:5]), rtol=1e-5, atol=1e-6)

    cae = CAETransferFeaturizer(
        **{**FAST_CAE, "include_backbone": True, "pooling": "avg", "balance_blocks": False}
    )
    cae.fit(images)
    raw = cae.backbone_maps(images[:5], standardized=False)[0]
    np.testing.assert_array_equal(
        raw, BackboneFeaturizer(**FAST).fit(images).backbone_maps(images[:5])[0]
    )
    standardized = cae.backbone_maps(images[:5])[0]
    expected = (raw - cae.map_mean_[0][:, None, None]) / cae.map_std_[0][:, None, None]
    np.testing.assert_allclose(standardized, expected, atol=2e-3 * np.abs(expected).max())
    # The transform's backbone part is the average of the standardised maps.
    n_code = cae.bottleneck
    np.testing.assert_allclose(
        cae.transform(images[:5])[:, n_code : n_code + 112],
        standardized.mean(axis=(2, 3)),
        atol=1e-5,
    )


def test_reconstruct_is_the_autoencoder_output(fitted, images):
    maps = fitted.backbone_maps(images[:3])
    reconstructions = fitted.reconstruct(images[:3])
    assert len(reconstructions) == len(fitted.layers_) == len(fitted.cae_)
    assert reconstructions[0].shape == maps[0].shape and reconstructions[0].dtype == np.float32
    with torch.inference_mode():
        expected = fitted.cae_[0].module_(torch.from_numpy(maps[0]))[0].numpy()
    np.testing.assert_allclose(reconstructions[0], expected, rtol=1e-5, atol=1e-5)
    # One backbone pass for both: the same maps as backbone_maps gives.
    same_maps, same_reconstructions = fitted.reconstruct(images[:3], return_maps=True)
    np.testing.assert_array_equal(same_maps[0], maps[0])
    np.testing.assert_array_equal(same_reconstructions[0], reconstructions[0])


def test_maps_api_needs_a_fitted_featurizer(images):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CAETransferFeaturizer(**FAST_CAE).reconstruct(images)
    with pytest.raises(NotFittedError):
        BackboneFeaturizer(**FAST).backbone_maps(images)


@pytest.mark.parametrize(
    "featurizer",
    [BackboneFeaturizer(**FAST), CAETransferFeaturizer(**FAST_CAE)],
    ids=["BackboneFeaturizer", "CAETransferFeaturizer"],
)
def test_every_parameter_is_declared_and_checked(featurizer):
    """scikit-learn's own check: each parameter has a constraint that fit enforces."""
    from sklearn.utils.estimator_checks import check_param_validation

    check_param_validation(type(featurizer).__name__, featurizer)


@pytest.mark.parametrize("cls", [BackboneFeaturizer, CAETransferFeaturizer])
def test_docstring_documents_every_parameter_in_order(cls):
    """The shared entries filled in from one source land where the signature has them."""
    import inspect
    import re

    doc = cls.__doc__
    section = doc[doc.index("Parameters\n") : doc.index("Attributes\n")]
    documented = re.findall(r"^    (\w+) : ", section, flags=re.MULTILINE)
    assert documented == list(inspect.signature(cls).parameters)
    assert "{" + "backbone}" not in doc and "{{" not in doc  # every field was filled in


@pytest.mark.parametrize(
    "param", ["batch_size", "bottleneck", "corrupted_views", "max_epochs", "patience"]
)
def test_int_parameters_refuse_bools(param):
    # scikit-learn's Interval(Integral, ...) would take True as 1.
    with pytest.raises(ValueError, match=f"'{param}' parameter"):
        CAETransferFeaturizer(**{param: True}).fit(np.zeros((4, 16, 16), np.uint8))


def test_layer_sizes_refuse_bools():
    with pytest.raises(ValueError, match="layer_sizes must be a positive int"):
        CAETransferFeaturizer(layer_sizes=(16, True)).fit(np.zeros((4, 16, 16), np.uint8))


def test_training_maps_are_memory_mapped_without_a_cache():
    # Memory bounded by design: the CAE's training maps live in a mapped temporary file
    # whatever the number of images, not in an array that grows with it.
    array = CAETransferFeaturizer()._map_array((64, 8, 4, 4))
    assert isinstance(array, np.memmap) and array.dtype == np.float16
