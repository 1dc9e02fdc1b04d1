"""Loaders for labelled image collections: folders, ``.npz`` files and MedMNIST.

:func:`load_dataset` is the one entry point the command line uses: it takes an
ImageFolder-style folder, an ``.npz`` file or a MedMNIST name and returns images and
class names. :func:`load_image_folder` and :func:`load_medmnist` are the loaders behind
it; :func:`stratified_subset` draws the labelled part of a training set the same way
in the demo and the benchmarks, and the command line's ``--max-images`` subset.
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from ._param_validation import Interval, Options, StrOptions, validate_params
from ._utils import error_reason
from .downloads import DOWNLOAD_TIMEOUT_S, download_timeout, offline

__all__ = [
    "IMAGE_EXTENSIONS",
    "MEDMNIST_SIZES",
    "MEDMNIST_SPLITS",
    "DatasetError",
    "find_image_files",
    "load_dataset",
    "load_image_folder",
    "load_medmnist",
    "stratified_subset",
    "take_rows",
]

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
#: Image sizes of the MedMNIST+ releases.
MEDMNIST_SIZES = (28, 64, 128, 224)
#: The official MedMNIST splits.
MEDMNIST_SPLITS = ("train", "val", "test")
# Folder names that mean a data split, not a class: a root holding train/ and val/.
_SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing", "dev"}


class DatasetError(ValueError):
    """A data set that cannot be used as it is: its message says what is wrong.

    Raised by :func:`load_dataset` for a malformed ``.npz`` file, an empty folder, a
    path that is neither a folder, an ``.npz`` file nor a MedMNIST name, and so on. A
    subclass of :class:`ValueError`.
    """


def find_image_files(folder: str | os.PathLike) -> list[str]:
    """The image files under ``folder``, recursively, sorted; hidden ones left out.

    Files are picked by their ending (:data:`IMAGE_EXTENSIONS`, any case). Files and
    folders whose name starts with a dot are left out: macOS writes ``._name.png``
    metadata files beside images on shared drives, which are not images.
    :func:`load_image_folder` leaves out the same files.

    Parameters
    ----------
    folder : str or path-like
        The folder to search.

    Returns
    -------
    list of str
        Paths, sorted; empty when the folder holds no image file.

    Raises
    ------
    NotADirectoryError
        When ``folder`` is not a folder (missing, or a file).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is not a folder.")
    return sorted(
        str(path)
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(_hidden(part) for part in path.relative_to(folder).parts)
        and path.is_file()
    )


def _hidden(name: str) -> bool:
    return name.startswith(".")


@validate_params(
    {"path": [str, os.PathLike], "extensions": [tuple, list]},
    prefer_skip_nested_validation=True,
)
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
    from torchvision.datasets.folder import make_dataset

    if not os.fspath(path).strip():
        raise ValueError("load_image_folder got an empty path; pass the root folder.")
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise NotADirectoryError(
            f"{str(root)!r} is a file; load_image_folder needs a folder of class sub-folders."
        )
    # Hidden class folders and files (e.g. macOS's ._name.png) are left out, as by
    # find_image_files: they are not images.
    class_names = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not _hidden(entry.name)
    )
    if not class_names:
        raise FileNotFoundError(f"Couldn't find any class folder in {str(root)!r}.")
    _warn_if_splits(root, class_names)
    endings = tuple(e.lower() for e in extensions)
    samples = make_dataset(
        root,
        {name: i for i, name in enumerate(class_names)},
        is_valid_file=lambda file: (
            file.lower().endswith(endings)
            and not any(_hidden(part) for part in Path(file).relative_to(root).parts)
        ),
    )
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


def _medmnist_root(root) -> Path | None:
    if root is not None and not os.fspath(root).strip():
        raise ValueError("root is an empty path; pass a folder, or None for the default.")
    root = root if root is not None else os.environ.get("MEDMNIST_ROOT")
    return Path(root).expanduser() if root else None


@validate_params(
    {
        "name": [str],
        "split": [StrOptions(set(MEDMNIST_SPLITS))],
        "size": [Options(Integral, set(MEDMNIST_SIZES))],
        "root": [str, os.PathLike, None],
    },
    prefer_skip_nested_validation=True,
)
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
        there (with :data:`~sklearn_cae.downloads.DOWNLOAD_TIMEOUT_S` seconds of socket
        timeout), unless downloads are off (:func:`sklearn_cae.downloads.offline`).

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
        For an unknown name, split or size, or an empty ``root``.
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
    if not have_file and offline():
        raise FileNotFoundError(f"{filename} is not in {where} and downloads are off. {howto}")
    kwargs = {"split": split, "download": not have_file, "size": size, "root": str(folder)}
    try:
        folder.mkdir(parents=True, exist_ok=True)  # medmnist downloads only into a folder
        with download_timeout(DOWNLOAD_TIMEOUT_S):  # an unreachable server must not hang
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


@validate_params(
    {
        "y": ["array-like"],
        "fraction": [Interval(Real, 0, None, closed="neither")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def stratified_subset(y, fraction: float, random_state: int = 0) -> np.ndarray:
    """Sorted positions of a stratified ``fraction`` of ``y``: the labelled images.

    Each class keeps ``round(fraction * its count)`` images, at least 2, drawn without
    replacement by ``numpy.random.default_rng(random_state)``, class by class in sorted
    order. The demo, the benchmarks and the command line's ``--max-images`` use it, so
    that a fraction and a seed name the same images everywhere.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    fraction : float > 0
        Fraction to keep; 1 or more keeps every position.
    random_state : int >= 0, default=0
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


@validate_params(
    {"path_or_name": [str, os.PathLike], "split": [StrOptions(set(MEDMNIST_SPLITS))]},
    prefer_skip_nested_validation=True,
)
def load_dataset(
    path_or_name: str | os.PathLike, split: str = "train"
) -> tuple[list[str] | np.ndarray, np.ndarray]:
    """Load labelled images from a folder, an ``.npz`` file or a MedMNIST name.

    What the ``sklearn-cae`` command line reads as its ``DATA`` argument.

    Parameters
    ----------
    path_or_name : str or path
        An ImageFolder-style folder (one sub-folder of images per class, see
        :func:`load_image_folder`), a path to an ``.npz`` file holding ``images`` and
        ``labels`` (and optionally ``class_names``, indexed by integer labels), or a
        MedMNIST 2-D data set name such as ``"breastmnist"`` (read by
        :func:`load_medmnist` from ``$MEDMNIST_ROOT`` when set).
    split : {"train", "val", "test"}, default="train"
        MedMNIST split; ignored for folders and ``.npz`` files.

    Returns
    -------
    X : list of str or ndarray
        Image file paths (folder) or an array of images (``.npz``, MedMNIST).
    y : ndarray of str
        Class name of each image: the sub-folder's name, the ``class_names`` entry
        (or the label itself) of an ``.npz`` file, MedMNIST's label name.

    Raises
    ------
    DatasetError
        When ``path_or_name`` is empty, names nothing loadable, or holds malformed
        arrays or labels; the message says what is wrong.
    FileNotFoundError, ValueError
        From :func:`load_image_folder` and :func:`load_medmnist`.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from sklearn_cae.datasets import load_dataset
    >>> path = Path(tempfile.mkdtemp()) / "tiny.npz"
    >>> images, labels = np.zeros((4, 8, 8), np.uint8), [0, 1, 0, 1]
    >>> np.savez(path, images=images, labels=labels, class_names=["benign", "malignant"])
    >>> X, y = load_dataset(path)
    >>> X.shape, y.tolist()
    ((4, 8, 8), ['benign', 'malignant', 'benign', 'malignant'])
    """
    data = os.fspath(path_or_name)
    if not data.strip():
        raise DatasetError("DATA is an empty string")
    path = Path(data).expanduser()
    if path.is_dir():
        paths, labels, class_names = load_image_folder(path)
        if len(paths) == 0:
            raise DatasetError(f"no images found in the class sub-folders of {path}")
        return [str(p) for p in paths], np.asarray(class_names)[np.asarray(labels)]
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    if path.exists() or path.suffix or "/" in data or "\\" in data:
        raise DatasetError(
            f"DATA {data!r} is not a folder of class sub-folders, an .npz file or a MedMNIST name"
        )
    return _load_medmnist_by_name(data, split)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"images", "labels"} - set(archive.files)
            if missing:
                raise DatasetError(
                    f"{path} lacks the array(s) {sorted(missing)}; it must hold 'images' and "
                    f"'labels' (it has {archive.files})"
                )
            images, labels = archive["images"], archive["labels"]
            names = archive["class_names"] if "class_names" in archive.files else None
    except DatasetError:
        raise
    except Exception as exc:  # not a zip, truncated, pickled objects, ...
        raise DatasetError(f"cannot read {path} as an .npz file ({error_reason(exc)})") from None
    if np.ndim(images) == 0:
        raise DatasetError(f"{path}: 'images' is a scalar, not an array of images")
    return images, _npz_class_names(path, labels, names, len(images))


def _npz_class_names(path: Path, labels: np.ndarray, names, n_images: int) -> np.ndarray:
    """Class names from an .npz's labels: names themselves, or indices into class_names."""
    if labels.ndim == 2 and labels.shape[1] == 1:  # MedMNIST's (n, 1) column
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n_images:
        raise DatasetError(
            f"{path}: 'labels' must be 1-D with one label per image, got shape {labels.shape} "
            f"for {n_images} images"
        )
    if labels.dtype.kind in "US":
        if names is not None:
            raise DatasetError(
                f"{path}: 'labels' holds names, so 'class_names' (names for integer labels) "
                "must not be given"
            )
        return labels.astype(str)
    if labels.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: 'labels' must be integers or strings, not {labels.dtype}")
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise DatasetError(
                f"{path}: 'labels' must be class indices (whole numbers) or names; label "
                f"{i} is {labels[i]}"
            )
    labels = labels.astype(np.int64)
    if names is None:
        return labels.astype(str)
    names = np.asarray(names).astype(str)
    if names.ndim != 1 or len(names) == 0 or len(set(names)) != len(names):
        raise DatasetError(
            f"{path}: 'class_names' must be a 1-D list of distinct names, got {names.tolist()}"
        )
    bad = (labels < 0) | (labels >= len(names))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"{path}: label {labels[i]} of image {i} is not an index into 'class_names' "
            f"(0 to {len(names) - 1}: {names.tolist()})"
        )
    return names[labels]


def _load_medmnist_by_name(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A single-label MedMNIST split, with MedMNIST's names for the labels."""
    images, labels = load_medmnist(name, split=split)
    if labels.ndim != 1:
        raise DatasetError(f"{name} is multi-label; load_dataset handles one label per image")
    import medmnist

    label_names = medmnist.INFO[name.lower()]["label"]
    return images, np.asarray([label_names[str(label)] for label in labels])


def take_rows(X: list | np.ndarray, index) -> list | np.ndarray:
    """Rows ``index`` of what :func:`load_dataset` returns: a list of paths or an array.

    Parameters
    ----------
    X : list or ndarray
        Image paths or images.
    index : array-like of int
        Positions to take, in order.

    Returns
    -------
    list or ndarray
        Of the same kind as ``X``.

    Examples
    --------
    >>> from sklearn_cae.datasets import take_rows
    >>> take_rows(["a.png", "b.png", "c.png"], [2, 0])
    ['c.png', 'a.png']
    """
    return [X[i] for i in index] if isinstance(X, list) else X[index]
