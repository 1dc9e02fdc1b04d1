"""Loaders for the image collections used in the demo, tests and benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["load_medmnist"]


def _medmnist_root(root) -> Path | None:
    root = root if root is not None else os.environ.get("MEDMNIST_ROOT")
    return Path(root).expanduser() if root else None


def load_medmnist(
    name: str, split: str = "train", size: int = 28, root: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load a MedMNIST v2 data set through the ``medmnist`` package.

    Parameters
    ----------
    name : str
        Data set name, e.g. ``"breastmnist"`` or ``"BreastMNIST"``.
    split : {"train", "val", "test"}, default="train"
        Official split.
    size : {28, 64, 128, 224}, default=28
        Image size of the MedMNIST+ release to load.
    root : str or path, default=None
        Folder holding the ``.npz`` files. Defaults to ``$MEDMNIST_ROOT``; when neither
        is set, medmnist's own folder is used and the file is downloaded if missing.

    Returns
    -------
    images : ndarray of shape (n, size, size) or (n, size, size, 3), uint8
    labels : ndarray of shape (n,), int64
        For multi-label sets, shape (n, n_labels).
    """
    try:
        import medmnist
    except ImportError as exc:
        raise ImportError(
            "load_medmnist needs the 'medmnist' package: pip install 'sklearn-cae[medmnist]'."
        ) from exc
    flag = name.lower()
    if flag not in medmnist.INFO:
        known = sorted(k for k in medmnist.INFO if not k.endswith("3d"))
        raise ValueError(f"Unknown MedMNIST data set {name!r}; choose one of {known}.")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}.")
    dataset_class = getattr(medmnist, medmnist.INFO[flag]["python_class"])
    folder = _medmnist_root(root)
    suffix = "" if size == 28 else f"_{size}"
    local_file = folder / f"{flag}{suffix}.npz" if folder else None
    download = local_file is None or not local_file.is_file()
    kwargs = {"split": split, "download": download, "size": size}
    if folder is not None:
        kwargs["root"] = str(folder)
    try:
        dataset = dataset_class(**kwargs)
    except Exception as exc:  # medmnist raises bare RuntimeErrors and URL errors
        where = f"{local_file}" if local_file else "medmnist's default folder"
        raise FileNotFoundError(
            f"Could not load {flag} (size {size}) from {where} ({exc}). Offline, set "
            "MEDMNIST_ROOT (or pass root=) to a folder holding "
            f"'{flag}{suffix}.npz'; online, leave both unset to download it."
        ) from exc
    labels = np.asarray(dataset.labels).astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.ravel()
    return np.asarray(dataset.imgs), labels
