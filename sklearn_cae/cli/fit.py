"""``sklearn-cae fit``: fit CAE features + SVC on DATA and save the model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._console import CLIError
from ._data import check_classes, class_counts, cv_scoring, indices_in, load_data, smallest_class
from ._io import check_model_output, check_output, require_skops, save_model
from ._options import (
    add_data_options,
    add_model_options,
    add_run_options,
    check_options,
    folds_or_none,
    pipelines,
)

NAME = "fit"

# Folds of the cross-validation whose scores go on a --card, unless --cv says otherwise.
_CARD_FOLDS = 5


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="fit CAE features + SVC on DATA and save the model",
        description="Fit CAETransferFeaturizer + SVC on all of DATA and save "
        "the pipeline, as .skops (loads without running code) or .joblib (a pickle) by the "
        "extension of -o; it predicts class names and class probabilities (Platt scaling on "
        "cross-validated SVC scores: CalibratedClassifierCV(SVC(), ensemble=False)). Run "
        "options (--device, --cache, -v, -q) are not saved with the model.",
    )
    add_data_options(parser)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="file to write: model.skops (loads without running code; needs the deploy "
        "extra) or model.joblib (a pickle); checked before fitting, and replaced only once "
        "the new model is completely written",
    )
    parser.add_argument(
        "--unlabelled",
        metavar="PATH",
        help="unlabelled images to fit beside DATA's labelled ones: a folder (searched "
        "recursively) or an .npz file with an 'images' array; they get the label -1, the "
        "featurizer learns from every image and the SVC from the labelled ones (see "
        "docs/semi_supervised.rst)",
    )
    parser.add_argument(
        "--card",
        metavar="PATH",
        help="also write a model card (Markdown, skops' format) to PATH: parameters, "
        "backbone and weights, training set, cross-validation scores, package versions",
    )
    parser.add_argument(
        "--cv",
        type=folds_or_none,
        metavar="K",
        help=f"cross-validate the pipeline in K folds before the final fit, print the scores "
        f"(as 'evaluate' does) and put them on the --card; about K times the fit's time "
        f"(default: {_CARD_FOLDS} with --card, else 0: none)",
    )
    add_model_options(parser)
    add_run_options(parser)


def run(args: argparse.Namespace) -> None:
    from ..evaluation import Progress
    from ..pipelines import describe_steps

    progress = Progress(args.quiet)
    check_options(args)
    inputs = [args.data, *([args.unlabelled] if args.unlabelled else [])]
    output = check_model_output(args.output, inputs)  # before the long fit
    if output.suffix.lower() == ".skops" and args.resample != "none":
        raise CLIError(
            "a .skops model loads only trusted types, and imbalanced-learn's (--resample) "
            "are not among them: save it as .joblib, or leave out --resample"
        )
    card = _check_card(args, inputs, output)
    n_folds = args.cv if args.cv is not None else (_CARD_FOLDS if card else 0)
    if args.unlabelled and not Path(args.unlabelled).expanduser().exists():
        raise CLIError(f"--unlabelled: no such folder or file: {args.unlabelled}")
    data, X, labels = load_data(args)
    check_classes(labels, n_folds or None, option="--cv")
    X, y, n_unlabelled = _with_unlabelled(args, X, labels)
    cv_scores = _cross_validate(args, data, X, y, n_folds, progress) if n_folds else {}
    semi = n_unlabelled > 0
    pipe = pipelines(args, labels, smallest_class=smallest_class(labels), unlabelled=semi)
    pipe = pipe["CAETransferFeaturizer"]
    also = f" and {n_unlabelled} unlabelled images" if semi else ""
    progress.line(
        f"fitting {describe_steps('CAETransferFeaturizer', args.resample)} on {len(labels)} "
        f"images of classes {class_counts(labels)}{also}"
    )
    start = time.perf_counter()
    with indices_in(data):
        pipe.fit(X, y)
    seconds = time.perf_counter() - start
    save_model(pipe, output)
    if card:
        _write_card(args, pipe, card, labels, n_unlabelled, cv_scores)
    print(
        f"fitted on {len(labels)} images{also}, classes {[str(c) for c in pipe.classes_]}, in "
        f"{seconds:.1f} s; saved to {args.output}" + (f", card to {args.card}" if card else "")
    )


def _check_card(args: argparse.Namespace, inputs: list[str], output: Path) -> Path | None:
    if args.card is None:
        return None
    card = check_output(args.card, inputs, "model card")
    if card == output:
        raise CLIError(f"--card {args.card} is the model file; give the card its own name")
    require_skops("--card")
    return card


def _with_unlabelled(args: argparse.Namespace, X, labels):
    """``(X, y, n)``: DATA's images then --unlabelled's (label -1), and their number."""
    if not args.unlabelled:
        return X, labels, 0
    from ..semi_supervised import load_unlabelled, with_unlabelled

    unlabelled = load_unlabelled(args.unlabelled)
    X, y = with_unlabelled(X, labels, unlabelled)
    return X, y, len(unlabelled)


def _cross_validate(args, data, X, y, n_folds: int, progress) -> dict[str, float]:
    """Cross-validate the pipeline as ``evaluate`` does; print the table, return the scores.

    Test folds hold labelled images only; every unlabelled image is in every training
    fold. The SVC is not calibrated here: calibration does not change the ranking, and
    the scores are those ``evaluate`` reports for CAETransferFeaturizer.
    """
    from ..evaluation import cross_validate_methods, fit_and_score, format_table
    from ..semi_supervised import LabelledStratifiedKFold, labelled_rows

    splitter = LabelledStratifiedKFold(n_folds, shuffle=True, random_state=args.random_state)
    cv_folds = list(splitter.split(X, y))
    labels = labelled_rows(y)[1]
    fewest = min(smallest_class(labelled_rows(y[train])[1]) for train, _ in cv_folds)
    semi = len(labels) < len(y)
    method = pipelines(args, smallest_class=fewest, unlabelled=semi)["CAETransferFeaturizer"]
    score_in_fold = fit_and_score(X, y, cv_scoring(labels))

    def score_fold(pipe, train, test):
        with indices_in(data):
            return score_in_fold(pipe, train, test)

    [result] = cross_validate_methods(
        {"CAETransferFeaturizer": method}, cv_folds, score_fold, progress=progress
    )
    print(format_table([result], first_column="features"), flush=True)
    scores = {}
    for metric, values in result.scores.items():
        scores[f"{metric} ({n_folds}-fold CV, mean)"] = float(values.mean())
        scores[f"{metric} ({n_folds}-fold CV, std)"] = float(values.std())
    return scores


def _write_card(args, pipe, card: Path, labels, n_unlabelled: int, cv_scores) -> None:
    from ..persistence import write_model_card

    training_set = {"source": args.data, "labelled images": len(labels)}
    training_set["classes"] = class_counts(labels)
    if n_unlabelled:
        training_set["unlabelled images"] = f"{n_unlabelled} (from {args.unlabelled})"
    if args.max_images:
        training_set["subset"] = f"--max-images {args.max_images} (stratified)"
    write_model_card(
        pipe,
        card,
        training_set=training_set,
        cv_scores=cv_scores or None,
        model_file=Path(args.output).name,
    )
