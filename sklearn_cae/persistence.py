"""Save and load fitted models: skops (no code runs on load) or joblib (a pickle).

Both formats store the featurizers' networks as plain arrays plus what rebuilds them
(see :mod:`sklearn_cae._state`), so neither holds a torch class, and a model loads on
a CPU-only machine without network. They differ in what loading trusts:

* ``.skops`` (:mod:`skops.io`) builds only the types it is told to trust. Loading
  trusts :data:`TRUSTED_TYPES` (this package's featurizers and helpers, two of
  scikit-learn's calibration types) and what skops trusts by default (scikit-learn's
  estimators, numpy arrays, builtins); a file that asks for anything else is refused
  with a message that names the type.
* ``.joblib`` is a pickle: loading it runs whatever code the file holds. Load only
  files you trust. It stores what skops cannot: a featurizer whose ``backbone`` is your
  own ``nn.Module``, estimators skops does not know.

Every file records the sklearn-cae release that saved it (:func:`saved_by`); loading
a model saved by another release warns, and a file that fails to load says which
release saved it. :func:`write_model_card` writes a skops model card.
"""

from __future__ import annotations

import os
import platform
import re
import zipfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from . import __version__
from ._utils import atomic_write, error_reason

__all__ = [
    "FORMATS",
    "TRUSTED_TYPES",
    "ModelFileError",
    "UntrustedTypeError",
    "dump",
    "load",
    "saved_by",
    "write_model_card",
]

#: The only types a ``.skops`` file of this package asks to trust, beyond those skops
#: trusts by default (scikit-learn estimators, numpy arrays, builtins). The featurizers
#: save their networks as arrays, so no torch, skorch or pickle type is among them;
#: ``BlockScaler`` holds the fitted block balance (arrays and ints).
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn_cae.featurizer.BackboneFeaturizer",
    "sklearn_cae.featurizer.CAETransferFeaturizer",
    "sklearn_cae.pooling.BlockScaler",
    "sklearn_cae.semi_supervised.LabelledOnly",
    # scikit-learn's own, which skops does not list by default: the calibrated SVC that
    # `sklearn-cae fit` saves holds them (plain arrays and floats).
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)

#: Model file formats by file extension.
FORMATS = {".skops": "skops", ".joblib": "joblib"}

_VERSION_KEY = "_sklearn_cae_version"  # the state key the featurizers save it under
# How a pickle stores that key's value: short unicode strings, maybe memoized.
_PICKLED_VERSION = re.compile(rb"_sklearn_cae_version\x94?\x8c(.)")
# The package versions a model card lists.
_CARD_PACKAGES = ("sklearn-cae", "scikit-learn", "torch", "torchvision", "timm", "skorch")
_CARD_PACKAGES += ("numpy", "skops")


class UntrustedTypeError(ValueError):
    """A ``.skops`` file asks to build a type that is not trusted."""


class ModelFileError(ValueError):
    """A model file cannot be read: truncated, tampered with, or of another release."""


def _format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"Cannot tell the model format of {str(path)!r} from its extension: use "
            f"{' or '.join(FORMATS)} (skops: loads without running code; joblib: a pickle)."
        )
    return FORMATS[suffix]


def _featurizers(model) -> list:
    """The featurizers in ``model``: itself, or the steps of a (nested) pipeline."""
    from .featurizer import BackboneFeaturizer, CAETransferFeaturizer

    if isinstance(model, BackboneFeaturizer | CAETransferFeaturizer):
        return [model]
    steps = getattr(model, "steps", None) or []
    return [found for _, step in steps for found in _featurizers(step)]


def _check_skops_storable(model) -> None:
    import torch

    for featurizer in _featurizers(model):
        if isinstance(featurizer.backbone, torch.nn.Module):
            raise ValueError(
                f"A .skops file cannot hold a {type(featurizer).__name__} whose backbone is "
                f"your own torch module ({type(featurizer.backbone).__name__}): skops "
                "stores no torch class. Save it as .joblib (a pickle), or use a named "
                "backbone."
            )


def dump(model, path: str | os.PathLike) -> None:
    """Save a fitted model (a featurizer, a pipeline, any estimator) to ``path``.

    The format follows the extension: ``.skops`` or ``.joblib``. The file is written
    atomically (a temporary file, then a rename), so a failed save never leaves a
    truncated model in place of a good one.

    Parameters
    ----------
    model : estimator
        What to save.
    path : str or os.PathLike
        Ends in ``.skops`` or ``.joblib``.

    Raises
    ------
    ValueError
        For another extension, or a ``.skops`` path for a featurizer whose backbone
        is a torch module of your own (save it as ``.joblib``).
    """
    kind = _format(path)
    if kind == "skops":
        import skops.io

        _check_skops_storable(model)
        data = skops.io.dumps(model)
        with atomic_write(path) as file:
            file.write(data)
        return
    import joblib

    with atomic_write(path) as file:
        joblib.dump(model, file)


def _skops_version(path: Path) -> str | None:
    import json

    def find(node):
        if isinstance(node, dict):
            value = node.get(_VERSION_KEY)
            if isinstance(value, dict) and isinstance(value.get("content"), str):
                return json.loads(value["content"])
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            return None
        return next((found for child in children if (found := find(child))), None)

    with zipfile.ZipFile(path) as archive:
        return find(json.loads(archive.read("schema.json")))


def _joblib_version(path: Path) -> str | None:
    with open(path, "rb") as file:
        head = file.read(1 << 20)  # the key comes before the networks' arrays
    match = _PICKLED_VERSION.search(head)
    if match is None:
        return None
    start = match.end()
    return head[start : start + match.group(1)[0]].decode("utf-8", "replace")


def saved_by(path: str | os.PathLike) -> str | None:
    """The sklearn-cae release that saved a model file, read without loading it.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.skops`` or ``.joblib`` file.

    Returns
    -------
    str or None
        The release, or None when the file does not say (no featurizer in it, a
        compressed or damaged file, a release that did not record it).
    """
    path = Path(path)
    try:
        if _format(path) == "skops":
            return _skops_version(path)
        return _joblib_version(path)
    except Exception:  # damaged files: the caller's error says so
        return None


def _file_error(path: Path, exc: BaseException) -> ModelFileError:
    release = saved_by(path)
    if release is not None and release != __version__:
        origin = (
            f" It was saved by sklearn-cae {release} (this is {__version__}): load it "
            f"with sklearn-cae=={release}, or re-fit the model."
        )
    else:
        origin = " The file is truncated, damaged or was changed after it was saved."
    return ModelFileError(
        f"Cannot load the model in {str(path)!r} ({type(exc).__name__}: "
        f"{error_reason(exc)}).{origin}"
    )


def _load_skops(path: Path, trusted: Iterable[str]):
    import skops.io

    try:
        asked = skops.io.get_untrusted_types(file=path)
    except Exception as exc:
        raise _file_error(path, exc) from exc
    allowed = {*TRUSTED_TYPES, *trusted}
    refused = [name for name in asked if name not in allowed]
    if refused:
        raise UntrustedTypeError(
            f"{str(path)!r} asks to build type(s) that are not trusted: {refused}. A "
            "model saved by sklearn-cae needs no other types than "
            f"{list(TRUSTED_TYPES)} and scikit-learn's; pass trusted=[...] only for "
            "types you have checked."
        )
    try:
        return skops.io.load(path, trusted=asked)
    except Exception as exc:
        raise _file_error(path, exc) from exc


def load(path: str | os.PathLike, *, trusted: Iterable[str] = ()):
    """Load a model saved by :func:`dump` (or by ``skops.io.dump`` / ``joblib.dump``).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.skops`` or ``.joblib`` file. A ``.joblib`` file is a pickle: loading it
        runs code stored in it, so load only files you trust.
    trusted : iterable of str, default=()
        For ``.skops`` files: further type names to trust (e.g. an estimator skops
        does not know), beyond :data:`TRUSTED_TYPES`. Ignored for ``.joblib``.

    Returns
    -------
    estimator
        The model, on the CPU (set ``device`` on its featurizer to move it).

    Raises
    ------
    UntrustedTypeError
        A ``.skops`` file asks for a type that is not trusted (named in the message).
    ModelFileError
        The file is truncated or damaged, or another release saved it (the message
        names it).
    FileNotFoundError
        No such file.
    """
    path = Path(path)
    kind = _format(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {str(path)!r}.")
    if kind == "skops":
        return _load_skops(path, trusted)
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:
        raise _file_error(path, exc) from exc


# ------------------------------------------------------------------------ model card
def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _CARD_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["sklearn-cae"] = __version__
    return versions


def _backbone_rows(featurizer) -> dict[str, list]:
    backbone = featurizer.backbone
    name = backbone if isinstance(backbone, str) else f"own module ({type(backbone).__name__})"
    rows = {
        "backbone": name,
        "weights": str(featurizer.weights),
        "tapped layers": ", ".join(featurizer.layers_),
        "map shapes (C, H, W)": "; ".join(str(s) for s in featurizer.map_shapes_),
        "image_size": str(featurizer.image_size),
        "input mean / std": f"{featurizer.input_mean_} / {featurizer.input_std_}",
    }
    return {"item": list(rows), "value": list(rows.values())}


def _hyperparameter_rows(model) -> dict[str, list]:
    def plain(value) -> bool:
        if isinstance(value, tuple | list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | float | bool)

    simple = {key: v for key, v in model.get_params(deep=True).items() if plain(v)}
    return {"parameter": list(simple), "value": [repr(v) for v in simple.values()]}


def write_model_card(
    model,
    path: str | os.PathLike,
    *,
    training_set: Mapping[str, object] | None = None,
    cv_scores: Mapping[str, float] | None = None,
    model_file: str | None = None,
    description: str | None = None,
) -> None:
    """Write a model card (skops' :class:`skops.card.Card`, Markdown) for a fitted model.

    Parameters
    ----------
    model : estimator
        The fitted featurizer or pipeline.
    path : str or os.PathLike
        The Markdown file to write (e.g. ``README.md`` next to the model file).
    training_set : mapping or None, default=None
        A summary of the training data, e.g. ``{"source": "breastmnist", "images":
        546, "class counts": "0: 147, 1: 399"}``.
    cv_scores : mapping of str to float or None, default=None
        Cross-validation scores, e.g. ``{"balanced accuracy (5-fold)": 0.81}``.
    model_file : str or None, default=None
        The model file the card describes (its name is written on the card).
    description : str or None, default=None
        A sentence or two on what the model is for.
    """
    from skops import card

    model_card = card.Card(model, template=None)
    model_card.add(
        **{
            "Model description": description
            or "An image classifier built with sklearn-cae: a frozen ImageNet backbone, "
            "tapped at an intermediate layer, feeding scikit-learn estimators.",
            "Model file": model_file or "not given",
            "Loading": "`sklearn_cae.persistence.load(path)`: a `.skops` file loads "
            "without running code and trusts only "
            + ", ".join(f"`{name}`" for name in TRUSTED_TYPES)
            + " beyond scikit-learn; a `.joblib` file is a pickle.",
        }
    )
    featurizers = _featurizers(model)
    if featurizers and hasattr(featurizers[0], "layers_"):
        model_card.add_table(
            folded=False, **{"Backbone and weights": _backbone_rows(featurizers[0])}
        )
    model_card.add_table(folded=True, **{"Parameters": _hyperparameter_rows(model)})
    if training_set:
        rows = {"item": list(training_set), "value": [str(v) for v in training_set.values()]}
        model_card.add_table(**{"Training set": rows})
    if cv_scores:
        model_card.add_metrics(
            section="Cross-validation scores", **{k: float(v) for k, v in cv_scores.items()}
        )
    versions = _package_versions()
    model_card.add_table(
        **{"Package versions": {"package": list(versions), "version": list(versions.values())}}
    )
    with atomic_write(path, "w", encoding="utf-8") as file:
        file.write(model_card.render())
