"""The ``DATA`` argument: loading it, ``--max-images``, its classes, and its image numbers."""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

from ._options import check_cache_option


def load_data(args: argparse.Namespace):
    """``DATA`` as given, and the images and labels the command uses.

    Returns ``(data, X, y)``: ``data`` as :func:`sklearn_cae.datasets.load_dataset`
    loads it, and ``X``, ``y`` its ``--max-images`` subset (all of it by default).
    A bad ``--cache`` folder fails first, not after the data is loaded.
    """
    from ..datasets import load_dataset

    check_cache_option(args)
    data, labels = load_dataset(args.data, args.split)
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
