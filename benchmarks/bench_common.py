"""What the benchmarks share: the data sets and their splits, the classifier, the scores.

* :func:`load_split` and :func:`load_evaluation_set`: BreastMNIST, PneumoniaMNIST,
  RetinaMNIST (official train / test splits) and the COVID-19 X-ray set (5-fold
  stratified CV of all images, or its ``train`` / ``val`` folders);
* :func:`per_class_subset`: a fixed number of images of each class (smoke runs, the
  Dask benchmark). Which images are labelled for a label fraction and a seed is
  ``sklearn_cae.datasets.stratified_subset``, imported by every benchmark that draws
  labels (as by the demo), so that they all draw the same labelled images;
* :func:`svc`: the classifier of every benchmark, ``StandardScaler + SVC(class_weight=
  "balanced")``; :func:`eval_features` fits it (or another model) and :func:`model_scores`
  scores a fitted model: accuracy, balanced accuracy and ROC AUC (:func:`scores`);
  :func:`summarize`: mean ± std over runs;
* :func:`cv_bacc`: cross-validated balanced accuracy of :func:`svc`;
  :func:`backbone_features`: ``BackboneFeaturizer`` features as one block per layer;
* :func:`merge_rows`: result rows of a run replacing the saved rows of the same key;
  :func:`read_json` and :func:`write_json`; :class:`MarkdownLog`: a report printed as
  it grows, then written; :func:`verdict_table`: a benchmark's goals, what it measured
  and whether each goal was met.

Not a script: the benchmarks import it (``sys.path`` holds ``benchmarks/`` when they
run as ``python benchmarks/<name>.py``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_cae.datasets import load_medmnist
from sklearn_cae.evaluation import markdown_table

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
MEDMNIST = ("breastmnist", "pneumoniamnist", "retinamnist")
BACKBONE = "efficientnet_lite0"  # the backbone of every benchmark
DATASETS = (*MEDMNIST, "covid19_xray")
# Label fractions of the label-efficiency curves (accuracy.py and its report).
LABEL_FRACTIONS = (0.05, 0.10, 0.25, 1.0)


# ----------------------------------------------------------------------------- data
def default_medmnist_root() -> Path:
    """``$MEDMNIST_ROOT``, else the shared data folder's ``medmnist``."""
    return Path(os.environ.get("MEDMNIST_ROOT") or SHARED / "medmnist")


def default_covid_root() -> Path:
    """``$COVID_ROOT``, else the shared data folder's ``covid19_xray``."""
    return Path(os.environ.get("COVID_ROOT") or SHARED / "covid19_xray")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every script that reads the shared data sets."""
    parser.add_argument("--medmnist-root", type=Path, default=default_medmnist_root())
    parser.add_argument("--covid-root", type=Path, default=default_covid_root())


def add_run_arguments(parser: argparse.ArgumentParser, *, default_out: Path) -> None:
    """The options shared by the accuracy benchmark and the ablation studies."""
    parser.add_argument(
        "--quick", action="store_true", help="tiny smoke subset: BreastMNIST, 1 seed, 32 px"
    )
    parser.add_argument("--datasets", nargs="+", default=None, choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, default=default_out, help="results folder")


@dataclass(frozen=True)
class RunConfig:
    """The settings of :func:`add_run_arguments`, shared by the benchmarks' configs."""

    datasets: tuple[str, ...]
    seeds: int
    image_size: int
    device: str
    medmnist_root: Path
    covid_root: Path
    out: Path
    quick: bool

    @property
    def n_jobs(self) -> int:
        """Worker processes of the CV loops; 1 with --quick, where starting them costs more."""
        return 1 if self.quick else -1


def run_settings(args: argparse.Namespace) -> dict:
    """The options of :func:`add_run_arguments` as keyword arguments of a :class:`RunConfig`.

    ``--quick`` means BreastMNIST (unless ``--datasets`` says otherwise), one seed and
    32-pixel images.
    """
    quick = args.quick
    datasets = args.datasets or (["breastmnist"] if quick else list(DATASETS))
    return {
        "datasets": tuple(datasets),
        "seeds": 1 if quick else args.seeds,
        "image_size": 32 if quick else args.image_size,
        "device": args.device,
        "medmnist_root": args.medmnist_root,
        "covid_root": args.covid_root,
        "out": args.out,
        "quick": quick,
    }


def load_split(
    name: str, split: str = "train", *, medmnist_root=None, covid_root=None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, H, W[, C]) uint8 and int64 labels of a ``train`` or ``test`` split.

    COVID-19 X-ray has no test split: its ``val`` folder stands in for it.
    """
    if name == "covid19_xray":
        data = np.load(Path(covid_root or default_covid_root()) / "covid19_xray.npz")
        keep = data["split"] == ("train" if split == "train" else "val")
        return data["images"][keep], data["labels"][keep].astype(np.int64)
    X, y = load_medmnist(name, split=split, root=medmnist_root or default_medmnist_root())
    return X, np.asarray(y).reshape(-1).astype(np.int64)


@dataclass(frozen=True)
class EvaluationSet:
    """A data set with its evaluation splits.

    Attributes
    ----------
    X : ndarray of shape (n, H, W[, C])
        Every image, training and test.
    y : ndarray of shape (n,)
        Labels.
    splits : list of (train_index, test_index)
        MedMNIST: the official train -> test split; COVID-19: 5 stratified folds.
    n_classes : int
    """

    X: np.ndarray
    y: np.ndarray
    splits: list
    n_classes: int


def load_evaluation_set(
    name: str, *, medmnist_root=None, covid_root=None, quick: bool = False
) -> EvaluationSet:
    """Images, labels and evaluation splits of one data set.

    With ``quick``, a stratified handful of the first split (:func:`per_class_subset`):
    12 training and 12 test images a class.
    """
    if name == "covid19_xray":
        data = np.load(Path(covid_root or default_covid_root()) / "covid19_xray.npz")
        X, y = data["images"], data["labels"].astype(np.int64)
        splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    else:
        root = medmnist_root or default_medmnist_root()
        X_train, y_train = load_medmnist(name, "train", root=root)
        X_test, y_test = load_medmnist(name, "test", root=root)
        X, y = np.concatenate([X_train, X_test]), np.concatenate([y_train, y_test])
        splits = [(np.arange(len(X_train)), np.arange(len(X_train), len(X)))]
    if quick:
        train, test = splits[0]
        (X_train, y_train), (X_test, y_test) = (per_class_subset(X[i], y[i]) for i in (train, test))
        X, y = np.concatenate([X_train, X_test]), np.concatenate([y_train, y_test])
        splits = [(np.arange(len(y_train)), np.arange(len(y_train), len(y)))]
    return EvaluationSet(X=X, y=y, splits=splits, n_classes=int(y.max()) + 1)


def per_class_subset(X, y, per_class: int = 12, seed: int = 0):
    """``per_class`` images of each class, drawn without replacement, in their order in ``X``."""
    rng = np.random.default_rng(seed)
    index = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]
    )
    return X[np.sort(index)], y[np.sort(index)]


def channels_last(X: np.ndarray) -> np.ndarray:
    """(n, H, W) or (n, H, W, C) uint8 arrays as channels-last (n, H, W, C)."""
    return X[..., None] if X.ndim == 3 else X


# ------------------------------------------------------------------------- features
def backbone_features(X, layers: Sequence[str] | None = None, **params) -> dict[str, np.ndarray]:
    """``BackboneFeaturizer(layer=layers, **params)`` features of ``X``, one block a layer.

    ``layers=None``: every layer of :data:`BACKBONE`. Returns ``{layer: (n, channels)}``,
    what ``BackboneFeaturizer(layer=layer, **params)`` gives for each layer alone.
    """
    from sklearn_cae import BackboneFeaturizer, available_layers

    layers = list(layers or available_layers(BACKBONE))
    # Raw pooled maps: block balancing would fit statistics on the 2 images fit sees.
    featurizer = BackboneFeaturizer(layer=layers, balance_blocks=False, **params).fit(X[:2])
    F = featurizer.transform(X)
    edges = np.cumsum([0, *featurizer.n_channels_])
    return {name: F[:, a:b] for name, a, b in zip(layers, edges[:-1], edges[1:], strict=True)}


# -------------------------------------------------------------------------- metrics
def svc(*steps) -> Pipeline:
    """The classifier of every benchmark: ``StandardScaler + SVC(class_weight="balanced")``.

    ``steps``: estimators before it in the pipeline (named as ``make_pipeline`` names
    them).
    """
    return make_pipeline(*steps, StandardScaler(), SVC(class_weight="balanced"))


def cv_bacc(F, y, n_jobs: int | None = None, folds: int = 5, seed: int = 0) -> float:
    """Mean balanced accuracy of :func:`svc` over stratified folds (shuffled by ``seed``).

    ``folds`` is lowered to the smallest class's count (at least 2).
    """
    folds = max(2, min(folds, np.bincount(y).min()))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_score(svc(), F, y, cv=cv, scoring="balanced_accuracy", n_jobs=n_jobs).mean()


def scores(y_true, y_pred, y_score, n_classes: int) -> dict:
    """Accuracy, balanced accuracy and (macro one-vs-rest) ROC AUC."""
    y_score = np.asarray(y_score)
    if n_classes == 2:
        auc = roc_auc_score(y_true, y_score if y_score.ndim == 1 else y_score[:, 1])
    else:  # macro mean of the per-class one-vs-rest AUCs, from any monotone scores
        auc = np.mean([roc_auc_score(y_true == k, y_score[:, k]) for k in range(n_classes)])
    return {
        "acc": accuracy_score(y_true, y_pred),
        "bacc": balanced_accuracy_score(y_true, y_pred),
        "auc": float(auc),
    }


def model_scores(model, X_test, y_test, n_classes: int) -> dict:
    """:func:`scores` of a fitted model: its predictions and decision function on ``X_test``."""
    return scores(y_test, model.predict(X_test), model.decision_function(X_test), n_classes)


def eval_features(F_train, y_train, F_test, y_test, n_classes: int, model=None) -> dict:
    """Fit ``model`` (default: :func:`svc`) on the training features; its :func:`model_scores`."""
    model = svc() if model is None else model
    return model_scores(model.fit(F_train, y_train), F_test, y_test, n_classes)


def summarize(runs: list[dict]) -> dict:
    """Mean and std of each score over runs, and their number."""
    out = {}
    for key in ("acc", "bacc", "auc"):
        values = np.array([r[key] for r in runs])
        out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    out["n_runs"] = len(runs)
    return out


# -------------------------------------------------------------------------- output
def merge_rows(
    old: Iterable[dict], new: Iterable[dict], keys: Sequence[str], *, sort: bool = False
) -> list[dict]:
    """``old`` less the rows that ``new`` replaces (equal values at ``keys``), then ``new``.

    With ``sort``, the result is sorted by the values at ``keys`` (compared as text).
    """
    new = list(new)
    fresh = {tuple(row[k] for k in keys) for row in new}
    merged = [row for row in old if tuple(row[k] for k in keys) not in fresh] + new
    if sort:
        merged.sort(key=lambda row: tuple(str(row[k]) for k in keys))
    return merged


def read_json(path: Path, default=None):
    """The JSON object saved at ``path``, or ``default`` when there is no such file."""
    return json.loads(path.read_text()) if path.exists() else default


def write_json(obj, path: Path) -> None:
    """Write ``obj`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str))


class MarkdownLog:
    """A report's Markdown lines, printed as they come and written at the end.

    Call it with a line (``out(line)``); :meth:`write` saves every line so far.
    """

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def write(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")
        print(f"wrote {path}")


def verdict_table(goals: Sequence[tuple[str, str, bool]]) -> str:
    """A ``| target | measured | met |`` table, one row per (target, measured, met) goal."""
    rows = [(target, measured, "yes" if met else "no") for target, measured, met in goals]
    return markdown_table(["target", "measured", "met"], rows)
