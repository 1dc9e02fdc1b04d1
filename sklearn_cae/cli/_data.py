"""The ``DATA`` argument: loading it, ``--max-images``, its classes, and its image numbers."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np

from ._console import CLIError


def check_split(args: argparse.Namespace) -> None:
    """``--split`` picks a MedMNIST split: refuse it for a folder or an .npz file.

    Both are one split already; ignoring ``--split test`` would silently fit or score
    on whatever DATA holds.
    """
    if args.split is None:
        return
    path = Path(args.data).expanduser()
    if not (path.exists() or path.suffix.lower() == ".npz"):
        return  # a MedMNIST name
    kind = "folder" if path.is_dir() else "file"
    hint = (
        f"; for its {args.split} split give {path / args.split}"
        if (path / args.split).is_dir()
        else ""
    )
    raise CLIError(
        f"--split {args.split} chooses a split of a MedMNIST data set, and DATA {args.data} "
        f"is a {kind}, used as it is: leave out --split{hint}"
    )


def load_data(args: argparse.Namespace):
    """``DATA`` as given, and the images and labels the command uses.

    Returns ``(data, X, y)``: ``data`` as :func:`sklearn_cae.datasets.load_dataset`
    loads it, and ``X``, ``y`` its ``--max-images`` subset (all of it by default).
    """
    from ..datasets import load_dataset

    check_split(args)
    data, labels = load_dataset(args.data, args.split or "train")
    X, y = subsample(data, labels, args.max_images, args.random_state)
    return data, X, y


def subsample(X, y, max_images: int | None, random_state: int):
    """A stratified subset of about ``max_images`` images (see ``stratified_subset``)."""
    if max_images is None or max_images >= len(y):
        return X, y
    from ..datasets import stratified_subset, take_rows

    keep = stratified_subset(y, max_images / len(y), random_state)
    return take_rows(X, keep), y[keep]


def class_counts(y) -> str:
    """``'a' (12), 'b' (30)``: the classes as the classifier will see them."""
    classes, counts = np.unique(y, return_counts=True)
    return ", ".join(f"{str(c)!r} ({n})" for c, n in zip(classes, counts, strict=True))


def cv_scoring(y) -> dict:
    """The CV table's metrics: balanced accuracy, then ROC AUC (two classes) or macro F1."""
    from sklearn.metrics import get_scorer

    second = ("roc_auc", "ROC AUC") if len(np.unique(y)) == 2 else ("f1_macro", "macro F1")
    return {"balanced acc.": get_scorer("balanced_accuracy"), second[1]: get_scorer(second[0])}


def check_classes(y, folds: int | None = None, *, option: str = "--folds") -> None:
    """Two classes or more, and (for ``folds``-fold CV) at least ``folds`` images of each."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise CLIError(
            f"DATA has a single class ({str(classes[0])!r}); a classifier needs two or more"
        )
    if folds is None or counts.min() >= folds:
        return
    name, n = str(classes[np.argmin(counts)]), int(counts.min())
    fix = f"use {option} {n} or fewer" if n >= 2 else "give it more images, or leave the class out"
    raise CLIError(
        f"class {name!r} has {n} image{'' if n == 1 else 's'}, fewer than {option}={folds} "
        f"(each fold needs one of each class): {fix}"
    )


def smallest_class(y, folds=None) -> int:
    """The fewest images of a class in ``y``, or in any training fold of ``folds``."""
    if folds is None:
        return int(np.unique(y, return_counts=True)[1].min())
    return min(smallest_class(y[train]) for train, _ in folds)


@contextlib.contextmanager
def indices_in(data):
    """Re-word image errors to give the image's index in ``data`` (the user's own list).

    The featurizers number images within what they are given: a CV fold, or a
    ``--max-images`` subset. File errors carry ``image_index`` and ``image_path``.
    """
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as exc:
        path = getattr(exc, "image_path", None)
        if path is None or not isinstance(data, list) or path not in data:
            raise
        from ..images import describe_image

        message = str(exc).replace(
            describe_image(exc.image_index, path), describe_image(data.index(path), path), 1
        )
        raise type(exc)(message) from None
