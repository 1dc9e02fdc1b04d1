"""Loaders for the image collections used in the demo, tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder", "load_medmnist", "stratified_subset"]

#: File name endings :func:`load_image_folder` picks up (torchvision's, plus DICOM).
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".pgm",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".dcm",
    ".dicom",
)
# Folder names that mean a data split, not a class: a root holding train/ and val/.
_SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing", "dev"}
_MEDMNIST_SIZES = (28, 64, 128, 224)
_DOWNLOAD_TIMEOUT_S = 30


def load_image_folder(
    path: str | os.PathLike, *, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """List the images of a class-per-sub-folder tree (torchvision's ImageFolder layout).

    ``path/<class>/**/<file>``: classes are the sub-folders of ``path``, sorted; files
    are found recursively (following links), in sorted order, by their extension
    (case-insensitive). Nothing is decoded: pass the paths straight to a featurizer,
    which reads them lazily in batches. Class folders named like data splits
    (``train``, ``val``, ``test``, ...) give a warning: ``path`` is then most likely a
    data set's root, whose splits would be taken for classes.

    Parameters
    ----------
    path : str or path
        The root folder, e.g. ``covid19_xray/images/train``.
    extensions : tuple of str, default=IMAGE_EXTENSIONS
        File endings to keep.

    Returns
    -------
    paths : ndarray of shape (n,), str
    labels : ndarray of shape (n,), int64
        Index into ``class_names``.
    class_names : list of str

    Raises
    ------
    FileNotFoundError
        When ``path`` is missing, has no class sub-folder, or a class has no image.
    NotADirectoryError
        When ``path`` is a file.
    ValueError
        When ``path`` is an empty string (which would mean the working directory).

    Warns
    -----
    UserWarning
        When class folders are named like data splits.
    """
    from torchvision.datasets.folder import find_classes, make_dataset

    if not os.fspath(path).strip():
        raise ValueError("load_image_folder got an empty path; pass the root folder.")
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(
            f"{str(root)!r} is a file; load_image_folder needs a folder of class sub-folders."
        )
    class_names, class_to_idx = find_classes(root)  # raises when there are none
    _warn_if_splits(root, class_names)
    samples = make_dataset(root, class_to_idx, extensions=tuple(e.lower() for e in extensions))
    paths = np.asarray([p for p, _ in samples], dtype=str)
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    return paths, labels, list(class_names)


def _warn_if_splits(root: Path, class_names: list[str]) -> None:
    splits = [name for name in class_names if name.lower() in _SPLIT_NAMES]
    if not splits:
        return
    train = [name for name in splits if name.lower().startswith("train")]
    example = root / (train or splits)[0]
    warnings.warn(
        f"The class folders {splits} of {str(root)!r} are named like data splits, not "
        f"classes: is this a data set's root? Point at one split, e.g. {str(example)!r}, "
        "whose sub-folders are the classes.",
        UserWarning,
        stacklevel=3,
    )


def _offline() -> bool:
    flag = os.environ.get("SKLEARN_CAE_OFFLINE", "")
    return flag.lower() in ("1", "true", "yes")


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _medmnist_root(root) -> Path | None:
    if root is not None and not os.fspath(root).strip():
        raise ValueError("root is an empty path; pass a folder, or None for the default.")
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
        is set, medmnist's own folder (``~/.medmnist``). A missing file is downloaded
        there (30 s socket timeout), unless ``$SKLEARN_CAE_OFFLINE`` is set.

    Returns
    -------
    images : ndarray of shape (n, size, size) or (n, size, size, 3), uint8
    labels : ndarray of shape (n,), int64
        For multi-label sets, shape (n, n_labels).

    Raises
    ------
    FileNotFoundError
        When the file is neither in the folder nor downloadable (offline, or
        ``$SKLEARN_CAE_OFFLINE`` set); the message says where to put it.
    ValueError
        For an unknown name, split or size.
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
    if size not in _MEDMNIST_SIZES:
        raise ValueError(f"size must be one of {list(_MEDMNIST_SIZES)}, got {size!r}.")
    dataset_class = getattr(medmnist, medmnist.INFO[flag]["python_class"])
    from medmnist.info import DEFAULT_ROOT

    folder = _medmnist_root(root) or Path(DEFAULT_ROOT).expanduser()
    suffix = "" if size == 28 else f"_{size}"
    filename = f"{flag}{suffix}.npz"
    have_file = (folder / filename).is_file()
    where = str(folder)
    howto = (
        f"Put '{filename}' in a folder and pass root= or set MEDMNIST_ROOT to it, or run "
        "online (without SKLEARN_CAE_OFFLINE) to download it."
    )
    if not have_file and _offline():
        raise FileNotFoundError(f"{filename} is not in {where} and downloads are off. {howto}")
    kwargs = {"split": split, "download": not have_file, "size": size, "root": str(folder)}
    try:
        folder.mkdir(parents=True, exist_ok=True)  # medmnist downloads only into a folder
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):  # an unreachable server must not hang
            dataset = dataset_class(**kwargs)
    except Exception as exc:  # medmnist raises bare RuntimeErrors with long texts
        raise FileNotFoundError(
            f"Could not load {filename} from {where} (download attempted: "
            f"{not have_file}; {type(exc).__name__}). {howto}"
        ) from exc
    labels = np.asarray(dataset.labels).astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.ravel()
    return np.asarray(dataset.imgs), labels


def stratified_subset(y, fraction: float, random_state: int = 0) -> np.ndarray:
    """Sorted positions of a stratified ``fraction`` of ``y``: the labelled images.

    Each class keeps ``round(fraction * its count)`` images, at least 2, drawn without
    replacement by ``numpy.random.default_rng(random_state)``, class by class in sorted
    order. The demo and the benchmarks use it, so that a fraction and a seed name the
    same labelled images everywhere.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    fraction : float
        Fraction to keep; 1 or more keeps every position.
    random_state : int, default=0
        Seed of the draw.

    Returns
    -------
    ndarray of int
    """
    y = np.asarray(y)
    if fraction >= 1:
        return np.arange(len(y))
    rng = np.random.default_rng(random_state)
    parts = [
        rng.choice(members, max(2, round(fraction * len(members))), replace=False)
        for members in (np.flatnonzero(y == c) for c in np.unique(y))
    ]
    return np.sort(np.concatenate(parts))
