"""Options shared by several commands: their groups, value parsers, and what they build.

The option groups (``DATA``, model options, run options) are added to a command's
parser by :func:`add_data_options`, :func:`add_model_options` and
:func:`add_run_options`; :func:`pipelines` turns the parsed model options into the
package's pipelines (:mod:`sklearn_cae.pipelines`).
"""

from __future__ import annotations

import argparse

from ._console import epoch_table_line

# images.INTENSITY_POLICIES, datasets.MEDMNIST_SPLITS and pipelines.SAMPLERS, spelled out
# so that --help imports neither torch nor scikit-learn (tests/test_cli.py keeps them equal).
INTENSITY_NAMES = ("auto", "minmax", "dtype", "dicom_window")
SPLIT_NAMES = ("train", "val", "test")
SAMPLER_NAMES = ("smote", "undersample", "oversample")

# Featurizer parameters that the model options set (the options' dest names).
_FEATURIZER_OPTIONS = (
    *("backbone", "layer", "layer_sizes", "bottleneck", "sparsity"),
    *("image_size", "max_epochs", "batch_size", "device", "intensity", "cache"),
)


# ---------------------------------------------------------------- value parsers
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    return tuple(positive_int(part) for part in text.split(","))


def folds(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"needs at least 2 folds, got {text!r}")
    return value


def intensity(text: str):
    """A policy name, or ``LOW,HIGH`` (a window such as a CT window in HU)."""
    if text in INTENSITY_NAMES:
        return text
    parts = text.split(",")
    try:
        window = tuple(float(part) for part in parts)
    except ValueError:
        window = ()
    if len(window) == 2:
        from ..images import check_intensity

        try:
            return check_intensity(window)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(
        f"expected {', '.join(INTENSITY_NAMES)} or a window LOW,HIGH with LOW < HIGH "
        f"(e.g. -1000,400), got {text!r}"
    )


def join_option_values(argv: list[str]) -> list[str]:
    """``--intensity -1000,400`` as ``--intensity=-1000,400``.

    argparse takes a value starting with "-" for an option unless it is a plain
    negative number, and a CT window starts with one.
    """
    joined, i = [], 0
    while i < len(argv):
        if argv[i] == "--intensity" and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            joined.append(f"--intensity={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


# ---------------------------------------------------------------- option groups
def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        metavar="DATA",
        help="an ImageFolder-style folder (DATA/<class>/<image>), an .npz file with 'images' "
        "and 'labels' arrays (optional 'class_names'), or a MedMNIST name such as "
        "'breastmnist' (read from $MEDMNIST_ROOT when set)",
    )
    parser.add_argument(
        "--split",
        choices=SPLIT_NAMES,
        default="train",
        help="MedMNIST split to use (default: %(default)s)",
    )
    parser.add_argument(
        "--max-images",
        type=positive_int,
        metavar="N",
        help="use a stratified random subset of N images (default: all)",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model options (defaults: the featurizer's own)")
    group.add_argument("--backbone", help="backbone name, e.g. efficientnet_lite0 or resnet18")
    group.add_argument(
        "--layer", action="append", help="layer to tap; repeat for several (hierarchical) layers"
    )
    group.add_argument(
        "--layer-sizes",
        type=int_list,
        metavar="N[,N...]",
        help="widths of the CAE's encoder convolutions, e.g. 256,128",
    )
    group.add_argument("--bottleneck", type=positive_int, metavar="N", help="CAE code channels")
    group.add_argument(
        "--sparsity", type=float, metavar="WEIGHT", help="L1 weight on the CAE code (0: dense)"
    )
    group.add_argument("--image-size", type=positive_int, metavar="PIXELS", help="resize to this")
    group.add_argument("--max-epochs", type=positive_int, metavar="N", help="CAE training epochs")
    group.add_argument("--batch-size", type=positive_int, metavar="N", help="images per batch")
    group.add_argument(
        "--intensity",
        type=intensity,
        metavar="POLICY",
        help="pixel values to [0, 1]: auto, minmax, dtype, dicom_window (each DICOM file's "
        "own window) or a window LOW,HIGH such as a CT window in HU, e.g. "
        "'--intensity -1000,400' (see docs/inputs.md)",
    )
    group.add_argument(
        "--resample",
        choices=("none", *SAMPLER_NAMES),
        default="none",
        help="balance the classes the SVC is fitted on with imbalanced-learn: SMOTE (up to 5 "
        "neighbours), random undersampling or random oversampling of the scaled features "
        "of the training images (default: %(default)s)",
    )
    group.add_argument(
        "--random-state", type=int, default=0, metavar="SEED", help="seed (default: %(default)s)"
    )


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Where and how a command runs; never stored in a saved model."""
    group = parser.add_argument_group("run options")
    group.add_argument("--device", help="'auto' (CUDA when available), 'cpu' or 'cuda[:N]'")
    group.add_argument(
        "--cache",
        metavar="DIR",
        help="folder keeping each image's backbone maps between runs, folds and methods "
        "(see docs/caching.rst)",
    )
    loudness = group.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="also the featurizers' progress bars and the auto-encoder's epoch table",
    )
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, only results and errors"
    )


# ------------------------------------------------------------- what they build
def check_cache_option(args: argparse.Namespace) -> None:
    """A bad --cache folder fails now, not after loading the data."""
    if getattr(args, "cache", None) is not None:
        from ..cache import check_cache

        check_cache(args.cache)


def featurizer_options(args: argparse.Namespace) -> dict:
    """The featurizer parameters the options give (None: the featurizer's default)."""
    params = {name: getattr(args, name) for name in _FEATURIZER_OPTIONS}
    if params["layer"] and len(params["layer"]) == 1:
        params["layer"] = params["layer"][0]
    params["verbose"] = args.verbose
    if args.verbose:
        params["cae_params"] = {"callbacks__print_log__sink": epoch_table_line}
    return params


def pipelines(args: argparse.Namespace, y=None, *, smallest_class: int | None = None) -> dict:
    """The options' pipelines: each featurizer + StandardScaler [+ sampler] + SVC.

    See :func:`sklearn_cae.pipelines.featurizer_pipelines` for ``y`` and
    ``smallest_class``.
    """
    from ..pipelines import featurizer_pipelines

    return featurizer_pipelines(
        featurizer_options(args),
        resample=args.resample,
        random_state=args.random_state,
        y=y,
        smallest_class=smallest_class,
    )
