"""Transformer backbones: timm ViT/DeiT/ConvNeXt/Swin, torchvision Swin/ViT, hub names."""

from __future__ import annotations

import json
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from torch import nn

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer, available_layers
from sklearn_cae.backbones import default_layer, hierarchical_layers, load_backbone, truncate

from .helpers import FAST, FAST_CAE

VIT = "timm/vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(12, 40, 40), dtype=np.uint8)
    y = np.repeat([0, 1], 6)
    X[y == 1, 10:30, 10:30] = 255  # a learnable difference
    return X, y


def _tokens_to_map(tokens: torch.Tensor, n_prefix: int, side: int) -> torch.Tensor:
    patches = tokens[:, n_prefix:]
    return patches.transpose(1, 2).reshape(len(tokens), -1, side, side)


@pytest.mark.parametrize("backbone", [VIT, "timm/deit_tiny_distilled_patch16_224"])
def test_vit_tokens_become_the_patch_grid(backbone):
    # At 224 px a ViT block's tokens are a 14x14 map; class/distillation tokens dropped.
    spec = load_backbone(backbone, None)
    reference = spec.model
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        tokens = reference.norm_pre(
            reference.patch_drop(reference._pos_embed(reference.patch_embed(x)))
        )
        for block in reference.blocks[:3]:
            tokens = block(tokens)
        expected = _tokens_to_map(tokens, reference.num_prefix_tokens, 14)
        (tapped,) = truncate(spec, ["blocks.2"])(x)
    assert tapped.shape == (2, 192, 14, 14)
    torch.testing.assert_close(tapped, expected)
    assert len(spec.model.blocks) == 3, "blocks past the deepest tap are pruned"


def test_vit_featurizer_at_224_and_at_a_smaller_multiple_of_the_patch(images):
    X, _ = images
    feat = BackboneFeaturizer(VIT, weights=None, layer="blocks.1", image_size=224).fit(X[:2])
    assert feat.map_shapes_ == [(192, 14, 14)]
    small = BackboneFeaturizer(VIT, weights=None, layer=["blocks.3", "blocks.0"], **FAST)
    small.fit(X)
    assert small.map_shapes_ == [(192, 2, 2), (192, 2, 2)]
    features = small.transform(X)
    assert features.shape == (len(X), 384) and np.isfinite(features).all()


def test_swin_nhwc_stages_are_permuted():
    spec = load_backbone("swin_t", None)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = spec.model.features[:4](x).permute(0, 3, 1, 2)  # torchvision: NHWC
        deep, shallow = truncate(spec, ["features.3", "features.1"])(x)
    torch.testing.assert_close(deep, expected)
    assert deep.shape == (1, 192, 8, 8) and shallow.shape == (1, 96, 16, 16)


@pytest.mark.parametrize(
    ("backbone", "image_size"),
    [
        (VIT, 32),
        ("timm/deit_tiny_patch16_224", 32),
        ("timm/convnext_atto", 32),
        ("timm/swin_tiny_patch4_window7_224", 64),
        ("swin_t", 32),
        ("vit_b_16", 224),
    ],
)
def test_every_listed_layer_can_be_tapped(backbone, image_size):
    layers = available_layers(backbone)
    assert default_layer(backbone) in layers
    X = np.zeros((1, image_size, image_size), dtype=np.uint8)
    feat = BackboneFeaturizer(backbone, weights=None, layer=layers, image_size=image_size)
    feat.fit(X)
    for shape in feat.map_shapes_:
        assert len(shape) == 3 and min(shape) >= 1
    assert feat.transform(X).shape == (1, sum(feat.n_channels_))


def test_default_layers_are_stride_16():
    assert default_layer("timm/convnext_atto") == "stages.2"
    assert default_layer("timm/swin_tiny_patch4_window7_224") == "layers.2"
    assert default_layer(VIT) == "blocks.11"
    assert default_layer("swin_t") == "features.5"


def test_stage_chains_default_to_their_deepest_stride_16_stage():
    """Read from the stages' output shapes: the same stage the table gives the Lite names."""
    assert default_layer("timm/efficientnet_lite0") == default_layer("efficientnet_lite0")
    assert default_layer("timm/efficientnet_b1") == "blocks.4"  # 14 px at 224, blocks.5: 7
    assert default_layer("mobilenet_v3_small") == "features.8"  # torchvision, not in the table
    module = load_backbone("timm/efficientnet_b0", weights=None).model
    assert default_layer(module) == "blocks.4"


def test_mobilenet_v3_lists_its_blocks_not_its_pooled_head():
    """timm's MobileNetV3 has a head convolution after global pooling and no bn2."""
    layers = available_layers("timm/mobilenetv3_small_100")
    assert layers[-1] == "blocks.5" and "conv_head" not in layers
    feat = BackboneFeaturizer("timm/mobilenetv3_small_100", weights=None, image_size=64)
    X = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32), dtype=np.uint8)
    assert feat.fit_transform(X).shape[0] == 4


@pytest.mark.parametrize("backbone", ["timm/efficientnet_b0", "timm/convnext_tiny", "timm/vgg16"])
def test_timm_names_get_a_default_layer_of_their_own_model(backbone):
    # torchvision has models of these names, with other layer names ('features.5').
    assert default_layer(backbone) in available_layers(backbone)


def test_default_layer_of_a_timm_name_fits_untrained(images):
    X, _ = images
    feat = BackboneFeaturizer("timm/efficientnet_b0", weights=None, **FAST).fit(X[:2])
    assert feat.layers_ == hierarchical_layers("timm/efficientnet_b0")
    assert feat.layers_[0] == default_layer("timm/efficientnet_b0")
    assert default_layer("timm/convnext_tiny") == "stages.2"  # stride 16, as for atto


def test_fx_listing_keeps_feature_maps_only():
    # A user's module with a classifier: the flatten and linear nodes give no map.
    module = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 2),
    )
    assert available_layers(module) == ["0", "1", "2"]


def test_image_size_that_does_not_suit_the_layer_is_a_clear_error(images):
    X, _ = images
    feat = BackboneFeaturizer(VIT, weights=None, layer="blocks.2", image_size=60)
    with pytest.raises(ValueError, match=r"blocks\.2.*60x60.*divisible by patch size"):
        feat.fit(X)
    assert not hasattr(feat, "backbone_")
    fixed = BackboneFeaturizer("vit_b_16", weights=None, layer="conv_proj", image_size=64)
    with pytest.raises(ValueError, match="takes 224x224 images only"):
        fixed.fit(X[:1])


@pytest.mark.parametrize("featurizer", [BackboneFeaturizer, CAETransferFeaturizer])
def test_grid_search_over_vit_layers(featurizer, images):
    X, y = images
    params = FAST if featurizer is BackboneFeaturizer else FAST_CAE
    pipe = make_pipeline(featurizer(VIT, weights=None, **params), LogisticRegression())
    grid = {
        "backbonefeaturizer__layer"
        if featurizer is BackboneFeaturizer
        else "caetransferfeaturizer__layer": ["blocks.1", "blocks.4"]
    }
    search = GridSearchCV(pipe, grid, cv=2, error_score="raise").fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_[next(iter(grid))] in ("blocks.1", "blocks.4")


def test_cae_on_convnext_and_swin_maps(images):
    X, _ = images
    for backbone, layer, size in [
        ("timm/convnext_atto", "stages.1", 32),
        ("swin_t", "features.3", 64),
    ]:
        params = {**FAST_CAE, "image_size": size}
        cae = CAETransferFeaturizer(backbone, weights=None, layer=layer, **params).fit(X)
        assert cae.transform(X).shape == (len(X), 2 * FAST_CAE["bottleneck"])


@pytest.mark.parametrize(
    ("backbone", "architecture", "suffix", "probe"),
    [
        (VIT, "vit_tiny_patch16_224", ".safetensors", "blocks.0.attn.qkv.weight"),
        ("timm/convnext_atto", "convnext_atto", ".pth", "stages.0.blocks.0.conv_dw.weight"),
    ],
)
def test_timm_weights_from_a_local_file(backbone, architecture, suffix, probe, tmp_path, images):
    import timm

    torch.manual_seed(3)
    reference = timm.create_model(architecture, pretrained=False)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(reference.state_dict(), str(path))
    else:
        torch.save(reference.state_dict(), path)
    X, _ = images
    layer = default_layer(backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete checkpoint loads without a word
        feat = BackboneFeaturizer(backbone, weights=str(path), layer=layer, **FAST).fit(X)
    loaded = feat.backbone_.model.state_dict()[probe]
    torch.testing.assert_close(loaded, reference.state_dict()[probe])


def test_hub_names_build_offline_from_local_files(tmp_path, images):
    import timm

    torch.manual_seed(4)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    from safetensors.torch import save_file

    # A timm-owned repo: its name gives the architecture.
    save_file(reference.state_dict(), str(tmp_path / "model.safetensors"))
    # That repo's head has 21843 classes: a 1000-class head is not loaded, and said so.
    with pytest.warns(UserWarning, match="of another shape in the file, not loaded: head.bias"):
        spec = load_backbone(
            "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k", str(tmp_path / "model.safetensors")
        )
    torch.testing.assert_close(spec.model.cls_token, reference.cls_token)
    assert available_layers("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k")[-1] == "blocks.11"

    # Any repo: config.json (as `hf download --local-dir` writes it) says what to build.
    config = {
        "architecture": "vit_tiny_patch16_224",
        "model_args": {"global_pool": "token"},
        "pretrained_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5], "num_classes": 1000},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = load_backbone("hf-hub:some-lab/pathology-vit", str(tmp_path / "model.safetensors"))
    assert spec.mean == (0.1, 0.2, 0.3)
    torch.testing.assert_close(spec.model.cls_token, reference.cls_token)

    # timm's local-dir: names take the folder's weights by default.
    X, _ = images
    feat = BackboneFeaturizer(f"local-dir:{tmp_path}", layer="blocks.1", **FAST).fit(X)
    assert feat.input_mean_ == (0.1, 0.2, 0.3)
    torch.testing.assert_close(feat.backbone_.model.cls_token, reference.cls_token)
    assert feat.transform(X).shape == (len(X), 192)


def test_default_layer_of_a_hub_repo_whose_config_is_next_to_the_weights(tmp_path, images):
    import timm
    from safetensors.torch import save_file

    # Offline, only the folder of the weights file says what the repo builds.
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    weights = str(tmp_path / "model.safetensors")
    save_file(reference.state_dict(), weights)
    config = {"architecture": "vit_tiny_patch16_224", "pretrained_cfg": {"num_classes": 1000}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    name = "hf-hub:some-lab/pathology-vit"
    X, _ = images
    feat = BackboneFeaturizer(name, weights=weights, **FAST).fit(X[:2])
    assert feat.layers_ == ["blocks.11"]
    assert default_layer(name, load_backbone(name, weights).model) == "blocks.11"


def test_fitted_vit_featurizer_pickles_and_caches(tmp_path, images):
    X, _ = images
    # Unbalanced: the cached featurizer's weights are swapped after its fit below.
    params = {"weights": None, "layer": "blocks.2", "balance_blocks": False, **FAST}
    feat = BackboneFeaturizer(VIT, **params).fit(X)
    expected = feat.transform(X)
    path = tmp_path / "feat.joblib"
    joblib.dump(feat, path)
    np.testing.assert_array_equal(joblib.load(path).transform(X), expected)
    cached = BackboneFeaturizer(VIT, cache=tmp_path / "c", **params)
    cached.fit(X)
    cached.backbone_.load_state_dict(feat.backbone_.state_dict())
    np.testing.assert_array_equal(cached.transform(X), expected)
    np.testing.assert_array_equal(cached.transform(X), expected)  # read from the cache


def test_vit_checkpoint_for_another_image_size_is_resampled(tmp_path):
    import timm

    # A ViT fine-tuned at 384 px: timm's converter resamples its position embedding.
    torch.manual_seed(6)
    at_384 = timm.create_model("vit_tiny_patch16_224", img_size=384)
    path = tmp_path / "vit384.pth"
    torch.save(at_384.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = load_backbone(VIT, str(path))
    assert spec.model.pos_embed.shape == (1, 197, 192)
    torch.testing.assert_close(spec.model.blocks[0].mlp.fc1.weight, at_384.blocks[0].mlp.fc1.weight)
