"""``sklearn-cae evaluate``: cross-validate CAE features against transfer-learned ones."""

from __future__ import annotations

import argparse

import numpy as np

from ._console import CLIError
from ._data import class_counts, indices_in, load_data, smallest_class
from ._options import add_data_options, add_model_options, add_run_options, folds, pipelines

NAME = "evaluate"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="cross-validate CAE features against transfer-learned features",
        description="Cross-validate features + StandardScaler + SVC for CAETransferFeaturizer "
        "and the BackboneFeaturizer baseline, and print the classes with their image counts, "
        "then balanced accuracy, ROC AUC (two classes) or macro F1 (more), and seconds. A "
        "progress line per method and fold goes to standard error.",
    )
    add_data_options(parser)
    parser.add_argument(
        "--folds", type=folds, default=5, help="cross-validation folds (default: %(default)s)"
    )
    add_model_options(parser)
    add_run_options(parser)


def run(args: argparse.Namespace) -> None:
    from sklearn.metrics import get_scorer

    from ..evaluation import (
        Progress,
        cross_validate_methods,
        fit_and_score,
        format_table,
        stratified_folds,
    )
    from ..images import as_image_source
    from ..pipelines import describe_steps

    data, X, y = load_data(args)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise CLIError(
            f"DATA has a single class ({str(classes[0])!r}); evaluation needs two or more"
        )
    if counts.min() < args.folds:
        raise CLIError(
            f"class {str(classes[np.argmin(counts)])!r} has {counts.min()} images, fewer "
            f"than --folds={args.folds}"
        )
    with indices_in(data):
        as_image_source(X)  # headers and pixel checks once, numbered as in DATA
    second = ("roc_auc", "ROC AUC") if len(classes) == 2 else ("f1_macro", "macro F1")
    scoring = {"balanced acc.": get_scorer("balanced_accuracy"), second[1]: get_scorer(second[0])}
    cv_folds = stratified_folds(y, args.folds, args.random_state)
    print(
        f"{args.data}: {len(y)} images, {len(classes)} classes, {args.folds}-fold CV, "
        f"{describe_steps('features', args.resample)}",
        flush=True,
    )
    print(f"classes: {class_counts(y)}", flush=True)
    fit_and_score_fold = fit_and_score(X, y, scoring)

    def score_fold(pipe, train, test):
        with indices_in(data):
            return fit_and_score_fold(pipe, train, test)

    results = cross_validate_methods(
        pipelines(args, smallest_class=smallest_class(y, cv_folds)),
        cv_folds,
        score_fold,
        progress=Progress(args.quiet),
    )
    print(format_table(results, first_column="features"))
