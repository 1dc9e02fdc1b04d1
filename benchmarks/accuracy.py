"""Accuracy benchmark: CAE features against raw pixels, backbone features and fine-tuning.

Runs every method of issue 4 on BreastMNIST, PneumoniaMNIST, RetinaMNIST (official
train / test splits) and the COVID-19 X-ray set (5-fold CV) and writes
``benchmarks/results/accuracy.{json,md,png}``. The benchmark is made of parts, each
one function that yields result rows tagged with their part (``"part"``):

* ``raw``: raw pixels + PCA(50);
* ``backbone``: ``BackboneFeaturizer`` at every layer, and with its layer chosen by
  inner CV on the training part;
* ``cae``: ``CAETransferFeaturizer`` with its defaults;
* ``grid``: ``CAETransferFeaturizer`` tuned by ``GridSearchCV``;
* ``finetune``: the whole network fine-tuned with a new linear head, by
  ``benchmarks/finetune.py``'s recipe and loop (:func:`finetune.fine_tune_run`: a
  linear-probe warm start, then skorch with early stopping where the classes are large
  enough). The saved ``finetune`` and fine-tuning label rows of ``accuracy.json`` came
  from an earlier, plain recipe (AdamW at 3e-4 for up to 15 epochs, early stopping on a
  15% validation split, no warm start or augmentation) and were not rerun;
* ``labels``: label efficiency on MedMNIST (5, 10, 25, 100% of the training labels)
  of the ``--label-methods`` (``cae``, ``backbone``, ``finetune``); these rows also
  carry ``"label_method"``.

Usage::

    python benchmarks/accuracy.py                  # the full benchmark (GPU: minutes)
    python benchmarks/accuracy.py --quick --out /tmp/smoke   # tiny smoke subset
    python benchmarks/accuracy.py --merge --parts cae labels --label-methods cae

``--merge`` keeps the rows of the existing ``accuracy.json`` that this run does not
produce again (matched by data set, part and label method) and replaces the others.
The design studies of ``docs/method.md`` are ``benchmarks/ablation.py``; the report
(``accuracy.md`` and ``accuracy.png``) is rewritten from ``accuracy.json`` by
``python benchmarks/accuracy_report.py``.

Every classifier is ``StandardScaler + SVC(class_weight="balanced")``; stochastic
methods are repeated over ``--seeds`` seeds and reported as mean ± std over
(seed, split) runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import accuracy_report  # noqa: E402
import finetune  # noqa: E402
from bench_common import (  # noqa: E402
    LABEL_FRACTIONS,
    MEDMNIST,
    RESULTS,
    EvaluationSet,
    RunConfig,
    add_run_arguments,
    backbone_features,
    cv_bacc,
    eval_features,
    load_evaluation_set,
    model_scores,
    run_settings,
    summarize,
    svc,
    write_json,
)

from sklearn_cae import CAETransferFeaturizer  # noqa: E402
from sklearn_cae.datasets import stratified_subset  # noqa: E402
from sklearn_cae.devices import resolve_device  # noqa: E402

PARTS = ("raw", "backbone", "cae", "grid", "finetune", "labels")
LABEL_METHODS = ("cae", "backbone", "finetune")


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class BenchmarkConfig(RunConfig):
    """What one run of the benchmark does; built from the command line."""

    parts: tuple[str, ...]
    label_methods: tuple[str, ...]
    ft_epochs: int | None
    ft_seeds: int | None
    ft_lr: float | None
    grid_splits: int
    merge: bool
    command_line: str

    @property
    def finetune_seeds(self) -> int:
        """Seeds of the fine-tuning runs (``--ft-seeds``, else ``--seeds``)."""
        return self.ft_seeds or self.seeds

    @property
    def finetune_recipe(self) -> dict:
        """``finetune.RECIPE`` at this run's image size, with ``--ft-epochs`` and ``--ft-lr``."""
        recipe = {**finetune.RECIPE, "image_size": self.image_size}
        if self.ft_epochs is not None:
            recipe["epochs"] = self.ft_epochs
        if self.ft_lr is not None:
            recipe["head_lr"] = self.ft_lr
        return recipe

    @classmethod
    def from_argv(cls, argv: list[str] | None = None) -> BenchmarkConfig:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        add_run_arguments(parser, default_out=RESULTS)
        parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
        parser.add_argument(
            "--label-methods", nargs="+", default=list(LABEL_METHODS), choices=LABEL_METHODS
        )
        parser.add_argument(
            "--ft-epochs", type=int, default=None, help="fine-tuning epochs (finetune.RECIPE's)"
        )
        parser.add_argument("--ft-seeds", type=int, default=None, help="seeds of fine-tuning")
        parser.add_argument(
            "--ft-lr", type=float, default=None, help="the head's lr (finetune.RECIPE's)"
        )
        parser.add_argument("--grid-splits", type=int, default=1, help="CV folds searched (COVID)")
        parser.add_argument(
            "--merge", action="store_true", help="keep rows of accuracy.json not produced now"
        )
        args = parser.parse_args(argv)
        return cls(
            **run_settings(args),
            parts=tuple(args.parts),
            label_methods=tuple(args.label_methods),
            ft_epochs=args.ft_epochs,
            ft_seeds=args.ft_seeds,
            ft_lr=args.ft_lr,
            grid_splits=args.grid_splits,
            merge=args.merge,
            command_line=" ".join(sys.argv[1:] if argv is None else argv),
        )


# ------------------------------------------------------------------- shared steps
def select_layer(per_layer: dict, train, y, n_jobs: int) -> str:
    """The layer with the best inner 5-fold CV balanced accuracy on the training part."""
    cv = {name: cv_bacc(F[train], y[train], n_jobs) for name, F in per_layer.items()}
    return max(cv, key=cv.get)


def cae_pipeline(seed: int, config: BenchmarkConfig, **params):
    """``CAETransferFeaturizer + StandardScaler + SVC`` (2 epochs with --quick)."""
    feat = CAETransferFeaturizer(
        image_size=config.image_size, device=config.device, random_state=seed, **params
    )
    if config.quick:
        feat.set_params(max_epochs=2)
    return svc(feat)


def fine_tune(name: str, work: DatasetWork, train, test, seed: int) -> dict:
    """Scores on ``test`` of the network fine-tuned on ``train`` by ``finetune.py``."""
    data, config = work.data, work.config
    train_images, test_images = (work.network_images[torch.as_tensor(i)] for i in (train, test))
    row = finetune.fine_tune_run(
        train_images, data.y[train], test_images, data.y[test], data.n_classes, seed,
        finetune.FLIP[name], config.finetune_recipe, config.quick, config.device,
    )  # fmt: skip
    return {key: row[key] for key in ("acc", "bacc", "auc")}


class DatasetWork:
    """One data set's costly intermediate results, each computed once, on first use.

    Several parts need the same thing (the backbone features of every layer, the
    layer chosen by inner CV, a seed's CAE features, the fine-tuning inputs); the
    part that asks first computes it, and its time counts there, as in a run of that
    part alone.
    """

    def __init__(self, data: EvaluationSet, config: BenchmarkConfig):
        self.data = data
        self.config = config
        self._cae_features: dict[tuple[int, int], np.ndarray] = {}

    @cached_property
    def backbone(self) -> tuple[dict[str, np.ndarray], float]:
        """Avg-pooled features of every layer (what ``BackboneFeaturizer(layer=L)``
        gives) and the seconds they took."""
        start = time.perf_counter()
        config = self.config
        per_layer = backbone_features(
            self.data.X, image_size=config.image_size, device=config.device, batch_size=128
        )
        return per_layer, time.perf_counter() - start

    @cached_property
    def chosen_layers(self) -> list[str]:
        """Per split, the backbone layer chosen by inner CV on its training part."""
        per_layer, _ = self.backbone
        n_jobs = self.config.n_jobs
        return [select_layer(per_layer, tr, self.data.y, n_jobs) for tr, _ in self.data.splits]

    @cached_property
    def network_images(self) -> torch.Tensor:
        """Every image resized for fine-tuning, in [0, 1] (:func:`finetune.resized_images`)."""
        return finetune.resized_images(self.data.X, self.config.image_size)

    def cae_features(self, seed: int, split: int = 0) -> np.ndarray:
        """Features of every image from the CAE featurizer fitted, without labels, on
        the training images of ``split``.

        ``fit_transform`` encodes the training images from the maps computed for
        fitting, so the backbone sees every image once.
        """
        key = (seed, split)
        if key not in self._cae_features:
            train = self.data.splits[split][0]
            feat = cae_pipeline(seed, self.config)[0]
            X = self.data.X
            F_train = feat.fit_transform(X[train])
            rest = np.setdiff1d(np.arange(len(X)), train)
            F = np.empty((len(X), F_train.shape[1]), dtype=np.float32)
            F[train] = F_train
            if len(rest):
                F[rest] = feat.transform(X[rest])
            self._cae_features[key] = F
        return self._cae_features[key]


# ------------------------------------------------------------------------ the parts
def part_row(name: str, part: str, method: str, runs: list[dict], seconds: float, **extra):
    """A result row: mean ± std of the runs' scores, tagged with its part."""
    return {
        "dataset": name,
        "part": part,
        "method": method,
        **summarize(runs),
        "seconds": seconds,
        **extra,
    }


def raw_pixel_rows(name: str, work: DatasetWork) -> Iterator[dict]:
    """Raw pixels, PCA to 50 components, then the SVC."""
    data = work.data
    start = time.perf_counter()
    X = data.X.reshape(len(data.X), -1).astype(np.float32) / 255.0
    y, k = data.y, data.n_classes
    runs = [
        eval_features(X[tr], y[tr], X[te], y[te], k, svc(PCA(min(50, len(tr) - 1), random_state=0)))
        for tr, te in data.splits
    ]
    yield part_row(name, "raw", "raw pixels + PCA(50)", runs, time.perf_counter() - start)


def backbone_rows(name: str, work: DatasetWork) -> Iterator[dict]:
    """``BackboneFeaturizer`` at every layer, then with its layer chosen by inner CV."""
    y, splits, k = work.data.y, work.data.splits, work.data.n_classes
    per_layer, bb_seconds = work.backbone
    for layer, F in per_layer.items():
        runs = [eval_features(F[tr], y[tr], F[te], y[te], k) for tr, te in splits]
        yield part_row(name, "backbone", f"BackboneFeaturizer layer={layer}", runs, bb_seconds)
    start = time.perf_counter()
    chosen = work.chosen_layers
    runs = [
        eval_features(per_layer[layer][tr], y[tr], per_layer[layer][te], y[te], k)
        for layer, (tr, te) in zip(chosen, splits, strict=True)
    ]
    seconds = bb_seconds + time.perf_counter() - start
    method = "BackboneFeaturizer, layer by inner CV"
    yield part_row(name, "backbone", method, runs, seconds, layers=chosen)


def cae_rows(name: str, work: DatasetWork) -> Iterator[dict]:
    """``CAETransferFeaturizer`` with its defaults, fitted per seed and split.

    Each run equals ``Pipeline(featurizer, scaler, SVC).fit(X[tr], y[tr])`` scored on
    ``X[te]``.
    """
    y, splits, k = work.data.y, work.data.splits, work.data.n_classes
    start = time.perf_counter()
    runs = []
    for seed in range(work.config.seeds):
        for index, (tr, te) in enumerate(splits):
            F = work.cae_features(seed, index)
            runs.append(eval_features(F[tr], y[tr], F[te], y[te], k))
    seconds = (time.perf_counter() - start) / len(runs)
    yield part_row(name, "cae", "CAETransferFeaturizer (defaults)", runs, seconds)


def grid_rows(name: str, work: DatasetWork) -> Iterator[dict]:
    """``CAETransferFeaturizer`` with layer and bottleneck tuned by ``GridSearchCV``."""
    data, config = work.data, work.config
    X, y, k = data.X, data.y, data.n_classes
    start = time.perf_counter()
    runs, best = [], []
    grid = {
        "caetransferfeaturizer__layer": ["blocks.4", "blocks.5"],
        "caetransferfeaturizer__bottleneck": [64, 256],
    }
    if config.quick:
        grid = {"caetransferfeaturizer__bottleneck": [8, 16]}
    for tr, te in data.splits[: config.grid_splits]:
        # The backbone maps are computed once per layer and shared by every fit.
        with tempfile.TemporaryDirectory() as cache:
            search = GridSearchCV(
                cae_pipeline(0, config, cache=cache),
                grid,
                cv=2 if config.quick else 3,
                scoring="balanced_accuracy",
                n_jobs=config.n_jobs,
            ).fit(X[tr], y[tr])
            best.append({p.split("__")[1]: v for p, v in search.best_params_.items()})
            runs.append(model_scores(search.best_estimator_, X[te], y[te], k))
    seconds = time.perf_counter() - start
    method = "CAETransferFeaturizer, GridSearchCV"
    yield part_row(name, "grid", method, runs, seconds, best_params=best)


def finetune_rows(name: str, work: DatasetWork) -> Iterator[dict]:
    """The whole network fine-tuned with a linear head (``finetune.py``), per seed and split."""
    start = time.perf_counter()
    runs = [
        fine_tune(name, work, tr, te, seed)
        for seed in range(work.config.finetune_seeds)
        for tr, te in work.data.splits
    ]
    seconds = (time.perf_counter() - start) / len(runs)
    yield part_row(name, "finetune", "fine-tuning (linear head)", runs, seconds)


# Method name of each label method's rows.
LABEL_METHOD_NAMES = {
    "cae": "CAETransferFeaturizer",
    "backbone": "BackboneFeaturizer (layer by CV)",
    "finetune": "fine-tuning",
}


def label_rows(name: str, work: DatasetWork) -> Iterator[dict]:
    """Label efficiency (MedMNIST only): each label method on a stratified fraction of
    the training labels, per seed; the CAE is fitted on all training images."""
    if name not in MEDMNIST:
        return
    y, k, config = work.data.y, work.data.n_classes, work.config
    tr, te = work.data.splits[0]
    fractions = (0.5, 1.0) if config.quick else LABEL_FRACTIONS
    methods = config.label_methods
    for seed in range(config.seeds):
        cae_F = work.cae_features(seed) if "cae" in methods else None
        for fraction in fractions:
            labelled = tr[stratified_subset(y[tr], fraction, random_state=seed)]
            results = {}
            if cae_F is not None:
                results["cae"] = eval_features(cae_F[labelled], y[labelled], cae_F[te], y[te], k)
            if "backbone" in methods:
                per_layer, _ = work.backbone
                # All labels: the main row's choice (the same images, so the same layer).
                layer = (
                    work.chosen_layers[0]
                    if fraction == 1.0
                    else select_layer(per_layer, labelled, y, config.n_jobs)
                )
                F = per_layer[layer]
                results["backbone"] = eval_features(F[labelled], y[labelled], F[te], y[te], k)
            if "finetune" in methods and seed < config.finetune_seeds:
                results["finetune"] = fine_tune(name, work, labelled, te, seed)
            for label_method, result in results.items():
                yield {
                    "label_efficiency": True,
                    "dataset": name,
                    "part": "labels",
                    "label_method": label_method,
                    "method": LABEL_METHOD_NAMES[label_method],
                    "fraction": fraction,
                    "seed": seed,
                    "n_labels": len(labelled),
                    **result,
                }


PART_RUNNERS: dict[str, Callable[[str, DatasetWork], Iterator[dict]]] = {
    "raw": raw_pixel_rows,
    "backbone": backbone_rows,
    "cae": cae_rows,
    "grid": grid_rows,
    "finetune": finetune_rows,
    "labels": label_rows,
}


def benchmark_dataset(name: str, config: BenchmarkConfig, log) -> list[dict]:
    """The rows of the selected parts on one data set, in the order of ``PARTS``."""
    data = load_evaluation_set(
        name, medmnist_root=config.medmnist_root, covid_root=config.covid_root, quick=config.quick
    )
    work = DatasetWork(data, config)
    rows = []
    for part in PARTS:
        if part in config.parts:
            for row in PART_RUNNERS[part](name, work):
                log(row)
                rows.append(row)
    return rows


# ------------------------------------------------------------------------ merging
# Rows written before rows were tagged: the part their method name implies.
_LEGACY_PARTS = (
    ("raw pixels", "raw"),
    ("BackboneFeaturizer", "backbone"),
    ("CAETransferFeaturizer (", "cae"),
    ("CAETransferFeaturizer,", "grid"),
    ("fine-tuning (", "finetune"),
)


def with_part(row: dict) -> dict:
    """``row`` with its ``"part"`` (and a label row's ``"label_method"``) tag.

    Rows of ``accuracy.json`` written before the tags existed get them from their
    method name; tagged rows are returned as they are.
    """
    if "part" in row:
        return row
    if row.get("label_efficiency"):
        by_name = {method: key for key, method in LABEL_METHOD_NAMES.items()}
        return {**row, "part": "labels", "label_method": by_name[row["method"]]}
    for prefix, part in _LEGACY_PARTS:
        if row["method"].startswith(prefix):
            return {**row, "part": part}
    raise ValueError(f"Cannot tell which part produced the row of {row['method']!r}.")


def produced_now(row: dict, config: BenchmarkConfig) -> bool:
    """Whether this run produces ``row`` (a tagged row) again."""
    if row["dataset"] not in config.datasets or row["part"] not in config.parts:
        return False
    return row["part"] != "labels" or row["label_method"] in config.label_methods


def kept_rows(old_rows: list[dict], config: BenchmarkConfig) -> list[dict]:
    """The rows of an earlier ``accuracy.json`` that this run does not replace."""
    return [row for row in map(with_part, old_rows) if not produced_now(row, config)]


# ---------------------------------------------------------------------------- main
def run_meta(config: BenchmarkConfig) -> dict:
    """What the report says about this run."""
    return {
        "argv": config.command_line,
        "device": torch.cuda.get_device_name()
        if resolve_device(config.device).type == "cuda"
        else f"CPU ({os.cpu_count()} cores)",
        "date": time.strftime("%Y-%m-%d"),
        "image_size": config.image_size,
        "seeds": config.seeds,
        "datasets": list(config.datasets),
        "parts": list(config.parts),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    config = BenchmarkConfig.from_argv(argv)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    meta = run_meta(config)
    run = {k: meta[k] for k in ("argv", "device", "date")}
    meta["runs"] = [run]
    rows = []
    if config.merge and (out / "accuracy.json").exists():
        old = json.loads((out / "accuracy.json").read_text())
        rows = kept_rows(old["rows"], config)
        meta["datasets"] = list(dict.fromkeys([*old["meta"]["datasets"], *config.datasets]))
        # Keep the record of the runs that produced the rows kept.
        meta["notes"] = old["meta"].get("notes", [])
        meta["runs"] = [*old["meta"].get("runs", []), run]
        meta["argv"], meta["device"] = "(merged runs, see below)", "several machines"

    def log(row):
        print(
            json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}, default=str),
            flush=True,
        )

    start = time.perf_counter()
    for name in config.datasets:
        rows += [{**row, "where": run["device"]} for row in benchmark_dataset(name, config, log)]
        meta["seconds"] = time.perf_counter() - start
        write_json({"meta": meta, "rows": rows}, out / "accuracy.json")
    accuracy_report.write_report(rows, meta, out)
    return rows


if __name__ == "__main__":
    main()
