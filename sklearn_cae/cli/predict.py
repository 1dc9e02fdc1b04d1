"""``sklearn-cae predict``: a CSV of predicted classes and class scores for image files."""

from __future__ import annotations

import argparse
import csv
import sys

import numpy as np

from .._utils import atomic_write
from ._console import CLIError
from ._io import check_output, image_files, load_model
from ._options import add_run_options, cache_option, check_options

NAME = "predict"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="predict the class of image files with a saved model",
        description="Load a model saved by 'fit' and write one CSV row per image: path, "
        "prediction, and one column per class: proba_<class> when the model has "
        "predict_proba (models from 'fit' do), else decision scores score_<class> (one "
        "column for two classes). Folders are searched recursively for image files.",
        epilog="Security: a .skops model loads without running code (only "
        "sklearn_cae.persistence.TRUSTED_TYPES and scikit-learn types are trusted; a file "
        "asking for another type is refused, naming it); a .joblib model is a pickle, and "
        "loading a pickle runs code stored in it: load only files you trust.",
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="model file written by 'fit': .skops, or .joblib (a pickle: trusted files only)",
    )
    parser.add_argument("images", metavar="IMAGES", nargs="+", help="image files or folders")
    parser.add_argument(
        "-o", "--output", metavar="CSV", help="CSV file to write (default: standard output)"
    )
    add_run_options(parser)


def run(args: argparse.Namespace) -> None:
    from ..evaluation import Progress

    progress = Progress(args.quiet)
    check_options(args)
    files = image_files(args.images)
    output = None
    if args.output is not None:
        output = check_output(args.output, [args.model, *args.images, *files], "CSV")
    model = load_model(args.model)
    if not hasattr(model, "predict"):
        raise CLIError(f"{args.model} holds a {type(model).__name__}, not a fitted classifier")
    _set_run_options(model, args)
    progress.line(f"predicting {len(files)} images with {args.model}")
    labels, kind, classes, scores = _class_scores(model, files)
    header = ["path", "prediction", *(f"{kind}_{c}" for c in classes)]
    rows = [header]
    for path, label, row in zip(files, labels, scores, strict=True):
        rows.append([path, str(label), *(f"{v:.6g}" for v in row)])
    if output is None:
        _csv_writer(sys.stdout).writerows(rows)
        return
    # surrogateescape: file names that are not valid UTF-8 are written back as they were.
    with atomic_write(output, "w", newline="", encoding="utf-8", errors="surrogateescape") as file:
        _csv_writer(file).writerows(rows)
    what = {"proba": " and class probabilities", "score": " and decision scores"}.get(kind, "")
    progress.line(f"wrote {len(files)} predictions{what} to {args.output}")


def _csv_writer(file):
    """CSV rows ending in \\n on every OS (the csv module's default is \\r\\n)."""
    return csv.writer(file, lineterminator="\n")


def _set_run_options(model, args: argparse.Namespace) -> None:
    """--device, --cache and -v / -q on the featurizers of a loaded model."""
    from ..pipelines import find_featurizers

    featurizers = [featurizer for featurizer, _ in find_featurizers(model)]
    options = {"device": args.device, "cache": cache_option(args)}
    given = {k: v for k, v in options.items() if v is not None}
    if given and not featurizers:
        names = ", ".join(f"--{k}" for k in given)
        raise CLIError(f"{names} need(s) a model holding an sklearn-cae featurizer")
    # Bars over the backbone batches: by default on a terminal, always with -v.
    verbose = 1 if args.verbose or (not args.quiet and sys.stderr.isatty()) else 0
    for featurizer in featurizers:
        featurizer.set_params(**given, verbose=verbose)


def _class_scores(model, X):
    """Predicted labels and per-class scores, featurizing ``X`` once.

    Returns ``(labels, kind, classes, scores)``: ``kind`` is "proba" (predict_proba),
    "score" (decision_function) or None when the classifier has neither.
    """
    from ..evaluation import split_final_step

    model, X = split_final_step(model, X)  # a pipeline: the features once, then the classifier
    labels = model.predict(X)
    classes = np.asarray(getattr(model, "classes_", []))
    if hasattr(model, "predict_proba"):
        return labels, "proba", classes, model.predict_proba(X)
    if hasattr(model, "decision_function"):
        scores = np.asarray(model.decision_function(X))
        if scores.ndim == 1:  # binary: the score of classes_[1]
            return labels, "score", classes[1:], scores[:, np.newaxis]
        return labels, "score", classes, scores
    return labels, None, classes[:0], np.empty((len(labels), 0))
