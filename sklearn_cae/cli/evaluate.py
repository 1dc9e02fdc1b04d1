"""``sklearn-cae evaluate``: cross-validate CAE features against transfer-learned ones."""

from __future__ import annotations

import argparse

import numpy as np

from ._data import check_classes, class_counts, cv_scoring, indices_in, load_data, smallest_class
from ._options import (
    add_data_options,
    add_model_options,
    add_run_options,
    check_options,
    folds,
    fraction,
    pipelines,
)

NAME = "evaluate"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="cross-validate CAE features against transfer-learned features",
        description="Cross-validate features + SVC for CAETransferFeaturizer "
        "and the BackboneFeaturizer baseline, and print the classes with their image counts, "
        "then balanced accuracy, ROC AUC (two classes) or macro F1 (more), and seconds. A "
        "progress line per method and fold goes to standard error.",
    )
    add_data_options(parser)
    parser.add_argument(
        "--folds", type=folds, default=5, help="cross-validation folds (default: %(default)s)"
    )
    parser.add_argument(
        "--labelled-fraction",
        type=fraction,
        default=1.0,
        metavar="F",
        help="the few-label protocol: keep the labels of a stratified fraction F of each "
        "training fold (at least 2 images a class) and mark the rest unlabelled (-1); each "
        "featurizer is fitted on every training image, the SVC on the labelled ones, and "
        "the held-out fold is scored with all its labels, e.g. --labelled-fraction=0.1 "
        "(default: 1, every label)",
    )
    add_model_options(parser)
    add_run_options(parser)


def run(args: argparse.Namespace) -> None:
    from ..evaluation import (
        Progress,
        cross_validate_methods,
        fit_and_score,
        format_table,
        stratified_folds,
    )
    from ..images import as_image_source
    from ..pipelines import describe_steps
    from ..semi_supervised import few_labels_fold_scorer

    check_options(args)
    data, X, y = load_data(args)
    check_classes(y, args.folds)
    with indices_in(data):
        as_image_source(X)  # headers and pixel checks once, numbered as in DATA
    n_classes, scoring = len(np.unique(y)), cv_scoring(y)
    cv_folds = stratified_folds(y, args.folds, args.random_state)
    few_labels = args.labelled_fraction < 1
    regime = f"{args.labelled_fraction:.0%} of each training fold labelled, " if few_labels else ""
    print(
        f"{args.data}: {len(y)} images, {n_classes} classes, {args.folds}-fold CV, "
        f"{regime}{describe_steps('features', args.resample)}",
        flush=True,
    )
    print(f"classes: {class_counts(y)}", flush=True)
    if few_labels:
        score_in_fold = few_labels_fold_scorer(
            X, y, args.labelled_fraction, scoring, args.random_state
        )
        fewest = _fewest_labelled(y, cv_folds, args.labelled_fraction, args.random_state)
    else:
        score_in_fold, fewest = fit_and_score(X, y, scoring), smallest_class(y, cv_folds)

    def score_fold(pipe, train, test):
        with indices_in(data):
            return score_in_fold(pipe, train, test)

    results = cross_validate_methods(
        pipelines(args, smallest_class=fewest, unlabelled=few_labels),
        cv_folds,
        score_fold,
        progress=Progress(args.quiet),
    )
    print(format_table(results, first_column="features"))


def _fewest_labelled(y, cv_folds, labelled_fraction: float, random_state: int) -> int:
    """The fewest labelled images of a class in any training fold of the few-label protocol."""
    from ..semi_supervised import hide_labels, labelled_rows

    return min(
        smallest_class(labelled_rows(hide_labels(y[train], labelled_fraction, random_state))[1])
        for train, _ in cv_folds
    )
