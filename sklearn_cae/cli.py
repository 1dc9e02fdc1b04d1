"""The ``sklearn-cae`` command line: evaluate, fit and predict without writing code.

DATA is an ImageFolder-style folder (one sub-folder of images per class), a MedMNIST
name (read from ``$MEDMNIST_ROOT`` offline), or an ``.npz`` file with ``images`` and
``labels`` arrays (and optionally ``class_names``), read by
:func:`sklearn_cae.datasets.load_dataset`; ``evaluate`` cross-validates with
:mod:`sklearn_cae.evaluation`. Heavy imports happen inside the commands, so ``--help``
answers at once.

Results go to standard output; progress (a line per step, fold and method, and tqdm
bars when standard error is a terminal), warnings and errors to standard error, each
warning and error on one line. ``-q`` silences progress, ``-v`` adds the featurizers'
own bars and the auto-encoder's epoch table (colour codes only on a terminal).

Files are written atomically: a model or CSV is written to a temporary file in the
destination folder and renamed over the destination only once complete, so a full
disk, a file-size limit or Ctrl-C never leaves a truncated file in place of a good one.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import os
import re
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["build_parser", "main"]


class _CLIError(ValueError):
    """A user error, printed as one line."""


def _reason(exc: BaseException) -> str:
    """An exception's message on one line, or its type's name when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One clear line instead of argparse's usage block.
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------- progress
_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def _epoch_table_line(text: str) -> None:
    """skorch's epoch table, without its colour codes unless stdout is a terminal."""
    print(text if sys.stdout.isatty() else _ANSI_CODES.sub("", text), flush=True)


def _warning_printer(prog: str):
    """A ``warnings.showwarning`` printing one line per warning, like errors."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)

    return show


# ------------------------------------------------------------------------ data
def _subsample(X, y, max_images: int | None, random_state: int):
    if max_images is None or max_images >= len(y):
        return X, y
    from sklearn.model_selection import train_test_split

    from .datasets import take_rows

    index = np.arange(len(y))
    keep, _ = train_test_split(index, train_size=max_images, stratify=y, random_state=random_state)
    keep = np.sort(keep)
    return take_rows(X, keep), y[keep]


def _class_counts(y) -> str:
    """``'a' (12), 'b' (30)``: the classes as the classifier will see them."""
    classes, counts = np.unique(y, return_counts=True)
    return ", ".join(f"{str(c)!r} ({n})" for c, n in zip(classes, counts, strict=True))


def _smallest_class(y, folds) -> int:
    """The fewest images of a class in any training fold."""
    return min(int(np.unique(y[train], return_counts=True)[1].min()) for train, _ in folds)


def _image_files(arguments: list[str]) -> list[str]:
    """Expand folders to the image files under them; check that each file exists."""
    from .datasets import IMAGE_EXTENSIONS

    files = []
    for argument in arguments:
        if not argument.strip():
            raise _CLIError("an image argument is an empty string")
        path = Path(argument).expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise _CLIError(f"no image files in folder {path}")
            files.extend(str(p) for p in found)
        elif path.is_file():
            files.append(str(path))
        else:
            raise _CLIError(f"no such image file: {path}")
    return files


# ---------------------------------------------------------------------- output
def _check_output(output: str, inputs: list[str], what: str) -> Path:
    """Fail now, before any work, unless ``output`` can be written; return it resolved.

    ``inputs`` are the paths the command reads: writing over one of them is refused.
    A symbolic link is followed, so the file it points to is the one replaced.
    """
    if not output.strip():
        raise _CLIError(f"the {what} path is an empty string")
    path = Path(os.path.realpath(Path(output).expanduser()))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # a file as a parent folder, a name too long, ...
        raise _CLIError(f"cannot write the {what} to {output}: {_reason(exc)}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise _CLIError(f"the {what} path {output} is a folder; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        raise _CLIError(f"the {what} path {output} exists and is not a regular file")
    if not path.parent.is_dir():
        raise _CLIError(f"folder {path.parent} does not exist")
    if mode is not None and any(_same_file(source, path) for source in inputs):
        raise _CLIError(f"the {what} path {output} is also an input; choose another")
    try:  # the real test of writability (os.access is wrong for root and some mounts)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise _CLIError(f"cannot write to folder {path.parent}: {_reason(exc)}") from None
    return path


def _same_file(a: str, b: Path) -> bool:
    """Whether two paths name one file (links and other spellings included)."""
    try:
        return os.path.samefile(Path(a).expanduser(), b)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _atomic_output(path: Path, mode: str = "wb", **open_kwargs):
    """Open a temporary file next to ``path``; it replaces ``path`` only if all goes well."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:  # disk full, file-size limit, Ctrl-C: keep what was there
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _new_file_mode(path: Path) -> int:
    """The permissions ``path`` has, or those a new file gets (mkstemp's are 0600)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# -------------------------------------------------------------------- pipelines
def _featurizer_params(args, cls) -> dict:
    names = (
        *("backbone", "layer", "layer_sizes", "bottleneck", "sparsity"),
        *("image_size", "max_epochs", "batch_size", "device", "intensity", "cache"),
    )
    accepted = inspect.signature(cls).parameters
    params = {n: getattr(args, n) for n in names if n in accepted and getattr(args, n) is not None}
    if params.get("layer") and len(params["layer"]) == 1:
        params["layer"] = params["layer"][0]
    if "random_state" in accepted:
        params["random_state"] = args.random_state
    params["verbose"] = args.verbose
    if args.verbose and "cae_params" in accepted:
        params["cae_params"] = {"callbacks__print_log__sink": _epoch_table_line}
    return params


def _classifier(y=None):
    """SVC; given the labels ``y``, one with class probabilities where they can be had.

    Probabilities come from Platt scaling fitted on cross-validated SVC scores
    (scikit-learn's replacement for ``SVC(probability=True)``); the features are
    computed once, only the SVC is refitted per calibration fold.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    svc = SVC(class_weight="balanced")
    if y is None:
        return svc
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if smallest < 2:
        warnings.warn(
            "a class has a single image, too few to calibrate probabilities: the model "
            "gives decision scores instead",
            UserWarning,
            stacklevel=2,
        )
        return svc
    return CalibratedClassifierCV(svc, cv=min(5, smallest), ensemble=False)


# --resample: imbalanced-learn's samplers, by option value.
_SAMPLERS = {
    "smote": ("imblearn.over_sampling", "SMOTE"),
    "undersample": ("imblearn.under_sampling", "RandomUnderSampler"),
    "oversample": ("imblearn.over_sampling", "RandomOverSampler"),
}


def _sampler(args, smallest_class: int | None):
    """The --resample sampler, seeded by --random-state; None for 'none'.

    ``smallest_class`` is the fewest images of a class in any set the sampler will
    resample: SMOTE interpolates between a class's nearest neighbours, 5 by default,
    fewer when a class has too few images to have 5.
    """
    resample = args.resample
    if resample == "none":
        return None
    import importlib

    module, name = _SAMPLERS[resample]
    params = {"random_state": args.random_state}
    if resample == "smote" and smallest_class is not None:
        if smallest_class < 2:
            raise _CLIError(
                "--resample smote needs two or more images of each class in each training "
                f"set, and a class has {smallest_class}; use --resample oversample"
            )
        params["k_neighbors"] = min(5, smallest_class - 1)
    return getattr(importlib.import_module(module), name)(**params)


def _steps_description(features: str, args) -> str:
    """``features + StandardScaler [+ sampler] + SVC``, as the pipelines are built."""
    resample = args.resample
    sampler = [] if resample == "none" else [_SAMPLERS[resample][1]]
    return " + ".join([features, "StandardScaler", *sampler, "SVC"])


def _pipelines(args, y=None, *, smallest_class: int | None = None) -> dict:
    """The pipelines the commands fit: each featurizer + StandardScaler + SVC.

    With the labels ``y``, the SVC also gives class probabilities (see ``_classifier``).
    With ``--resample``, an imbalanced-learn sampler comes before the SVC, inside an
    ``imblearn.pipeline.Pipeline``: it resamples the (scaled) features of the images the
    pipeline is fitted on, never those it predicts. ``smallest_class``: the fewest
    images of a class in any set the pipelines are fitted on (see ``_sampler``).
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .featurizer import BackboneFeaturizer, CAETransferFeaturizer

    def pipeline(cls):
        featurizer = cls(**_featurizer_params(args, cls))
        sampler = _sampler(args, smallest_class)
        if sampler is None:
            return make_pipeline(featurizer, StandardScaler(), _classifier(y))
        from imblearn.pipeline import make_pipeline as make_resampling_pipeline

        return make_resampling_pipeline(featurizer, StandardScaler(), sampler, _classifier(y))

    return {
        "CAETransferFeaturizer": pipeline(CAETransferFeaturizer),
        "BackboneFeaturizer": pipeline(BackboneFeaturizer),
    }


def _featurizers(model) -> list:
    """The sklearn-cae featurizers inside a model: pipelines, searches and wrappers."""
    from .featurizer import BackboneFeaturizer, CAETransferFeaturizer

    if isinstance(model, BackboneFeaturizer | CAETransferFeaturizer):
        return [model]
    found = []
    for _, step in getattr(model, "steps", []):
        if hasattr(step, "get_params"):
            found += _featurizers(step)
    for attr in ("best_estimator_", "estimator"):  # fitted searches, FrozenEstimator
        inner = getattr(model, attr, None)
        if hasattr(inner, "get_params"):
            found += _featurizers(inner)
    return found


# Settings of one run, not of the model: a saved model gets the featurizer's defaults.
_RUN_SETTINGS = {"device": "auto", "cache": None, "verbose": 0, "cae_params": None}


def _for_saving(pipe):
    for featurizer in _featurizers(pipe):
        accepted = featurizer.get_params(deep=False)
        featurizer.set_params(**{k: v for k, v in _RUN_SETTINGS.items() if k in accepted})
    return pipe


# --------------------------------------------------------------------- commands
@contextlib.contextmanager
def _indices_in(data):
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
        from .images import describe_image

        message = str(exc).replace(
            describe_image(exc.image_index, path), describe_image(data.index(path), path), 1
        )
        raise type(exc)(message) from None


def _check_cache_option(args) -> None:
    if getattr(args, "cache", None) is not None:
        from .cache import check_cache

        check_cache(args.cache)  # a bad folder fails now, not after loading data


def _evaluate(args) -> None:
    from sklearn.metrics import get_scorer

    from .datasets import load_dataset
    from .evaluation import (
        Progress,
        cross_validate_methods,
        fit_and_score,
        format_table,
        stratified_folds,
    )
    from .images import as_image_source

    _check_cache_option(args)
    data, labels = load_dataset(args.data, args.split)
    X, y = _subsample(data, labels, args.max_images, args.random_state)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise _CLIError(
            f"DATA has a single class ({str(classes[0])!r}); evaluation needs two or more"
        )
    if counts.min() < args.folds:
        raise _CLIError(
            f"class {str(classes[np.argmin(counts)])!r} has {counts.min()} images, fewer "
            f"than --folds={args.folds}"
        )
    with _indices_in(data):
        as_image_source(X)  # headers and pixel checks once, numbered as in DATA
    second = ("roc_auc", "ROC AUC") if len(classes) == 2 else ("f1_macro", "macro F1")
    scoring = {"balanced acc.": get_scorer("balanced_accuracy"), second[1]: get_scorer(second[0])}
    folds = stratified_folds(y, args.folds, args.random_state)
    print(
        f"{args.data}: {len(y)} images, {len(classes)} classes, {args.folds}-fold CV, "
        f"{_steps_description('features', args)}",
        flush=True,
    )
    print(f"classes: {_class_counts(y)}", flush=True)
    fit_and_score_fold = fit_and_score(X, y, scoring)

    def score_fold(pipe, train, test):
        with _indices_in(data):
            return fit_and_score_fold(pipe, train, test)

    results = cross_validate_methods(
        _pipelines(args, smallest_class=_smallest_class(y, folds)),
        folds,
        score_fold,
        progress=Progress(args.quiet),
    )
    print(format_table(results, first_column="features"))


def _fit(args) -> None:
    import joblib

    from .datasets import load_dataset
    from .evaluation import Progress

    progress = Progress(args.quiet)
    _check_cache_option(args)
    data, labels = load_dataset(args.data, args.split)
    X, y = _subsample(data, labels, args.max_images, args.random_state)
    if len(np.unique(y)) < 2:
        raise _CLIError("DATA has a single class; a classifier needs two or more")
    inputs = [args.data, *(X if isinstance(X, list) else [])]
    output = _check_output(args.output, inputs, "model")  # before the long fit
    smallest_class = int(np.unique(y, return_counts=True)[1].min())
    pipe = _pipelines(args, y, smallest_class=smallest_class)["CAETransferFeaturizer"]
    progress.line(
        f"fitting {_steps_description('CAETransferFeaturizer', args)} on {len(y)} images of "
        f"classes {_class_counts(y)}"
    )
    start = time.perf_counter()
    with _indices_in(data):
        pipe.fit(X, y)
    with _atomic_output(output) as file:
        joblib.dump(_for_saving(pipe), file)
    print(
        f"fitted on {len(y)} images, classes {[str(c) for c in pipe.classes_]}, in "
        f"{time.perf_counter() - start:.1f} s; saved to {args.output}"
    )


def _load_model(path: str):
    import joblib

    file = Path(path).expanduser()
    if not file.is_file():
        raise _CLIError(f"no such model file: {file}")
    try:
        model = joblib.load(file)
    except Exception as exc:  # pickle raises many types for a file that is not a model
        raise _CLIError(
            f"{file} is not a model saved by 'sklearn-cae fit' ({_reason(exc)})"
        ) from exc
    if not hasattr(model, "predict"):
        raise _CLIError(f"{file} holds a {type(model).__name__}, not a fitted classifier")
    return model


def _set_run_options(model, args) -> None:
    """--device, --cache and -v / -q on the featurizers of a loaded model."""
    featurizers = _featurizers(model)
    options = {"device": args.device, "cache": args.cache}
    given = {k: v for k, v in options.items() if v is not None}
    if given and not featurizers:
        names = ", ".join(f"--{k}" for k in given)
        raise _CLIError(f"{names} need(s) a model holding an sklearn-cae featurizer")
    # Bars over the backbone batches: by default on a terminal, always with -v.
    verbose = 1 if args.verbose or (not args.quiet and sys.stderr.isatty()) else 0
    for featurizer in featurizers:
        featurizer.set_params(**given, verbose=verbose)


def _class_scores(model, X):
    """Predicted labels and per-class scores, featurizing ``X`` once.

    Returns ``(labels, kind, classes, scores)``: ``kind`` is "proba" (predict_proba),
    "score" (decision_function) or None when the classifier has neither.
    """
    from .evaluation import split_final_step

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


def _predict(args) -> None:
    from .evaluation import Progress

    progress = Progress(args.quiet)
    files = _image_files(args.images)
    output = None
    if args.output is not None:
        output = _check_output(args.output, [args.model, *files], "CSV")
    _check_cache_option(args)
    model = _load_model(args.model)
    _set_run_options(model, args)
    progress.line(f"predicting {len(files)} images with {args.model}")
    labels, kind, classes, scores = _class_scores(model, files)
    header = ["path", "prediction", *(f"{kind}_{c}" for c in classes)]
    rows = [header]
    for path, label, row in zip(files, labels, scores, strict=True):
        rows.append([path, str(label), *(f"{v:.6g}" for v in row)])
    if output is None:
        csv.writer(sys.stdout).writerows(rows)
        return
    # surrogateescape: file names that are not valid UTF-8 are written back as they were.
    with _atomic_output(
        output, "w", newline="", encoding="utf-8", errors="surrogateescape"
    ) as file:
        csv.writer(file).writerows(rows)
    what = {"proba": " and class probabilities", "score": " and decision scores"}.get(kind, "")
    progress.line(f"wrote {len(files)} predictions{what} to {args.output}")


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(args.dataset, n_splits=args.folds)


# ----------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(_positive_int(part) for part in text.split(","))


def _folds(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"needs at least 2 folds, got {text!r}")
    return value


# images.INTENSITY_POLICIES and datasets.MEDMNIST_SPLITS, spelled out so that --help does
# not import torch (tests/test_cli.py keeps them equal).
_INTENSITY_NAMES = ("auto", "minmax", "dtype", "dicom_window")
_SPLIT_NAMES = ("train", "val", "test")
_SAMPLER_NAMES = tuple(_SAMPLERS)


def _intensity(text: str):
    """A policy name, or ``LOW,HIGH`` (a window such as a CT window in HU)."""
    if text in _INTENSITY_NAMES:
        return text
    parts = text.split(",")
    try:
        window = tuple(float(part) for part in parts)
    except ValueError:
        window = ()
    if len(window) == 2:
        from .images import check_intensity

        try:
            return check_intensity(window)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(
        f"expected {', '.join(_INTENSITY_NAMES)} or a window LOW,HIGH with LOW < HIGH "
        f"(e.g. -1000,400), got {text!r}"
    )


def _join_option_values(argv: list[str]) -> list[str]:
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


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        metavar="DATA",
        help="an ImageFolder-style folder (DATA/<class>/<image>), an .npz file with 'images' "
        "and 'labels' arrays (optional 'class_names'), or a MedMNIST name such as "
        "'breastmnist' (read from $MEDMNIST_ROOT when set)",
    )
    parser.add_argument(
        "--split",
        choices=_SPLIT_NAMES,
        default="train",
        help="MedMNIST split to use (default: %(default)s)",
    )
    parser.add_argument(
        "--max-images",
        type=_positive_int,
        metavar="N",
        help="use a stratified random subset of N images (default: all)",
    )


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model options (defaults: the featurizer's own)")
    group.add_argument("--backbone", help="backbone name, e.g. efficientnet_lite0 or resnet18")
    group.add_argument(
        "--layer", action="append", help="layer to tap; repeat for several (hierarchical) layers"
    )
    group.add_argument(
        "--layer-sizes",
        type=_int_list,
        metavar="N[,N...]",
        help="widths of the CAE's encoder convolutions, e.g. 256,128",
    )
    group.add_argument("--bottleneck", type=_positive_int, metavar="N", help="CAE code channels")
    group.add_argument(
        "--sparsity", type=float, metavar="WEIGHT", help="L1 weight on the CAE code (0: dense)"
    )
    group.add_argument("--image-size", type=_positive_int, metavar="PIXELS", help="resize to this")
    group.add_argument("--max-epochs", type=_positive_int, metavar="N", help="CAE training epochs")
    group.add_argument("--batch-size", type=_positive_int, metavar="N", help="images per batch")
    group.add_argument(
        "--intensity",
        type=_intensity,
        metavar="POLICY",
        help="pixel values to [0, 1]: auto, minmax, dtype, dicom_window (each DICOM file's "
        "own window) or a window LOW,HIGH such as a CT window in HU, e.g. "
        "'--intensity -1000,400' (see docs/inputs.md)",
    )
    group.add_argument(
        "--resample",
        choices=("none", *_SAMPLER_NAMES),
        default="none",
        help="balance the classes the SVC is fitted on with imbalanced-learn: SMOTE (up to 5 "
        "neighbours), random undersampling or random oversampling of the scaled features "
        "of the training images (default: %(default)s)",
    )
    group.add_argument(
        "--random-state", type=int, default=0, metavar="SEED", help="seed (default: %(default)s)"
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
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


def build_parser(prog: str = "sklearn-cae") -> argparse.ArgumentParser:
    """The argument parser of the ``sklearn-cae`` command."""
    parser = _Parser(
        prog=prog,
        description="Unsupervised deep transfer features for medical images (Ahn et al., ISBI "
        "2019): a frozen ImageNet CNN, a convolutional auto-encoder trained on its feature maps "
        "without labels, and an SVC on the pooled codes.",
        epilog=f"Run '{prog} COMMAND --help' for the options of a command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    evaluate = commands.add_parser(
        "evaluate",
        help="cross-validate CAE features against transfer-learned features",
        description="Cross-validate features + StandardScaler + SVC for CAETransferFeaturizer "
        "and the BackboneFeaturizer baseline, and print the classes with their image counts, "
        "then balanced accuracy, ROC AUC (two classes) or macro F1 (more), and seconds. A "
        "progress line per method and fold goes to standard error.",
    )
    _add_data_options(evaluate)
    evaluate.add_argument(
        "--folds", type=_folds, default=5, help="cross-validation folds (default: %(default)s)"
    )
    _add_model_options(evaluate)
    _add_run_options(evaluate)

    fit = commands.add_parser(
        "fit",
        help="fit CAE features + SVC on DATA and save the model",
        description="Fit CAETransferFeaturizer + StandardScaler + SVC on all of DATA and save "
        "the pipeline with joblib; it predicts class names and class probabilities (Platt "
        "scaling on cross-validated SVC scores: CalibratedClassifierCV(SVC(), "
        "ensemble=False)). Run options (--device, --cache, -v, -q) are not saved with the "
        "model.",
    )
    _add_data_options(fit)
    fit.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="file to write, e.g. model.joblib; checked before fitting, and replaced only "
        "once the new model is completely written",
    )
    _add_model_options(fit)
    _add_run_options(fit)

    predict = commands.add_parser(
        "predict",
        help="predict the class of image files with a saved model",
        description="Load a model saved by 'fit' and write one CSV row per image: path, "
        "prediction, and one column per class: proba_<class> when the model has "
        "predict_proba (models from 'fit' do), else decision scores score_<class> (one "
        "column for two classes). Folders are searched recursively for image files.",
        epilog="Security: MODEL is a pickle (joblib) file, and loading a pickle runs code "
        "stored in it. Only load model files you created or trust, as with any "
        "scikit-learn model.",
    )
    predict.add_argument(
        "model", metavar="MODEL", help="model file written by 'fit' (a pickle: trusted files only)"
    )
    predict.add_argument("images", metavar="IMAGES", nargs="+", help="image files or folders")
    predict.add_argument(
        "-o", "--output", metavar="CSV", help="CSV file to write (default: standard output)"
    )
    _add_run_options(predict)

    demo = commands.add_parser(
        "demo",
        help="cross-validate raw pixels, backbone and CAE features on BreastMNIST",
        description="The README's demo: cross-validate raw pixels + PCA, BackboneFeaturizer and "
        "CAETransferFeaturizer (each + SVC) on a MedMNIST data set and print a table.",
    )
    demo.add_argument("--dataset", default="breastmnist", help="MedMNIST 2-D data set")
    demo.add_argument("--folds", type=_folds, default=5, help="folds (default: %(default)s)")
    return parser


_COMMANDS = {"evaluate": _evaluate, "fit": _fit, "predict": _predict, "demo": _demo}


def main(argv: list[str] | None = None, prog: str = "sklearn-cae") -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments; ``sys.argv[1:]`` when None.
    prog : str, default="sklearn-cae"
        Program name shown in help and error messages.

    Returns
    -------
    int
        0 on success, 1 on an error (printed as one line on standard error), 2 on a
        usage error.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(_join_option_values(argv))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(prog)
            _COMMANDS[args.command](args)
    except (_CLIError, FileNotFoundError, ImportError, ValueError, TypeError, OSError) as exc:
        print(f"{prog}: error: {_reason(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
