"""Backbones: offline ImageNet weights, layer listing, truncation, weight sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_cae import BackboneFeaturizer, available_layers
from sklearn_cae.backbones import (
    BackboneWeightsUnavailable,
    TappedBackbone,
    default_layer,
    load_backbone,
    truncate,
)
from sklearn_cae.images import preprocess_batch

from .conftest import FAST


def _top5(spec, image: np.ndarray) -> list[int]:
    batch = preprocess_batch(image[np.newaxis], image_size=(224, 224), mean=spec.mean, std=spec.std)
    with torch.inference_mode():
        logits = spec.model.eval()(batch)
    return logits.topk(5).indices[0].tolist()


def test_lite0_imagenet_weights_are_really_loaded():
    skimage_data = pytest.importorskip("skimage.data")
    spec = load_backbone("efficientnet_lite0", "DEFAULT")
    cat = _top5(spec, skimage_data.chelsea())
    espresso = _top5(spec, skimage_data.coffee())
    assert 281 <= cat[0] <= 285, f"chelsea classified as {cat}"
    assert espresso[0] == 967, f"coffee classified as {espresso}"

    untrained = load_backbone("efficientnet_lite0", None)
    assert not torch.equal(untrained.model.conv_stem.weight, spec.model.conv_stem.weight), (
        "weights=None must not load ImageNet weights"
    )


def test_lite0_layers_shallow_to_deep():
    layers = available_layers("efficientnet_lite0")
    assert layers == ["conv_stem", *(f"blocks.{i}" for i in range(7)), "conv_head"]
    assert default_layer("efficientnet_lite0") in layers


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", ["stem", "layer1", "layer2", "layer3", "layer4"]),
        ("resnet50", ["stem", "layer1", "layer2", "layer3", "layer4"]),
        ("densenet121", ["features.conv0", "features.denseblock1"]),
        ("vgg16", ["features.0", "features.30"]),
        ("efficientnet_b0", ["features.0", "features.8"]),
        ("convnext_tiny", ["features.0", "features.7"]),
    ],
)
def test_torchvision_layers(name, expected):
    layers = available_layers(name)
    assert all(layer in layers for layer in expected)
    assert layers.index(expected[0]) < layers.index(expected[-1])
    assert default_layer(name) in layers


def test_truncation_computes_nothing_past_the_deepest_tap():
    spec = load_backbone("efficientnet_lite0", None)
    tapped = truncate(spec, ["blocks.4", "blocks.2"])
    assert isinstance(tapped, TappedBackbone)
    assert tapped.stage_names[-1] == "blocks.4"
    assert all(not p.requires_grad for p in tapped.parameters())
    assert not tapped.training
    maps = tapped(torch.zeros(2, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [112, 40]  # returned in the order asked for


def test_torchvision_backbone_without_weights_and_from_local_file(tmp_path):
    X = np.random.default_rng(0).random((3, 20, 20))
    feat = BackboneFeaturizer("resnet18", weights=None, layer="layer2", **FAST).fit(X)
    assert feat.transform(X).shape == (3, 128)

    torch.manual_seed(1)
    from torchvision.models import resnet18

    reference = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_backbone("resnet18", str(path)).model
    assert torch.equal(loaded.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)


def test_timm_backbone_by_prefix_without_weights():
    layers = available_layers("timm/resnet18")
    assert "layer3" in layers
    X = np.random.default_rng(0).random((2, 20, 20))
    feat = BackboneFeaturizer("timm/resnet18", weights=None, layer="layer3", **FAST)
    assert feat.fit_transform(X).shape == (2, 256)


def test_users_own_module():
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 3, stride=2), nn.ReLU()
    )
    assert available_layers(module)  # FX node names
    X = np.random.default_rng(0).random((3, 16, 16))
    feat = BackboneFeaturizer(module, layer="3", pooling="avgmax", **FAST).fit(X)
    assert feat.transform(X).shape == (3, 10)
    assert module[0].weight.requires_grad, "the user's module must not be modified"


@pytest.mark.parametrize("backbone", ["resnet18", "timm/resnet18"])
def test_download_needed_offline_fails_clearly_at_fit(backbone, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SKLEARN_CAE_OFFLINE", "1")
    feat = BackboneFeaturizer(backbone, weights="DEFAULT", **FAST)
    X = np.zeros((2, 16, 16), dtype=np.uint8)
    with pytest.raises(BackboneWeightsUnavailable, match="weights='/path/to/"):
        feat.fit(X)
    assert not hasattr(feat, "backbone_"), "a failed fit must leave nothing fitted"


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a file"):
        load_backbone("resnet18", str(tmp_path / "nope.pth"))


def test_unknown_backbone_lists_the_options():
    with pytest.raises(ValueError, match="Unknown backbone 'not_a_net'"):
        available_layers("not_a_net")
