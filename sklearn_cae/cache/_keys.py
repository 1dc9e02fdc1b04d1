"""Cache keys: what, besides the image, changes the maps (the model digest), and the image.

An in-memory image is keyed on its content. A file is keyed on its resolved path, size
and modification time (nanoseconds), read with one ``stat`` call: no decoding, so a warm
cache never opens the image files at all. A file rewritten in place gets a new size or
modification time, hence a new key, and is recomputed.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

import joblib
import numpy as np
import torch
from torch import nn

__all__ = ["FORMAT", "file_digests", "image_digests", "model_digest"]

#: Bump when the stored format or the meaning of the stored maps changes: it is part of
#: every model digest and of the store's folder name, so older entries are never read.
FORMAT = 2

_WEIGHTS_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_digest(module: nn.Module) -> str:
    """Hash the module's parameters and buffers (memoised per module object)."""
    digest = _WEIGHTS_DIGESTS.get(module)
    if digest is None:
        hasher = hashlib.blake2b(digest_size=16)
        for name, tensor in module.state_dict().items():
            data = tensor.detach().cpu().contiguous()
            hasher.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
            hasher.update(data.view(-1).view(torch.uint8).numpy().tobytes())
        digest = hasher.hexdigest()
        _WEIGHTS_DIGESTS[module] = digest
    return digest


def model_digest(
    backbone: nn.Module,
    *,
    layers,
    image_size,
    intensity,
    mean,
    std,
    device: torch.device,
) -> str:
    """Digest of everything, besides the image, that changes the tapped maps.

    Parameters
    ----------
    backbone : torch.nn.Module
        The frozen, truncated backbone (architecture and weights are hashed).
    layers : list of str
        The tapped layers, in order.
    image_size, intensity, mean, std
        The preprocessing applied before the backbone.
    device : torch.device
        Only its type matters: CUDA runs under bf16 autocast, so its maps differ.

    Returns
    -------
    str
        32 hexadecimal digits.
    """
    from .. import __version__

    return joblib.hash(
        {
            "format": FORMAT,
            "version": __version__,
            "architecture": f"{type(backbone).__qualname__}\n{backbone!r}",
            "weights": _weights_digest(backbone),
            "layers": list(layers),
            "image_size": tuple(image_size),
            "intensity": intensity,
            "mean": tuple(float(v) for v in mean),
            "std": tuple(float(v) for v in std),
            "precision": "cuda-bf16-autocast" if device.type == "cuda" else "fp32",
        }
    )


def image_digests(images) -> list[str]:
    """Content digest of each image: its bytes, shape and dtype.

    Parameters
    ----------
    images : ndarray of shape (n, ...) or list of arrays
        A batch of images; each is hashed on its own.

    Returns
    -------
    list of str
        40 hexadecimal digits each.
    """
    digests = []
    for image in images:
        image = np.ascontiguousarray(image)
        hasher = hashlib.blake2b(digest_size=20)
        hasher.update(f"{image.dtype.str}{image.shape};".encode())
        hasher.update(memoryview(image).cast("B"))
        digests.append(hasher.hexdigest())
    return digests


def file_digests(paths) -> list[str]:
    """Digest of each file's resolved path, size and modification time (no decoding).

    Parameters
    ----------
    paths : sequence of str or path-like

    Returns
    -------
    list of str
        40 hexadecimal digits each.

    Raises
    ------
    OSError
        When a file cannot be ``stat``-ed (e.g. it was removed).
    """
    digests = []
    for path in paths:
        resolved = Path(path).resolve()
        info = os.stat(resolved)
        text = f"file;{resolved};{info.st_size};{info.st_mtime_ns}"
        digests.append(
            hashlib.blake2b(text.encode(errors="surrogateescape"), digest_size=20).hexdigest()
        )
    return digests
