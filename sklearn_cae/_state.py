"""The featurizers' saved state: fitted networks as plain arrays, rebuilt on load.

A fitted featurizer holds torch modules (the truncated backbone) and skorch nets (the
auto-encoders). Pickling them ties a model file to torch's classes, and skops cannot
store them at all. So the featurizers save each network as its state dict, converted
to numpy arrays, plus what rebuilds the network: the ``backbone`` and ``layers_`` the
featurizer already holds, and the auto-encoder's constructor arguments. Loading
rebuilds the networks on the CPU, without weights download (the weights are in the
file), and loads the arrays: the features are bit for bit those of the saved model.

A backbone given as a user's own ``nn.Module`` is rebuilt from that module, which the
featurizer's ``backbone`` parameter still holds (a pickle can store it; skops cannot),
and an auto-encoder net of another module class than :class:`ConvAutoEncoder` is kept
as it is.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import torch
from skorch.history import History
from torch import nn

from . import __version__
from .backbones import load_backbone, truncate
from .cae import AutoEncoderNet, ConvAutoEncoder

__all__ = [
    "VERSION_KEY",
    "InconsistentReleaseWarning",
    "featurizer_state",
    "restore_featurizer_state",
]

#: The state key holding the sklearn-cae release that saved a featurizer.
VERSION_KEY = "_sklearn_cae_version"
_BACKBONE_KEY = "_backbone_state"
_CAE_KEY = "_cae_states"


class InconsistentReleaseWarning(UserWarning):
    """A model saved by another sklearn-cae release was loaded (and may differ)."""


def _arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's state dict as CPU numpy arrays (the same bits)."""
    return {key: value.detach().cpu().numpy() for key, value in module.state_dict().items()}


def _load_arrays(module: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    # load_state_dict copies into the existing tensors, keeping their memory format.
    module.load_state_dict(
        {key: torch.from_numpy(np.array(value)) for key, value in arrays.items()}
    )


def _plain(value):
    """numpy scalars in a skorch history as Python numbers (for JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _cae_state(net: AutoEncoderNet) -> dict | AutoEncoderNet:
    """A trained auto-encoder net as constructor arguments, weights and history."""
    params = net.get_params(deep=False)
    if params.get("module") is not ConvAutoEncoder:
        return net  # another module class: only a pickle can hold it
    module_args = net.get_params_for("module")
    return {
        "module_args": {**module_args, "layer_sizes": list(module_args["layer_sizes"])},
        "sparsity": float(params["sparsity"]),
        "supervision": float(params["supervision"]),
        "label_smoothing": float(params["label_smoothing"]),
        "class_weight": params["class_weight"],
        "weights": _arrays(net.module_),
        "history": json.dumps(net.history.to_list(), default=_plain),
    }


def _rebuild_cae(state: dict) -> AutoEncoderNet:
    module_args = dict(state["module_args"])
    module_args["layer_sizes"] = tuple(module_args["layer_sizes"])
    net = AutoEncoderNet(
        sparsity=state["sparsity"],
        supervision=state["supervision"],
        label_smoothing=state.get("label_smoothing", 0.0),
        class_weight=state["class_weight"],
        device="cpu",
        **{f"module__{key}": value for key, value in module_args.items()},
    ).initialize()
    _load_arrays(net.module_, state["weights"])
    net.module_.eval()
    net.history = History(json.loads(state["history"]))
    return net


def _rebuild_backbone(backbone, layers: list[str], arrays: dict[str, np.ndarray]) -> nn.Module:
    """Rebuild the truncated backbone (no weights download) and load its arrays."""
    if isinstance(backbone, nn.Module):
        backbone = copy.deepcopy(backbone)
    # As the featurizer's fit does: NHWC weights for channels_last input batches.
    module = truncate(load_backbone(backbone, weights=None), layers)
    module = module.to(memory_format=torch.channels_last)
    _load_arrays(module, arrays)
    return module


def featurizer_state(state: dict) -> dict:
    """The state to save: networks as arrays, and the release that saved it.

    Parameters
    ----------
    state : dict
        ``BaseEstimator.__getstate__``'s state of a featurizer (not modified).

    Returns
    -------
    dict
        ``backbone_`` replaced by its arrays, each entry of ``cae_`` by its
        constructor arguments, arrays and history; everything else as it was.
    """
    state = dict(state, **{VERSION_KEY: __version__})
    backbone = state.pop("backbone_", None)
    if backbone is not None:
        state[_BACKBONE_KEY] = _arrays(backbone)
    nets = state.pop("cae_", None)
    if nets is not None:
        state[_CAE_KEY] = [_cae_state(net) for net in nets]
    return state


def restore_featurizer_state(state: dict, name: str) -> dict:
    """Rebuild the networks of a saved state (the inverse of :func:`featurizer_state`).

    Parameters
    ----------
    state : dict
        A saved state. One without arrays (pickled with its networks inside) is
        returned as it is.
    name : str
        The featurizer's class name, for messages.

    Returns
    -------
    dict
        The state with ``backbone_`` and ``cae_`` rebuilt on the CPU.

    Raises
    ------
    ValueError
        When the networks cannot be rebuilt; the message names the release that saved
        the model.
    """
    state = dict(state)
    saved_by = state.pop(VERSION_KEY, None)
    if saved_by is not None and saved_by != __version__:
        warnings.warn(
            f"This {name} was saved by sklearn-cae {saved_by} and is loaded by "
            f"{__version__}: its features may differ. Re-fit it with {__version__}, or "
            f"load it with sklearn-cae=={saved_by}.",
            InconsistentReleaseWarning,
            stacklevel=4,
        )
    try:
        # Rebuilding initialises networks at random: leave torch's random state as it was.
        with torch.random.fork_rng(devices=[]):
            if _BACKBONE_KEY in state:
                arrays = state.pop(_BACKBONE_KEY)
                state["backbone_"] = _rebuild_backbone(state["backbone"], state["layers_"], arrays)
            if _CAE_KEY in state:
                state["cae_"] = [
                    entry if isinstance(entry, AutoEncoderNet) else _rebuild_cae(entry)
                    for entry in state.pop(_CAE_KEY)
                ]
    except Exception as exc:
        saved = saved_by or "a release before 0.1.0"
        raise ValueError(
            f"Cannot rebuild the networks of this {name}, saved by sklearn-cae {saved} "
            f"(this is {__version__}): {type(exc).__name__}: {exc} Load it with "
            f"sklearn-cae=={saved}, or re-fit it."
        ) from exc
    return state
