"""Options shared by several commands: their groups, value parsers, and what they build.

The option groups (``DATA``, model options, run options) are added to a command's
parser by :func:`add_data_options`, :func:`add_model_options` and
:func:`add_run_options`; :func:`check_options` checks, before any work, what argparse
cannot (layer names, the device, the cache folder); :func:`pipelines` turns the parsed
model options into the package's pipelines (:mod:`sklearn_cae.pipelines`, with
:mod:`sklearn_cae.semi_supervised`'s classifier on labelled rows when some images are
unlabelled).

Help texts write option examples as one word (``--intensity=-1000,400``): argparse
wraps help at spaces, and an example must never be cut across two lines.
"""

from __future__ import annotations

import argparse

from ._console import CLIError, epoch_table_line

# images.INTENSITY_POLICIES, datasets.MEDMNIST_SPLITS and pipelines.SAMPLERS, spelled out
# so that --help imports neither torch nor scikit-learn (tests/test_cli.py keeps them equal).
INTENSITY_NAMES = ("auto", "minmax", "dtype", "dicom_window")
SPLIT_NAMES = ("train", "val", "test")
SAMPLER_NAMES = ("smote", "undersample", "oversample")

# Featurizer parameters that the model options set (the options' dest names); "cache"
# comes from cache_option (--cache with --cache-max-size).
_FEATURIZER_OPTIONS = (
    *("backbone", "layer", "layer_sizes", "bottleneck", "sparsity", "supervision"),
    *("corrupted_views", "image_size", "max_epochs", "batch_size", "device", "intensity"),
)


# ---------------------------------------------------------------- value parsers
def _number(text: str, kind: type, accept, expected: str):
    """``kind(text)`` if ``accept`` takes it, else argparse's one-line error."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def n_jobs(text: str) -> int:
    """joblib's ``n_jobs``: processes, or -1 for one per core (-2: all cores but one)."""
    return _number(text, int, lambda v: v != 0, "a non-zero integer (-1: every core)")


def _finite_non_negative(value: float) -> bool:
    return 0 <= value < float("inf")


def non_negative_float(text: str) -> float:
    return _number(text, float, _finite_non_negative, "a number >= 0")


def supervision(text: str) -> float | str:
    """``auto`` or a weight >= 0."""
    return (
        "auto"
        if text == "auto"
        else _number(text, float, _finite_non_negative, "auto or a number >= 0")
    )


def fraction(text: str) -> float:
    """A number in (0, 1]: the labelled share of each training fold."""
    return _number(text, float, lambda v: 0 < v <= 1, "a fraction in (0, 1], e.g. 0.1")


def size(text: str) -> int:
    """Bytes from ``500M``, ``20G``, ``1.5GiB`` or a number (see ``cache.parse_size``)."""
    from ..cache import parse_size

    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 500M, 20G or 1.5GiB (binary units), got {text!r}"
        ) from None


def int_list(text: str) -> tuple[int, ...]:
    return tuple(positive_int(part) for part in text.split(","))


def folds(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"needs at least 2 folds, got {text!r}")
    return value


def folds_or_none(text: str) -> int:
    """``folds``, or 0 for no cross-validation."""
    return 0 if text.strip() == "0" else folds(text)


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
        f"(e.g. --intensity=-1000,400), got {text!r}"
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
        help="MedMNIST split to use (default: train); refused for a folder or an .npz file, "
        "which is one split already: give that split's folder or file as DATA",
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
        "--sparsity",
        type=non_negative_float,
        metavar="WEIGHT",
        help="L1 weight on the CAE code (0: dense)",
    )
    group.add_argument(
        "--supervision",
        type=supervision,
        metavar="WEIGHT",
        help="weight of the CAE's classification loss on the labelled images (0: the "
        "auto-encoder never sees a label; auto: 1 when some images are unlabelled, else "
        "0); with --corrupted-views, the setting for few labels and many unlabelled "
        "images (see docs/semi_supervised.rst)",
    )
    group.add_argument(
        "--corrupted-views",
        type=non_negative_int,
        metavar="N",
        help="corrupted copies of each image the CAE learns to reconstruct the clean maps "
        "from (0: none)",
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
        "--intensity=-1000,400 (see docs/inputs.md)",
    )
    group.add_argument(
        "--resample",
        choices=("none", *SAMPLER_NAMES),
        default="none",
        help="balance the classes the SVC is fitted on with imbalanced-learn: SMOTE (up to 5 "
        "neighbours), random undersampling or random oversampling of the features of the "
        "labelled training images (default: %(default)s)",
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
    group.add_argument(
        "--cache-max-size",
        type=size,
        metavar="SIZE",
        help="cap on the --cache folder, e.g. 500M or 20G (binary units); past it the least "
        "recently used maps are evicted (default: no cap)",
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


# ------------------------------------------------------------- checks before work
def check_options(args: argparse.Namespace) -> None:
    """Refuse now, before any data is read, what the options alone show to be wrong.

    The cache folder, ``--cache-max-size`` without ``--cache``, the device, and the
    backbone's name and ``--layer`` names (against
    :func:`sklearn_cae.available_layers`), for the options a command has.
    """
    check_cache_option(args)
    if getattr(args, "device", None) is not None:
        from ..devices import resolve_device

        resolve_device(args.device)
    if getattr(args, "layer", None) or getattr(args, "backbone", None):
        check_layers(args.backbone, args.layer)


def check_cache_option(args: argparse.Namespace) -> None:
    """A bad --cache folder fails now, not after loading the data."""
    if getattr(args, "cache_max_size", None) is not None and args.cache is None:
        raise CLIError("--cache-max-size caps the --cache folder: give --cache DIR too")
    cache_option(args)


def check_layers(backbone: str | None, layers: list[str] | None) -> None:
    """The backbone name exists and each ``--layer`` is one of its layers, listed once."""
    from .. import available_layers
    from ..backbones import DEFAULT_BACKBONE

    backbone = backbone or DEFAULT_BACKBONE
    valid = available_layers(backbone)
    for name in layers or ():
        if name not in valid:
            raise CLIError(
                f"Unknown layer {name!r} for backbone {backbone!r}. Valid layers: {valid}"
            )
    if layers and len(set(layers)) != len(layers):
        raise CLIError(f"--layer names a layer twice: {layers}")


# ------------------------------------------------------------- what they build
def cache_option(args: argparse.Namespace):
    """The featurizers' ``cache``: None, the --cache folder, or a capped ``FeatureCache``."""
    if getattr(args, "cache", None) is None:
        return None
    from ..cache import FeatureCache, check_cache

    if getattr(args, "cache_max_size", None) is None:
        check_cache(args.cache)
        return args.cache
    return FeatureCache(args.cache, max_size=args.cache_max_size)


def featurizer_options(args: argparse.Namespace) -> dict:
    """The featurizer parameters the options give (None: the featurizer's default)."""
    params = {name: getattr(args, name, None) for name in _FEATURIZER_OPTIONS}
    if params["layer"] and len(params["layer"]) == 1:
        params["layer"] = params["layer"][0]
    params["cache"] = cache_option(args)
    params["verbose"] = args.verbose
    if args.verbose:
        params["cae_params"] = {"callbacks__print_log__sink": epoch_table_line}
    return params


def pipelines(
    args: argparse.Namespace,
    y=None,
    *,
    smallest_class: int | None = None,
    unlabelled: bool = False,
) -> dict:
    """The options' pipelines: each featurizer [+ sampler] + SVC.

    See :func:`sklearn_cae.pipelines.featurizer_pipelines` for ``y`` (the labelled
    images' labels) and ``smallest_class`` (the fewest labelled images of a class).
    With ``unlabelled``, the pipelines are fitted with ``y == -1`` for unlabelled
    images: the featurizer learns from every image and the classifier, with its
    sampler, from the labelled ones (:class:`sklearn_cae.semi_supervised.LabelledOnly`).
    """
    from ..pipelines import featurizer_pipelines

    return featurizer_pipelines(
        featurizer_options(args),
        resample=args.resample,
        random_state=args.random_state,
        y=y,
        smallest_class=smallest_class,
        unlabelled=unlabelled,
    )
