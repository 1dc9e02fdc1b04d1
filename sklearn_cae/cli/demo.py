"""``sklearn-cae demo``: the README's demo (see :mod:`sklearn_cae.demo`)."""

from __future__ import annotations

import argparse

from ._options import folds, n_jobs

NAME = "demo"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="cross-validate raw pixels, backbone and CAE features on BreastMNIST",
        description="The README's demo: cross-validate raw pixels + PCA, BackboneFeaturizer and "
        "CAETransferFeaturizer (each + SVC) on a MedMNIST data set and print a table.",
    )
    parser.add_argument("--dataset", default="breastmnist", help="MedMNIST 2-D data set")
    parser.add_argument("--folds", type=folds, default=5, help="folds (default: %(default)s)")
    parser.add_argument(
        "--n-jobs",
        type=n_jobs,
        default=-1,
        help="folds run at once, -1 for one per CPU core (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> None:
    from ..demo import run_demo

    run_demo(args.dataset, n_splits=args.folds, n_jobs=args.n_jobs)
