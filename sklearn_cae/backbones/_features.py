"""Tapping a backbone: the layers it lists and the truncated module that returns them.

Three ways in, by model:

* a chain of named stages (:func:`stage_chain`: known CNNs, torchvision's Swin and
  ViT), run up to the deepest tapped stage by :class:`TappedBackbone`;
* timm's feature API (``feature_info``, ``prune_intermediate_layers``,
  ``forward_intermediates``) for the other timm models;
* torch.fx for anything else: the graph nodes whose output is a feature map.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
from torch import nn

from .._utils import error_reason
from ._builder import DEFAULT_BACKBONE, meta_model
from ._weights import short_list

if TYPE_CHECKING:
    from ._builder import LoadedBackbone

__all__ = [
    "LISTING_SIZE",
    "TappedBackbone",
    "available_layers",
    "call_on_meta",
    "has_timm_features",
    "layers_of_model",
    "stage_chain",
    "stage_layout",
    "truncate",
]

#: The size at which layers of a module are listed (the ImageNet training size).
LISTING_SIZE = 224


# ----------------------------------------------------------------- stage chains


def _to_map(x: torch.Tensor, layout: str, grid: tuple[int, int]) -> torch.Tensor:
    """Return an (n, C, H, W) view of a stage output in ``layout``."""
    if layout == "NHWC":
        return x.permute(0, 3, 1, 2)
    if layout == "tokens":
        # (n, prefix + H*W, C): drop the class/register tokens in front of the patches.
        h, w = grid
        patches = x[:, x.shape[1] - h * w :]
        return patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
    return x


class TappedBackbone(nn.Module):
    """Run a chain of named stages up to the deepest tap; return the tapped maps.

    Parameters
    ----------
    stages : list of (str, nn.Module)
        The network as a chain of named stages, shallow to deep.
    taps : list of str
        Names of the stages whose outputs are returned, in this order.
    layout : {"NCHW", "NHWC", "tokens"}, default="NCHW"
        Layout of the stage outputs; returned maps are always (n, C, H, W).
    patch_size : int, default=1
        Patch size of a token layout: the token grid is the input size over it.
    """

    def __init__(
        self,
        stages: list[tuple[str, nn.Module]],
        taps: list[str],
        layout: str = "NCHW",
        patch_size: int = 1,
    ):
        super().__init__()
        names = [name for name, _ in stages]
        deepest = max(names.index(tap) for tap in taps)
        self.stage_names = names[: deepest + 1]
        self.stages = nn.ModuleList(module for _, module in stages[: deepest + 1])
        self.taps = list(taps)
        self.layout = layout
        self.patch_size = int(patch_size)

    def up_to(self, taps: list[str]) -> TappedBackbone:
        """A backbone tapping only ``taps`` that shares this one's stages (no copy), so
        that it stops at the deepest of them."""
        stages = list(zip(self.stage_names, self.stages, strict=True))
        return TappedBackbone(stages, taps, self.layout, self.patch_size).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        tapped = {}
        for name, stage in zip(self.stage_names, self.stages, strict=True):
            x = stage(x)
            if name in self.taps:
                tapped[name] = _to_map(x, self.layout, grid)
        return [tapped[tap] for tap in self.taps]


class _TorchvisionViTEmbedding(nn.Module):
    """torchvision ViT input stage: patches, class token and position embedding."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout
        self.image_size = int(vit.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            size = self.image_size
            raise ValueError(
                f"torchvision's vision transformer takes {size}x{size} images only (its "
                f"position embedding is fixed), got {x.shape[-2]}x{x.shape[-1]}: use "
                f"image_size={size}, or a timm ViT ('timm/vit_base_patch16_224'), which "
                "takes any multiple of its patch size."
            )
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.dropout(tokens + self.pos_embedding)


def stage_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """Split well-known architectures into a chain of named stages (None: unknown)."""
    import torchvision

    blocks = getattr(model, "blocks", None)
    if hasattr(model, "conv_stem") and isinstance(blocks, nn.Sequential):
        # timm EfficientNet / MobileNet family.
        stages = [("conv_stem", nn.Sequential(model.conv_stem, model.bn1))]
        stages += [(f"blocks.{i}", block) for i, block in enumerate(blocks)]
        # EfficientNet's head convolution sees the last maps; MobileNetV3's (no bn2) comes
        # after the global pooling, so it is no stage of maps.
        if hasattr(model, "conv_head") and hasattr(model, "bn2"):
            stages.append(("conv_head", nn.Sequential(model.conv_head, model.bn2)))
        return stages
    if isinstance(model, torchvision.models.ResNet):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        return [("stem", stem)] + [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    if isinstance(model, torchvision.models.VisionTransformer):
        layers = model.encoder.layers.named_children()
        return [("conv_proj", _TorchvisionViTEmbedding(model))] + [
            (f"encoder.layers.{name}", layer) for name, layer in layers
        ]
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and isinstance(
        model,
        (
            torchvision.models.VGG,
            torchvision.models.DenseNet,
            torchvision.models.EfficientNet,
            torchvision.models.ConvNeXt,
            torchvision.models.MobileNetV2,
            torchvision.models.MobileNetV3,
            torchvision.models.SwinTransformer,
        ),
    ):
        return [(f"features.{name}", module) for name, module in features.named_children()]
    return None


def stage_layout(model: nn.Module) -> tuple[str, int]:
    """(layout, patch size) of the stage outputs of a model with a stage chain."""
    import torchvision

    if isinstance(model, torchvision.models.SwinTransformer):
        return "NHWC", 1
    if isinstance(model, torchvision.models.VisionTransformer):
        return "tokens", int(model.patch_size)
    return "NCHW", 1


# ------------------------------------------------------------ timm's feature API


def _size_error(name: str, taps, size, exc: Exception) -> ValueError:
    return ValueError(
        f"Backbone {name!r} cannot tap layer(s) {list(taps)} of {size[0]}x{size[1]} "
        f"images: {error_reason(exc)} Choose an image_size that this backbone accepts (for "
        "a vision transformer, a multiple of its patch size; for a fixed-size one, its "
        "native size)."
    )


class _TimmTappedBackbone(nn.Module):
    """A timm model pruned after the deepest tap, returning maps via its feature API.

    timm's own wrapper, ``FeatureGetterNet``, makes the same two calls, but it is not
    exported by ``timm.models`` (only by the private ``timm.models._features``), returns
    the maps in layer order and lets timm's input-size asserts through; this one returns
    them in the order of ``taps`` and turns the asserts into a ValueError that names the
    layers and the image size.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model with ``feature_info`` and ``forward_intermediates``; pruned in place.
    taps : list of str
        ``feature_info`` module names, in the order the maps are returned.
    name : str
        Backbone name, for messages.
    """

    def __init__(self, model: nn.Module, taps: list[str], name: str = "timm model"):
        super().__init__()
        modules = _timm_layers(model)
        self.taps = list(taps)
        self.indices = sorted({modules.index(tap) for tap in taps})
        # Where each tap's map is in forward_intermediates' output.
        self.positions = [self.indices.index(modules.index(tap)) for tap in taps]
        self.backbone_name = name
        model.prune_intermediate_layers(self.indices, prune_norm=True, prune_head=True)
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        try:
            maps = self.model.forward_intermediates(
                x, indices=self.indices, output_fmt="NCHW", intermediates_only=True
            )
        except AssertionError as exc:  # timm checks input sizes with asserts
            raise _size_error(self.backbone_name, self.taps, x.shape[-2:], exc) from exc
        return [maps[position] for position in self.positions]


def has_timm_features(model: nn.Module) -> bool:
    """Whether ``model`` has timm's feature API."""
    return all(
        hasattr(model, attr)
        for attr in ("feature_info", "forward_intermediates", "prune_intermediate_layers")
    )


def _timm_layers(model: nn.Module) -> list[str]:
    return [info["module"] for info in model.feature_info]


# ------------------------------------------------------------------------ torch.fx


class _FXTappedBackbone(nn.Module):
    """Wrap an FX feature extractor so it returns a list of maps in tap order."""

    def __init__(self, extractor: nn.Module, taps: list[str]):
        super().__init__()
        self.extractor = extractor
        self.taps = list(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.extractor(x)
        maps = [out[tap] for tap in self.taps]
        for tap, tensor in zip(self.taps, maps, strict=True):
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
                raise ValueError(
                    f"Layer {tap!r} gives {shape} at this image size, not a feature map "
                    "(n, channels, height, width); tap another layer."
                )
        return maps


def call_on_meta(module: nn.Module, x: torch.Tensor):
    """``module(x)`` on the meta device: output shapes without memory or compute.

    The parameters are swapped for meta tensors without touching the module.
    """
    state = {
        key: torch.empty_like(value, device="meta")
        for key, value in module.state_dict(keep_vars=True).items()
    }
    return torch.func.functional_call(module, state, (x,))


def _is_map(value) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[1:].numel() > 0


def _fx_layers(model: nn.Module, size: int = LISTING_SIZE) -> list[str]:
    """FX nodes whose output is a feature map (n, C, H, W) for a ``size`` px input."""
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    _, eval_nodes = get_graph_node_names(model.eval())
    nodes = eval_nodes[1:]  # the first node is the input placeholder
    extractor = create_feature_extractor(model, return_nodes=nodes)
    try:
        out = call_on_meta(extractor, torch.zeros(1, 3, size, size, device="meta"))
    except Exception:  # ops without meta kernels, tensors created in forward
        try:
            with torch.inference_mode():
                out = extractor(torch.zeros(1, 3, size, size))
        except Exception:  # cannot run at this size: keep every node, fit will say
            return nodes
    return [node for node in nodes if _is_map(out.get(node))]


# -------------------------------------------------------------------- listing


def layers_of_model(model: nn.Module) -> list[str]:
    """The layers of ``model`` that can be tapped, shallow to deep."""
    stages = stage_chain(model)
    if stages is not None:
        return [name for name, _ in stages]
    if has_timm_features(model):
        return _timm_layers(model)
    return _fx_layers(model)


@functools.lru_cache(maxsize=32)
def _layers_of_name(backbone: str) -> tuple[str, ...]:
    return tuple(layers_of_model(meta_model(backbone)))


def available_layers(backbone: str | nn.Module = DEFAULT_BACKBONE) -> list[str]:
    """List the names of the layers that can be tapped, shallow to deep.

    Every listed layer gives a feature map ``(n, C, H, W)``: stages of known
    networks, timm's ``feature_info`` entries (the blocks of a ViT, the stages of
    ConvNeXt and Swin), or, for other modules, the torch.fx graph nodes whose output
    is a map at 224x224 px. Whether a layer can be tapped at a given ``image_size``
    is checked by ``fit``.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        Backbone name or module, as accepted by the featurizers.

    Returns
    -------
    list of str
        Layer names to pass as ``layer``.

    Examples
    --------
    >>> from sklearn_cae import available_layers
    >>> available_layers("efficientnet_lite0")[:3]
    ['conv_stem', 'blocks.0', 'blocks.1']
    >>> available_layers("timm/vit_tiny_patch16_224")[-2:]
    ['blocks.10', 'blocks.11']
    """
    if isinstance(backbone, nn.Module):
        return layers_of_model(backbone)
    if not isinstance(backbone, str):
        raise TypeError(
            f"backbone must be a name or a torch.nn.Module, got {type(backbone).__name__}."
        )
    return list(_layers_of_name(backbone))


# ------------------------------------------------------------------- truncation


def _fx_extractor(model: nn.Module, taps: list[str]) -> nn.Module:
    if hasattr(model, "pretrained_cfg"):  # timm registers its own leaf modules
        from timm.models import create_feature_extractor
    else:
        from torchvision.models.feature_extraction import create_feature_extractor

    return create_feature_extractor(model, return_nodes=list(dict.fromkeys(taps)))


def _check_loaded(loaded: LoadedBackbone, tapped: nn.Module) -> None:
    """Refuse a truncated backbone that needs tensors the weights file lacked."""
    if not loaded.unloaded:
        return
    by_id = {
        id(value): key
        for key, value in loaded.model.state_dict(keep_vars=True).items()
        if key in set(loaded.unloaded)
    }
    needed = {by_id[id(v)] for v in tapped.state_dict(keep_vars=True).values() if id(v) in by_id}
    if needed:
        raise ValueError(
            f"The weights file of backbone {loaded.name!r} lacks {len(needed)} tensor(s) that "
            f"the tapped layers need ({short_list(needed)}). Tap a shallower layer or pass a "
            "checkpoint that covers them."
        )


def truncate(loaded: LoadedBackbone, taps: list[str]) -> nn.Module:
    """Freeze the backbone and cut it after the deepest tap.

    The truncated module shares (and for timm models, prunes) ``loaded.model``'s
    modules. It checks the input size it gets: a size the backbone cannot take (not
    a multiple of a ViT's patch size, say) raises a ValueError naming the layers.

    Parameters
    ----------
    loaded : LoadedBackbone
        From :func:`~sklearn_cae.backbones.load_backbone`.
    taps : list of str
        Layers from :func:`available_layers`.

    Returns
    -------
    torch.nn.Module
        Maps a normalised image batch (n, 3, H, W) to the list of tapped maps, each
        (n, C, h, w), in the order of ``taps``.
    """
    stages = stage_chain(loaded.model)
    if stages is not None:
        layout, patch_size = stage_layout(loaded.model)
        tapped: nn.Module = TappedBackbone(stages, taps, layout, patch_size)
    elif has_timm_features(loaded.model):
        tapped = _TimmTappedBackbone(loaded.model, taps, loaded.name)
    else:
        tapped = _FXTappedBackbone(_fx_extractor(loaded.model, taps), taps)
    _check_loaded(loaded, tapped)
    tapped.requires_grad_(False)
    return tapped.eval()
