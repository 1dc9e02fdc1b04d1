"""The layer tapped when ``layer=None``: the deepest one at stride 16.

Stride 16 is deep enough to be semantic and keeps a spatial map for the auto-encoder
at moderate image sizes (docs/backbones.rst, "The default layer"). The stage is
listed per network for the names of the Lite and torchvision sources, and otherwise
read from the network: the output shapes of its stages on the meta device, or
timm's ``feature_info``.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ._builder import meta_model, resolve_name
from ._features import (
    LISTING_SIZE,
    available_layers,
    call_on_meta,
    has_timm_features,
    layers_of_model,
    stage_chain,
    stage_layout,
)

__all__ = ["default_layer", "hierarchical_layers"]

# The deepest stride-16 stage of each network, keyed by the names of the "lite" and
# "torchvision" sources only: timm's models of the same name have other layer names.
_DEFAULT_LAYERS = {
    "efficientnet_lite0": "blocks.4",
    "efficientnet_lite1": "blocks.4",
    "efficientnet_lite2": "blocks.4",
    "resnet18": "layer3",
    "resnet34": "layer3",
    "resnet50": "layer3",
    "resnet101": "layer3",
    "densenet121": "features.denseblock3",
    "vgg16": "features.23",
    "efficientnet_b0": "features.5",
    "convnext_tiny": "features.5",
    "swin_t": "features.5",
    "swin_s": "features.5",
    "swin_b": "features.5",
}


def _deepest_at_stride_16(model: nn.Module) -> str | None:
    """The deepest layer whose maps are at stride 16 or finer (None: not known)."""
    if stage_chain(model) is not None:
        return _deepest_stage_at_stride_16(model)
    if not has_timm_features(model):
        return None
    at_16 = [info["module"] for info in model.feature_info if info["reduction"] <= 16]
    return at_16[-1] if at_16 else None


def _deepest_stage_at_stride_16(model: nn.Module) -> str | None:
    """Read the stride of each stage from the shapes of a pass on the meta device."""
    layout, _ = stage_layout(model)
    if layout == "tokens":  # every block at the patch stride: the last one
        return None
    x = torch.zeros(1, 3, LISTING_SIZE, LISTING_SIZE, device="meta")
    deepest = None
    try:
        for name, stage in stage_chain(model):
            x = call_on_meta(stage, x)
            width = x.shape[2] if layout == "NHWC" else x.shape[-1]
            if x.ndim == 4 and width * 16 >= LISTING_SIZE:
                deepest = name
    except Exception:  # ops without meta kernels: fall back to the deepest layer
        return None
    return deepest


def _default_layer_of_model(model: nn.Module) -> str:
    return _deepest_at_stride_16(model) or layers_of_model(model)[-1]


def _listed_default_layer(backbone: str) -> str | None:
    """The layer _DEFAULT_LAYERS gives a name of its sources (None: other names)."""
    source, name = resolve_name(backbone)
    return _DEFAULT_LAYERS.get(name) if source in ("lite", "torchvision") else None


@functools.lru_cache(maxsize=32)
def _default_layer_of_name(backbone: str) -> str:
    return _listed_default_layer(backbone) or _default_layer_of_model(meta_model(backbone))


def default_layer(backbone: str | nn.Module, model: nn.Module | None = None) -> str:
    """The layer tapped when ``layer=None``: the deepest stride-16 stage where known.

    That is a stage picked per network for the EfficientNet-Lite backbones and some
    torchvision models (``resnet18`` to ``resnet101``, ``densenet121``, ``vgg16``,
    ``efficientnet_b0``, ``convnext_tiny``, ``swin_t``, ``swin_s``, ``swin_b``); for
    other networks split into stages (timm EfficientNets and MobileNets, torchvision
    CNNs), the deepest stage whose maps are at stride 16 or finer at 224 px, read from
    the output shapes of a pass on the meta device; the deepest ``feature_info`` entry
    at stride 16 or less for the models tapped through timm's feature API; the deepest
    listed layer otherwise (vision transformers: the last block).

    Parameters
    ----------
    backbone : str or torch.nn.Module
        Backbone name or module.
    model : torch.nn.Module, optional
        The network that the name ``backbone`` builds, already loaded (the ``model``
        of :func:`~sklearn_cae.backbones.load_backbone`'s result): read instead of a
        network built anew from the name, which an ``hf-hub:`` name whose
        ``config.json`` lies next to the weights file cannot do offline. Ignored when
        ``backbone`` is a module.

    Returns
    -------
    str
        A name listed by :func:`~sklearn_cae.available_layers`.
    """
    if isinstance(backbone, nn.Module):
        return _default_layer_of_model(backbone)
    if not isinstance(backbone, str):
        raise TypeError(
            f"backbone must be a name or a torch.nn.Module, got {type(backbone).__name__}."
        )
    if model is None:
        return _default_layer_of_name(backbone)
    return _listed_default_layer(backbone) or _default_layer_of_model(model)


# timm's 1x1 classifier-head convolution (1280 channels in Lite0) is listed as a layer
# but is no stage: pooled beside the stride-16 stage it scored below the last stage
# (docs/method.md, round 4), so the hierarchical default stops before it.
_HEAD_LAYERS = ("conv_head",)


def hierarchical_layers(backbone: str | nn.Module, model: nn.Module | None = None) -> list[str]:
    """The layers tapped when ``layer=None``: the stride-16 stage, then the last stage.

    The stride-16 stage is :func:`default_layer`'s; the last
    stage is the deepest layer :func:`~sklearn_cae.backbones.available_layers` lists,
    before a classifier-head convolution (``conv_head``). One layer when they are the
    same (vision transformers, whose default is the last block).

    Parameters
    ----------
    backbone : str or torch.nn.Module
        Backbone name or module.
    model : torch.nn.Module, optional
        The network that the name ``backbone`` builds, already loaded (see :func:`default_layer`).

    Returns
    -------
    list of str

    Examples
    --------
    >>> from sklearn_cae.backbones import hierarchical_layers
    >>> hierarchical_layers("efficientnet_lite0")
    ['blocks.4', 'blocks.6']
    """
    first = default_layer(backbone, model)
    network = backbone if model is None or isinstance(backbone, nn.Module) else model
    listed = [name for name in available_layers(network) if name not in _HEAD_LAYERS]
    return [first] if listed[-1] == first else [first, listed[-1]]
