"""``sklearn-cae featurize``: the features of many images written to a file, resumably."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._console import CLIError
from ._io import check_model_output, check_output, load_model, save_model
from ._options import (
    add_model_options,
    add_run_options,
    cache_option,
    check_options,
    featurizer_options,
    pipelines,
)

NAME = "featurize"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="write the features of many images to a file (resumable)",
        description="Write one row of features per image of INPUT to OUT, for pandas, R "
        "or a vector index. Without --model, a CAETransferFeaturizer is fitted on the "
        "images themselves, without labels (the model options below set it); with "
        "--model, a fitted featurizer, or the featurizer of a pipeline saved by 'fit', "
        "is applied. OUT is written atomically: complete, or not at all.",
        epilog="Resuming: run the same command again after an interruption (Ctrl-C, a "
        "killed process, a power cut) and it continues where it stopped: the rows "
        "computed so far and the fitted featurizer are kept in the folder .<OUT>.progress "
        "beside OUT (removed once OUT is written), the backbone maps in the --cache folder "
        "(or in that progress folder without --cache), and the output is the same as an "
        "uninterrupted run's. Other arguments or changed images start afresh. Security: "
        "a .skops model loads without running code; a .joblib model is a pickle: load "
        "only files you trust.",
    )
    parser.add_argument(
        "input",
        metavar="INPUT",
        help="a folder of images, searched recursively (class sub-folders or not; hidden "
        "files left out), a text file listing image paths (one per line, relative to its "
        "folder; '#' comments), or an .npz file of 'images'",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="file to write: .parquet (a 'path' column, then one column per feature, "
        "named as get_feature_names_out names them; needs pyarrow), .npz ('paths', "
        "'features', 'feature_names') or .csv",
    )
    parser.add_argument(
        "--model",
        metavar="FILE",
        help="a fitted featurizer or a pipeline saved by 'fit' (.skops or .joblib) to apply "
        "instead of fitting one; the model options below then do not apply",
    )
    parser.add_argument(
        "--save-model",
        metavar="FILE",
        help="also save the featurizer fitted on INPUT (.skops or .joblib), for "
        "'featurize --model' on other images",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out images that cannot be read, and list them (path and reason) after "
        "the summary, instead of stopping at the first one",
    )
    add_model_options(parser)
    add_run_options(parser)


def run(args: argparse.Namespace) -> None:
    from ..evaluation import Progress
    from ..feature_files import list_inputs

    _check_arguments(args)
    check_options(args)
    progress = Progress(args.quiet)
    featurizer = None if args.model is None else _featurizer_of(args.model)
    X, names = list_inputs(args.input)
    inputs = [args.input, *([args.model] if args.model else []), *_files(X)]
    output = check_output(args.output, inputs, "feature file")
    model_output = None
    if args.save_model is not None:
        model_output = check_model_output(args.save_model, [*inputs, str(output)])
    # Bars with rate and time left: by default on a terminal, always with -v.
    bar = not args.quiet and bool(args.verbose or sys.stderr.isatty())
    try:
        report = _write(args, featurizer, X, names, output, model_output, progress, bar)
    except KeyboardInterrupt:
        from ..feature_files import progress_folder

        print(
            f"sklearn-cae {NAME}: the work done so far is kept in {progress_folder(output)}; "
            "run the same command again to continue",
            file=sys.stderr,
        )
        raise
    _print_report(report, args)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse, before any work, what the arguments alone show to be wrong."""
    from ..feature_files import OUTPUT_FORMATS

    if Path(args.output).suffix.lower() not in OUTPUT_FORMATS:
        raise CLIError(f"OUT must end in {', '.join(OUTPUT_FORMATS)}, got {args.output!r}")
    if args.resample != "none":
        raise CLIError("--resample balances a classifier's classes; featurize fits none")
    if args.model is None:
        if args.supervision:
            raise CLIError(
                "--supervision needs labels, and featurize fits without them: fit a model "
                "with 'sklearn-cae fit --supervision ...' and give it as --model"
            )
        return
    if args.save_model is not None:
        raise CLIError("--save-model saves the featurizer fitted on INPUT; with --model none is")
    from ..feature_files import RUN_OPTIONS

    # Options that only change where and how a saved featurizer runs, not its features.
    run_params = (*RUN_OPTIONS, "cae_params")
    given = [
        f"--{name.replace('_', '-')}"
        for name, value in featurizer_options(args).items()
        if value is not None and name not in run_params
    ]
    if given:
        raise CLIError(
            f"{', '.join(given)} set(s) how a featurizer is fitted; with --model the saved "
            "featurizer's own settings are used: leave them out"
        )


def _files(X) -> list[str]:
    return X if isinstance(X, list) else []


def _write(args, featurizer, X, names, output: Path, model_output: Path | None, progress, bar):
    """Apply ``featurizer`` (from --model), or fit one, and write; return the report."""
    from ..feature_files import fit_write_features, write_features

    if featurizer is not None:
        featurizer.set_params(**_run_params(args))
        progress.line(f"writing the {type(featurizer).__name__} features of {len(X)} images")
        return write_features(
            featurizer, X, output, names=names, skip_bad=args.skip_bad, progress=bar
        )
    featurizer = pipelines(args)["CAETransferFeaturizer"].steps[0][1]
    progress.line(f"fitting CAETransferFeaturizer on {len(X)} images without labels")
    fitted, report = fit_write_features(
        featurizer, X, output, names=names, skip_bad=args.skip_bad, progress=bar
    )
    if model_output is not None:
        save_model(fitted, model_output)
        progress.line(f"saved the fitted featurizer to {args.save_model}")
    return report


def _featurizer_of(path: str):
    """The featurizer saved at ``path``: the file's own, or its pipeline's only one."""
    from ..pipelines import find_featurizers

    model = load_model(path)
    featurizers = [featurizer for featurizer, _ in find_featurizers(model)]
    if len(featurizers) != 1:
        found = "no" if not featurizers else f"{len(featurizers)}"
        raise CLIError(
            f"{path} holds {found} sklearn-cae featurizers ({type(model).__name__}); "
            "--model needs a featurizer, or a pipeline holding one"
        )
    return featurizers[0]


def _run_params(args: argparse.Namespace) -> dict:
    """--device, --cache, --batch-size and -v for a loaded featurizer (None: its own)."""
    given = {"device": args.device, "cache": cache_option(args), "batch_size": args.batch_size}
    return {**{k: v for k, v in given.items() if v is not None}, "verbose": int(args.verbose > 0)}


def _print_report(report, args: argparse.Namespace) -> None:
    reused = []
    if report.reused_fit:
        reused.append("the fitted featurizer")
    if report.reused_rows:
        reused.append(f"{report.reused_rows} rows")
    resumed = f" (reused from an earlier run: {' and '.join(reused)})" if reused else ""
    print(
        f"wrote {report.rows} rows of {report.features} features to {args.output} in "
        f"{report.seconds:.1f} s{resumed}"
    )
    if report.skipped:
        print(f"skipped {len(report.skipped)} unreadable images (path, reason):")
        print(report.skipped_text(), end="")
