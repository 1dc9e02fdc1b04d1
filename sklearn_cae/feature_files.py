"""Features of many images written to a file, resumably: what ``sklearn-cae featurize`` runs.

:func:`write_features` writes a fitted featurizer's features of a list of images to
``.parquet`` (a ``path`` column, then one column per feature named by
``get_feature_names_out``), ``.npz`` (``paths``, ``features``, ``feature_names``) or
``.csv`` (LF line endings). :func:`fit_write_features` first fits a
:class:`~sklearn_cae.CAETransferFeaturizer` on the images, without labels.
:func:`list_inputs` turns a folder, a text file of paths or an ``.npz`` into images.

Resuming. Work goes to a progress folder beside the output, ``.<output name>.progress``:
the rows of each chunk of ``chunk_size`` images once computed, and the fitted featurizer
once fitted; with no ``cache`` given, :func:`fit_write_features` also keeps its
backbone maps there. Every file in it is written atomically, so after Ctrl-C, SIGKILL
or a power cut the same call continues where it stopped, and writes exactly the output
an uninterrupted run would have written. The progress folder belongs to one set of
arguments (featurizer, images with their sizes and modification times, format, chunk
size): another set starts afresh. It is removed once the output is in place, and the
output itself is written atomically (:func:`sklearn_cae._utils.atomic_write`).

Unreadable images. A file that cannot be read is named in one error, raised when the
file headers are checked before any work, or when its pixels fail to decode (the rows
computed until then are kept: fix or remove the file and run again). With
``skip_bad=True`` such files are left out and listed in the report's ``skipped``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import pickle
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._utils import atomic_write, error_reason
from .cache import check_cache, file_digests
from .datasets import IMAGE_EXTENSIONS, find_image_files
from .images import as_image_source

__all__ = [
    "OUTPUT_FORMATS",
    "RUN_OPTIONS",
    "FeatureFileReport",
    "UnreadableImageError",
    "fit_write_features",
    "list_inputs",
    "progress_folder",
    "write_features",
]

#: The output formats, by file name ending.
OUTPUT_FORMATS = (".parquet", ".npz", ".csv")
_PROGRESS_FORMAT = 1
#: Parameters that change how a run goes, not its features: a resumed run may differ in them.
RUN_OPTIONS = ("cache", "device", "verbose", "batch_size")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that equal features give equal .npz bytes


class UnreadableImageError(ValueError):
    """An image that cannot be read; ``path`` names it and ``reason`` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(
            f"cannot read {path!r}: {reason}. Fix or remove it and run again (the rows "
            "computed so far are kept), or skip unreadable images (skip_bad=True, "
            "--skip-bad), which lists them in a report."
        )
        self.path, self.reason = path, reason


@dataclass
class FeatureFileReport:
    """What :func:`write_features` and :func:`fit_write_features` did."""

    output: Path
    rows: int
    features: int
    reused_rows: int = 0
    reused_fit: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def skipped_text(self) -> str:
        """The skipped images, one ``path<TAB>reason`` line each."""
        return "".join(f"{path}\t{reason}\n" for path, reason in self.skipped)


# ------------------------------------------------------------------------------ inputs
def list_inputs(source: str | os.PathLike) -> tuple[list[str] | np.ndarray, list[str]]:
    """The images of a folder, a text file of paths or an ``.npz``, and their names.

    Parameters
    ----------
    source : str or path-like
        A folder, searched for image files by
        :func:`~sklearn_cae.datasets.find_image_files` (recursively, hidden ones left out),
        with or without class sub-folders; a text file with one image path per line
        (blank lines and lines starting with ``#`` ignored, relative paths taken from
        the file's folder); or an ``.npz`` holding ``images`` (or a single array).

    Returns
    -------
    X : list of str or ndarray
        Image paths, sorted for a folder, or the array of images.
    names : list of str
        What the output's ``path`` column holds: the paths, or ``file.npz[i]``.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        files = find_image_files(path)
        if not files:
            raise ValueError(f"no image files under {path} (endings {IMAGE_EXTENSIONS}).")
        return files, files
    if not path.is_file():
        raise FileNotFoundError(f"no such folder or file: {path}")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files and len(archive.files) != 1:
                raise ValueError(f"{path} must hold an 'images' array; it has {archive.files}.")
            images = archive["images" if "images" in archive.files else archive.files[0]]
        return images, [f"{path}[{i}]" for i in range(len(images))]
    lines = path.read_text().splitlines()
    files = [
        str(path.parent / line.strip())
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not files:
        raise ValueError(f"{path} lists no image paths.")
    return files, files


def _check_output(output) -> Path:
    output = Path(output).expanduser()
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(
            f"cannot write {output.name!r}: the output must end in one of {OUTPUT_FORMATS}."
        )
    if output.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError(
                "writing .parquet needs pyarrow: pip install 'sklearn-cae[parquet]', or "
                "write .npz or .csv."
            ) from None
    if not output.parent.is_dir():
        raise FileNotFoundError(f"the output's folder does not exist: {output.parent}")
    return output


def progress_folder(output: str | os.PathLike) -> Path:
    """Where the work towards ``output`` is kept until it is written."""
    output = Path(output).expanduser()
    return output.parent / f".{output.name}.progress"


def _is_files(X) -> bool:
    return isinstance(X, list | tuple) and all(isinstance(x, str | os.PathLike) for x in X)


def _inputs_digest(X, names) -> str:
    """Identity of the images: paths with sizes and mtimes, or array content."""
    content = [_file_digest(path) for path in X] if _is_files(X) else joblib.hash(np.asarray(X))
    return joblib.hash([content, list(names)])


def _file_digest(path) -> str:
    """:func:`file_digests` of one file; a file that cannot be ``stat``-ed is named by
    the probe that follows (an error, or a skipped row with ``skip_bad``)."""
    try:
        return file_digests([path])[0]
    except OSError:
        return f"missing:{path}"


# -------------------------------------------------------------------- progress folder
class _Progress:
    """The progress folder of one output and one set of arguments."""

    def __init__(self, output: Path, identity: str):
        self.folder = progress_folder(output)
        marker = self.folder / "identity"
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if marker.read_text() != identity:
                shutil.rmtree(self.folder)  # another run's work: start afresh
        self.folder.mkdir(exist_ok=True)
        if not marker.exists():
            with atomic_write(marker, "w") as file:
                file.write(identity)
        for stale in output.parent.glob(f".{output.name}.*.tmp"):  # a killed final write
            stale.unlink(missing_ok=True)

    def chunk_path(self, start: int) -> Path:
        return self.folder / f"rows-{start:012d}.npz"

    def load_chunk(self, start: int, n_rows: int, n_features: int):
        """(features, kept row indices, skipped (index, reason)) or None if not done."""
        try:
            with np.load(self.chunk_path(start), allow_pickle=False) as chunk:
                features, kept = chunk["features"], chunk["kept"]
                skipped = list(
                    zip(chunk["skipped_rows"].tolist(), chunk["skipped_why"].tolist(), strict=True)
                )
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None
        if features.shape != (len(kept), n_features) or len(kept) + len(skipped) != n_rows:
            return None
        return features, kept, skipped

    def save_chunk(self, start: int, features, kept, skipped) -> None:
        rows, why = zip(*skipped, strict=True) if skipped else ((), ())
        with atomic_write(self.chunk_path(start)) as file:
            np.savez(
                file,
                features=features,
                kept=np.asarray(kept, dtype=np.int64),
                skipped_rows=np.asarray(rows, dtype=np.int64),
                skipped_why=np.asarray(why, dtype=str),
            )

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# -------------------------------------------------------------------- unreadable images
def _probe_errors(items: list, names: list[str], skip_bad: bool) -> dict[int, str]:
    """Index -> reason of the files whose headers cannot be read (before any work)."""
    if not _is_files(items):
        return {}
    try:
        as_image_source(items)
        return {}
    except (ValueError, TypeError, FileNotFoundError) as exc:
        if not skip_bad:
            raise UnreadableImageError(_named_path(exc, items), error_reason(exc)) from None
    bad = {}
    for i, item in enumerate(items):  # only now, one by one: which ones are bad
        try:
            as_image_source([item])
        except (ValueError, TypeError, FileNotFoundError) as exc:
            bad[i] = error_reason(exc)
    return bad


def _named_path(exc: BaseException, items: list) -> str:
    """The path an image error names (``image_path``, or the first one its text quotes)."""
    path = getattr(exc, "image_path", None)
    if path is not None:
        return str(path)
    text = str(exc)
    return next((str(item) for item in items if repr(str(item)) in text), "an image")


def _run_skipping(compute, items: list, skip_bad: bool, bad: dict[int, str]):
    """``compute(kept items)`` with the bad items left out; decode failures add to ``bad``."""
    while True:
        kept = [i for i in range(len(items)) if i not in bad]
        if not kept:
            return kept, None
        try:
            return kept, compute([items[i] for i in kept])
        except (ValueError, FileNotFoundError) as exc:
            path = getattr(exc, "image_path", None)
            if path is None:
                raise
            if not skip_bad:
                raise UnreadableImageError(str(path), error_reason(exc)) from None
            failed = [i for i in kept if str(items[i]) == str(path)]
            if not failed:
                raise
            bad.update((i, error_reason(exc)) for i in failed)


# ------------------------------------------------------------------------------ writing
def write_features(
    featurizer,
    X,
    output: str | os.PathLike,
    *,
    names: list[str] | None = None,
    chunk_size: int = 2048,
    skip_bad: bool = False,
    progress: bool = True,
) -> FeatureFileReport:
    """Write a fitted featurizer's features of ``X`` to ``output``, resumably.

    Parameters
    ----------
    featurizer : fitted BackboneFeaturizer or CAETransferFeaturizer
        (Or any fitted transformer with ``get_feature_names_out``.)
    X : list of image paths or array of images
        As :func:`list_inputs` returns them.
    output : str or path-like
        ``.parquet``, ``.npz`` or ``.csv``; written atomically.
    names : list of str or None, default=None
        The ``path`` column; None: the paths, or the row numbers of an array.
    chunk_size : int, default=2048
        Images per chunk: the unit of work kept for resuming.
    skip_bad : bool, default=False
        Leave out unreadable images (listed in the report) instead of failing.
    progress : bool, default=True
        Show a progress bar (images per second, time left).

    Returns
    -------
    FeatureFileReport

    Raises
    ------
    UnreadableImageError
        Naming the first unreadable image, unless ``skip_bad``.
    """
    started = time.perf_counter()
    check_is_fitted(featurizer)
    output = _check_output(output)
    names = _names(X, names)
    # What the features depend on: not where maps are cached, nor how verbose a run is.
    fitted = {k: v for k, v in vars(featurizer).items() if k not in RUN_OPTIONS}
    fitted = _without_print_sink(fitted)
    fitted_digest = hashlib.sha256(pickle.dumps(fitted, protocol=5)).hexdigest()
    identity = joblib.hash(
        [
            _PROGRESS_FORMAT,
            type(featurizer).__qualname__,
            fitted_digest,
            _inputs_digest(X, names),
            skip_bad,
        ]
    )
    state = _Progress(output, identity)
    bad = _probe_errors(list(X) if _is_files(X) else [], names, skip_bad)
    report = _write_chunks(featurizer, X, names, output, state, chunk_size, skip_bad, bad, progress)
    state.remove()
    report.seconds = time.perf_counter() - started
    return report


def _names(X, names) -> list[str]:
    if names is not None:
        if len(names) != len(X):
            raise ValueError(f"names has {len(names)} entries for {len(X)} images.")
        return [str(n) for n in names]
    return [str(x) for x in X] if _is_files(X) else [str(i) for i in range(len(X))]


def _write_chunks(featurizer, X, names, output, state, chunk_size, skip_bad, bad, progress):
    """Write the features chunk by chunk; ``bad``: index -> reason of the unreadable images."""
    feature_names = [str(n) for n in featurizer.get_feature_names_out()]
    n_features = len(feature_names)
    parts, reused = [], 0
    with tqdm(total=len(X), unit="img", desc="features", disable=not progress) as bar:
        for start in range(0, len(X), chunk_size):
            stop = min(start + chunk_size, len(X))
            done = state.load_chunk(start, stop - start, n_features)
            if done is None:
                chunk_bad = {i - start: why for i, why in bad.items() if start <= i < stop}
                items = X[start:stop]
                kept, features = _run_skipping(
                    featurizer.transform, list(items), skip_bad, chunk_bad
                )
                features = np.empty((0, n_features), np.float32) if features is None else features
                skipped = sorted(chunk_bad.items())
                state.save_chunk(start, features, kept, skipped)
            else:
                features, kept, skipped = done
                reused += stop - start
            parts.append((start, np.asarray(features, dtype=np.float32), kept, skipped))
            bar.update(stop - start)
    rows = [names[start + i] for start, _, kept, _ in parts for i in kept]
    features = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, n_features))
    skipped = [(names[start + i], why) for start, _, _, s in parts for i, why in s]
    _write_output(output, rows, feature_names, features)
    return FeatureFileReport(output, len(rows), n_features, reused, skipped=skipped)


def fit_write_features(
    featurizer,
    X,
    output: str | os.PathLike,
    *,
    names: list[str] | None = None,
    chunk_size: int = 2048,
    skip_bad: bool = False,
    progress: bool = True,
) -> tuple[object, FeatureFileReport]:
    """Fit ``featurizer`` on ``X`` without labels, then write its features, resumably.

    The fitted featurizer is kept in the progress folder, and in the featurizer's
    ``cache`` (when it has one) under the identity of its parameters and of ``X``: a
    run with an int ``random_state`` over the same images then reuses that fit, as
    it reuses the backbone maps. Without a cache, the maps are kept in the progress
    folder until the output is written.

    Parameters
    ----------
    featurizer : CAETransferFeaturizer or BackboneFeaturizer, unfitted
        Fitted on a copy: ``featurizer`` itself is left as it is.
    X, output, names, chunk_size, skip_bad, progress
        As for :func:`write_features`.

    Returns
    -------
    fitted : the fitted featurizer (its ``cache`` parameter as given)
    report : FeatureFileReport
    """
    started = time.perf_counter()
    output = _check_output(output)
    names = _names(X, names)
    params = {k: v for k, v in featurizer.get_params().items() if k not in RUN_OPTIONS}
    params = _without_print_sink(params)
    fit_identity = joblib.hash([type(featurizer).__qualname__, params, _inputs_digest(X, names)])
    identity = [_PROGRESS_FORMAT, "fit", fit_identity, output.suffix.lower(), chunk_size, skip_bad]
    state = _Progress(output, joblib.hash(identity))
    # Headers probed once, for the fit and the writing: decode failures the fit meets are
    # added, so the writing leaves them out without trying them again.
    bad = _probe_errors(list(X) if _is_files(X) else [], names, skip_bad)
    fitted, reused_fit = _fitted(featurizer, X, state, fit_identity, skip_bad, bad)
    with _run_cache(fitted, state):
        report = _write_chunks(fitted, X, names, output, state, chunk_size, skip_bad, bad, progress)
    state.remove()
    report.reused_fit, report.seconds = reused_fit, time.perf_counter() - started
    return fitted, report


def _without_print_sink(params: dict) -> dict:
    """``params`` without the epoch-table sink ``-v`` puts in ``cae_params`` (no effect on
    the features, so not part of what a resumed run must match)."""
    cae_params = params.get("cae_params")
    if not cae_params or "callbacks__print_log__sink" not in cae_params:
        return params
    kept = {k: v for k, v in cae_params.items() if k != "callbacks__print_log__sink"}
    return {**params, "cae_params": kept or None}


@contextlib.contextmanager
def _run_cache(featurizer, state: _Progress):
    """Use the progress folder's cache for this run when the featurizer has none."""
    given = featurizer.cache
    if given is None:
        featurizer.set_params(cache=state.folder / "cache")
    try:
        yield
    finally:
        featurizer.set_params(cache=given)


def _fitted(featurizer, X, state: _Progress, fit_identity: str, skip_bad: bool, bad: dict):
    """The featurizer fitted on X: from the progress folder or the cache, or fitted now
    without the ``bad`` images (index -> reason; images that fail to decode are added)."""
    from sklearn.base import clone

    cache = check_cache(featurizer.cache)
    kept_fit = state.folder / "fitted.joblib"
    reusable = featurizer.get_params().get("random_state") is not None
    for path in (kept_fit, cache.fitted_path(fit_identity) if cache and reusable else None):
        if path is not None and path.is_file():
            with contextlib.suppress(Exception):  # damaged or from another release: refit
                kept = joblib.load(path)
                # This run's device, cache and verbosity, not those of the run that saved it.
                run = featurizer.get_params(deep=False)
                return kept.set_params(**{k: run[k] for k in RUN_OPTIONS if k in run}), True
    fitted = clone(featurizer)
    with _run_cache(fitted, state):
        items = list(X) if _is_files(X) else X
        _run_skipping(fitted.fit, items, skip_bad, bad)
    for path in (kept_fit, cache.fitted_path(fit_identity) if cache and reusable else None):
        if path is not None:
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path) as file:
                    joblib.dump(fitted, file)
    return fitted, False


# ------------------------------------------------------------------------------ formats
def _write_output(output: Path, rows: list[str], names: list[str], features: np.ndarray) -> None:
    suffix = output.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {"path": pa.array(rows, pa.string())}
        columns.update((name, pa.array(features[:, j])) for j, name in enumerate(names))
        with atomic_write(output) as file:
            pq.write_table(pa.table(columns), file)
    elif suffix == ".npz":
        arrays = {
            "paths": np.asarray(rows, dtype=str),
            "features": features,
            "feature_names": np.asarray(names, dtype=str),
        }
        with atomic_write(output) as file, zipfile.ZipFile(file, "w") as archive:
            for key, array in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
    else:
        with atomic_write(output, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(["path", *names])
            for path, row in zip(rows, features.tolist(), strict=True):
                writer.writerow([path, *(format(v, ".9g") for v in row)])
