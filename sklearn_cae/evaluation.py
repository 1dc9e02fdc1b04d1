"""Cross-validate several methods on the same folds and print their scores as a table.

``sklearn-cae evaluate`` and :func:`sklearn_cae.demo.run_demo` both compare methods
(pipelines, or featurizers followed by one classifier) fold by fold and print a
markdown table of mean ± standard deviation per metric. They share this module:

* :func:`stratified_folds` makes the folds once, so every method sees the same ones;
* :func:`cross_validate_methods` runs each method on each fold through a *fold scorer*,
  prints a progress line per method and fold, and times each method;
* a fold scorer returns ``{regime: {metric: score}}``. :func:`fit_and_score` is the
  plain one (fit on the training fold, score on the held-out fold, one regime,
  :data:`ALL_LABELS`); the demo's scores two labelling regimes per fold;
* :func:`format_table` writes the table, with a column for the regime when there are
  several, through :func:`markdown_table` (also for other plain tables).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from .datasets import take_rows

__all__ = [
    "ALL_LABELS",
    "FoldScorer",
    "MethodScores",
    "Progress",
    "cross_validate_methods",
    "fit_and_score",
    "format_table",
    "markdown_table",
    "split_final_step",
    "stratified_folds",
]

#: The regime of a fold scorer that fits on every training label.
ALL_LABELS = "all labels"

#: ``score_fold(method, train, test) -> {regime: {metric: score}}``.
FoldScorer = Callable[[Any, np.ndarray, np.ndarray], Mapping[str, Mapping[str, float]]]


class Progress:
    """Progress on standard error: lines (unless quiet) and tqdm bars (on a terminal).

    Parameters
    ----------
    quiet : bool, default=False
        Print no lines and draw no bars.
    """

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def line(self, text: str) -> None:
        """Print ``text`` on standard error, above any bar on screen."""
        if not self.quiet:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)

    def bar(self, iterable: Iterable, **kwargs) -> Iterable:
        """``iterable`` with a tqdm bar, drawn only when standard error is a terminal."""
        from tqdm.auto import tqdm

        # disable=None: tqdm draws nothing when standard error is not a terminal.
        return tqdm(iterable, file=sys.stderr, disable=True if self.quiet else None, **kwargs)


@dataclass(frozen=True)
class MethodScores:
    """The cross-validated scores of one method in one regime.

    Attributes
    ----------
    method : str
        The method's name.
    regime : str
        The labelling regime, e.g. :data:`ALL_LABELS`.
    scores : dict of str to ndarray
        Per-fold scores by metric name, in fold order.
    seconds : float
        The method's time over all folds and regimes.
    """

    method: str
    regime: str
    scores: dict[str, np.ndarray]
    seconds: float


def stratified_folds(y, n_splits: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled stratified ``(train, test)`` positions, made once for every method.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    n_splits : int
        Number of folds.
    random_state : int
        Seed of the shuffle.

    Returns
    -------
    list of (ndarray, ndarray)
        As ``StratifiedKFold(n_splits, shuffle=True, random_state=random_state)``
        splits ``y``.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    return list(cv.split(np.zeros((len(y), 1)), y))


def split_final_step(model, X):
    """The model's final estimator and ``X`` as the steps before it pass it on.

    A fitted pipeline's steps before the last are applied to ``X`` once, so that the
    final estimator can be asked for several things (``predict``, scores, probabilities)
    without featurizing ``X`` again. Samplers (imbalanced-learn's ``fit_resample``
    steps) act only when fitting and are skipped, as the pipeline itself does when
    predicting. A model that is not a pipeline is returned with ``X`` as is.

    Parameters
    ----------
    model : estimator or Pipeline
        A fitted model.
    X : array-like
        Its input.

    Returns
    -------
    final_estimator : estimator
    Xt : array-like
        ``X`` transformed by the steps before ``final_estimator``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.svm import SVC
    >>> from sklearn_cae.evaluation import split_final_step
    >>> X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1]
    >>> svc, Xt = split_final_step(make_pipeline(StandardScaler(), SVC()).fit(X, y), X)
    >>> type(svc).__name__, Xt.shape
    ('SVC', (4, 1))
    """
    steps = getattr(model, "steps", None)
    if not steps or len(steps) < 2:
        return model, X
    for _, step in steps[:-1]:
        if step not in (None, "passthrough") and not hasattr(step, "fit_resample"):
            X = step.transform(X)
    return steps[-1][1], X


def fit_and_score(X, y, scoring: Mapping[str, Callable]) -> FoldScorer:
    """A fold scorer that fits a clone of the method on the training fold.

    The held-out fold goes through the steps before the final estimator once (see
    :func:`split_final_step`); every scorer then scores the final estimator on it.

    Parameters
    ----------
    X : list of str or ndarray
        Images or image paths, as :func:`sklearn_cae.datasets.load_dataset` returns.
    y : ndarray of shape (n_samples,)
        Labels.
    scoring : dict of str to callable
        Metric name (the table's column title) to scikit-learn scorer
        (``scorer(estimator, X, y)``, e.g. from :func:`sklearn.metrics.get_scorer`).

    Returns
    -------
    callable
        ``score_fold(method, train, test)`` returning ``{ALL_LABELS: {name: score}}``.
    """
    from sklearn.base import clone

    y = np.asarray(y)

    def score_fold(method, train, test) -> dict[str, dict[str, float]]:
        model = clone(method).fit(take_rows(X, train), y[train])
        final, features = split_final_step(model, take_rows(X, test))
        return {
            ALL_LABELS: {name: scorer(final, features, y[test]) for name, scorer in scoring.items()}
        }

    return score_fold


def cross_validate_methods(
    methods: Mapping[str, Any],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    score_fold: FoldScorer,
    *,
    progress: Progress | None = None,
    n_jobs: int | None = None,
) -> list[MethodScores]:
    """Score each method on each fold; a progress line per method and fold.

    Parameters
    ----------
    methods : dict of str to object
        Name to method (an estimator, or whatever ``score_fold`` takes), in the order
        of the table.
    folds : sequence of (ndarray, ndarray)
        ``(train, test)`` positions, e.g. from :func:`stratified_folds`.
    score_fold : callable
        ``score_fold(method, train, test) -> {regime: {metric: score}}``, e.g.
        :func:`fit_and_score`. Every fold gives the same regimes and metrics.
    progress : Progress, default=None
        Where progress goes; None prints lines on standard error.
    n_jobs : int or None, default=None
        Folds scored at once, in joblib's processes (None: one after the other, here).
        The CAE trains on one CPU thread (the user guide's "CPU threads"), so folds in
        parallel use the other cores. Progress lines come in fold order.

    Returns
    -------
    list of MethodScores
        Regime by regime (in the order ``score_fold`` gives them), method by method.
    """
    progress = Progress() if progress is None else progress
    by_regime: dict[str, list[MethodScores]] = {}
    with warnings.catch_warnings():
        # loky restarts a worker that grew 300 MB past its first fold (a backbone loaded
        # after a raw-pixel fold) and warns of a memory leak: a harmless false alarm.
        # Its executor's thread warns, so this relies on the process-wide filter list.
        warnings.filterwarnings(
            "ignore",
            "A worker stopped while some jobs",
            UserWarning,
            module=r"joblib\.externals\.loky",
        )
        for name, method in methods.items():
            for result in _score_method(name, method, folds, score_fold, progress, n_jobs):
                by_regime.setdefault(result.regime, []).append(result)
    return [result for results in by_regime.values() for result in results]


def _score_method(
    name: str, method, folds, score_fold: FoldScorer, progress: Progress, n_jobs
) -> list[MethodScores]:
    """One method's scores on every fold, a row per regime; a progress line per fold."""
    per_fold: list[Mapping[str, Mapping[str, float]]] = []
    start = time.perf_counter()
    runs = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_timed)(score_fold, method, train, test) for train, test in folds
    )
    bar = progress.bar(runs, total=len(folds), desc=name, unit="fold")
    for k, (scores, fold_seconds) in enumerate(bar, 1):
        per_fold.append(scores)
        progress.line(f"{name}: fold {k}/{len(folds)}: {_describe(scores)} ({fold_seconds:.1f} s)")
    seconds = time.perf_counter() - start
    return [
        MethodScores(
            name,
            regime,
            {m: np.array([fold[regime][m] for fold in per_fold]) for m in per_fold[0][regime]},
            seconds,
        )
        for regime in per_fold[0]
    ]


def _timed(score_fold: FoldScorer, method, train, test):
    """``score_fold(method, train, test)`` and its seconds (measured where it runs)."""
    start = time.perf_counter()
    return score_fold(method, train, test), time.perf_counter() - start


def _describe(fold: Mapping[str, Mapping[str, float]]) -> str:
    """``balanced acc. 0.812, ROC AUC 0.874``, each preceded by its regime when several."""
    parts = []
    for regime, scores in fold.items():
        text = ", ".join(f"{metric} {score:.3f}" for metric, score in scores.items())
        parts.append(text if len(fold) == 1 else f"{regime}: {text}")
    return "; ".join(parts)


def format_table(
    results: Sequence[MethodScores],
    *,
    first_column: str = "method",
    regime_column: str = "labels",
) -> str:
    """A markdown table: mean ± standard deviation of each metric, and seconds.

    Parameters
    ----------
    results : sequence of MethodScores
        Rows, in order, e.g. from :func:`cross_validate_methods`; all with the same
        metrics.
    first_column : str, default="method"
        Title of the column of method names.
    regime_column : str, default="labels"
        Title of the column of regimes, shown when the results have several.

    Returns
    -------
    str
        A header, a rule, then one line per result, without a final newline.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cae.evaluation import MethodScores, format_table
    >>> row = MethodScores("SVC", "all labels", {"ROC AUC": np.array([0.8, 0.9])}, 1.5)
    >>> print(format_table([row]))
    | method |       ROC AUC | seconds |
    |--------|---------------|---------|
    | SVC    | 0.850 ± 0.050 |     1.5 |
    """
    metrics = list(results[0].scores)
    show_regime = len({r.regime for r in results}) > 1
    header = [first_column, *([regime_column] if show_regime else []), *metrics, "seconds"]
    rows = [
        [
            r.method,
            *([r.regime] if show_regime else []),
            *(f"{r.scores[m].mean():.3f} ± {r.scores[m].std():.3f}" for m in metrics),
            f"{r.seconds:.1f}",
        ]
        for r in results
    ]
    align = "l" * (1 + show_regime) + "r" * (len(metrics) + 1)
    return markdown_table(header, rows, align=align)


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, align: str | None = None
) -> str:
    """A markdown table: ``| a | b |`` lines under a ``|---|---|`` rule.

    Cells are written with :func:`str`; format numbers before passing them.

    Parameters
    ----------
    header : sequence of str
        Column titles.
    rows : iterable of sequences
        One sequence of cells per row, as many as ``header`` has.
    align : str, default=None
        One letter per column, ``"l"`` or ``"r"``: each column is padded to its widest
        cell, left- or right-aligned, so the table also reads well as plain text (as
        :func:`format_table`'s). None: cells as they are.

    Returns
    -------
    str
        The table's lines, without a final newline.

    Examples
    --------
    >>> from sklearn_cae.evaluation import markdown_table
    >>> print(markdown_table(["set", "score"], [["breast", "0.81"], ["retina", "0.43"]]))
    | set | score |
    |---|---|
    | breast | 0.81 |
    | retina | 0.43 |
    >>> print(markdown_table(["set", "score"], [["breast", "0.81"]], align="lr"))
    | set    | score |
    |--------|-------|
    | breast |  0.81 |
    """
    header = [str(title) for title in header]
    body = [[str(cell) for cell in row] for row in rows]
    for cells in body:
        if len(cells) != len(header):
            raise ValueError(f"a row has {len(cells)} cells, the header {len(header)}: {cells}")
    if align is None:
        rule = "|" + "---|" * len(header)
    else:
        if len(align) != len(header) or not set(align) <= {"l", "r"}:
            raise ValueError(f"align needs an 'l' or 'r' per column, got {align!r}")
        widths = [max(map(len, column)) for column in zip(header, *body, strict=True)]
        rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
        header, *body = [_padded(cells, widths, align) for cells in [header, *body]]
    lines = ["| " + " | ".join(cells) + " |" for cells in [header, *body]]
    return "\n".join([lines[0], rule, *lines[1:]])


def _padded(cells: list[str], widths: list[int], align: str) -> list[str]:
    return [
        cell.ljust(width) if side == "l" else cell.rjust(width)
        for cell, width, side in zip(cells, widths, align, strict=True)
    ]
