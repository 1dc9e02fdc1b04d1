"""``sklearn-cae fit``: fit CAE features + SVC on DATA and save the model."""

from __future__ import annotations

import argparse
import time

import numpy as np

from ._console import CLIError
from ._data import class_counts, indices_in, load_data, smallest_class
from ._io import check_output, save_model
from ._options import add_data_options, add_model_options, add_run_options, pipelines

NAME = "fit"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="fit CAE features + SVC on DATA and save the model",
        description="Fit CAETransferFeaturizer + StandardScaler + SVC on all of DATA and save "
        "the pipeline with joblib; it predicts class names and class probabilities (Platt "
        "scaling on cross-validated SVC scores: CalibratedClassifierCV(SVC(), "
        "ensemble=False)). Run options (--device, --cache, -v, -q) are not saved with the "
        "model.",
    )
    add_data_options(parser)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="file to write, e.g. model.joblib; checked before fitting, and replaced only "
        "once the new model is completely written",
    )
    add_model_options(parser)
    add_run_options(parser)


def run(args: argparse.Namespace) -> None:
    from ..evaluation import Progress
    from ..pipelines import describe_steps

    progress = Progress(args.quiet)
    data, X, y = load_data(args)
    if len(np.unique(y)) < 2:
        raise CLIError("DATA has a single class; a classifier needs two or more")
    inputs = [args.data, *(X if isinstance(X, list) else [])]
    output = check_output(args.output, inputs, "model")  # before the long fit
    pipe = pipelines(args, y, smallest_class=smallest_class(y))["CAETransferFeaturizer"]
    progress.line(
        f"fitting {describe_steps('CAETransferFeaturizer', args.resample)} on {len(y)} images "
        f"of classes {class_counts(y)}"
    )
    start = time.perf_counter()
    with indices_in(data):
        pipe.fit(X, y)
    save_model(pipe, output)
    print(
        f"fitted on {len(y)} images, classes {[str(c) for c in pipe.classes_]}, in "
        f"{time.perf_counter() - start:.1f} s; saved to {args.output}"
    )
