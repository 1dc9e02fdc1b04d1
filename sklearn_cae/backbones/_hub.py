"""Timm models by name: pretrained tags, ``hf-hub:`` repos and ``local-dir:`` folders.

A name says what to build (timm's registry, or a repo's ``config.json``) and where the
pretrained weights are (a folder, the Hugging Face cache, or a download). Everything
that can be found on disk is, so that cached models build offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .._utils import error_reason
from ..downloads import offline
from ._weights import BackboneWeightsUnavailable, offline_error

__all__ = ["create_timm", "create_timm_pretrained", "is_hub_name", "timm_source"]


def is_hub_name(name: str) -> bool:
    """Whether ``name`` is timm's ``hf-hub:`` or ``local-dir:`` naming."""
    return name.startswith(("hf-hub:", "local-dir:"))


def create_timm(name: str, **kwargs) -> nn.Module:
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


def timm_source(name: str, weights=None) -> _TimmSource:
    """Resolve a timm name (plain, tagged, ``hf-hub:`` or ``local-dir:``) offline.

    ``weights``, a file, may have the ``config.json`` of an ``hf-hub:`` repo beside it.
    """
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
        return offline_error(name, url, cause, extra)
    if src.url:
        return offline_error(name, src.url, cause)
    return BackboneWeightsUnavailable(
        f"timm has no pretrained weights for {name!r} ({error_reason(cause)}); pass "
        "weights=None or weights='/path/to/file'."
    )


def create_timm_pretrained(name: str, src: _TimmSource) -> nn.Module:
    """Build with pretrained weights: local folder, Hugging Face cache, or download."""
    local = _weights_in(src.folder) if src.folder is not None else None
    if local is None and src.hub_id:
        repo = src.hub_id.split("@")[0]
        local = _hf_cached(repo, "model.safetensors") or _hf_cached(repo, "pytorch_model.bin")
    registry_name = name if not is_hub_name(name) else src.architecture
    if local is not None:
        # timm's loader converts original formats and resizes position embeddings.
        overlay = {"file": str(local)}
        return create_timm(
            registry_name, pretrained=True, pretrained_cfg_overlay=overlay, **src.model_args
        )
    if src.folder is not None:
        raise FileNotFoundError(
            f"{name!r}: no model.safetensors or pytorch_model.bin in the folder."
        )
    if offline():
        raise _timm_offline_error(name, src, RuntimeError("offline mode is set"))
    try:
        return create_timm(name, pretrained=True)
    except Exception as exc:  # hub errors come in many classes
        raise _timm_offline_error(name, src, exc) from exc
