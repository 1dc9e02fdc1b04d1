"""Which CAE training signal adds information? Cross-validated on the training splits.

For each shared data set (BreastMNIST, PneumoniaMNIST on a stratified subsample,
RetinaMNIST, COVID-19's ``train`` split) and each label fraction, 5-fold stratified CV
on the **training split only** (the test splits are never read):

* the labelled images ``L`` of each training fold are all of it (fraction 1) or a
  stratified fraction of it (one draw per seed); the rest of the fold is unlabelled;
* ``backbone``: ``BackboneFeaturizer`` with its layer chosen by inner CV on ``L``
  (every layer of the backbone, 5 inner folds), then the SVC fitted on ``L``;
* each CAE configuration: ``CAETransferFeaturizer`` fitted on the training fold's
  images -- with the labels of ``L`` and ``-1`` for the others when it is
  semi-supervised, without labels otherwise -- then the same SVC fitted on ``L``.

The held-out fold is never seen by any featurizer, and its labels only score. The
classifier is ``StandardScaler + SVC(class_weight="balanced")`` everywhere; the score
is balanced accuracy. Results go to ``benchmarks/results/signals.json`` (merged by
configuration, data set, fraction and seed, so runs of different configurations --
e.g. the previous release's defaults, run from an older checkout with ``PYTHONPATH``
-- sit in one file) and the table to ``benchmarks/results/signals.md``.

Usage::

    python benchmarks/signals.py --configs backbone,defaults,denoise --seeds 2
    python benchmarks/signals.py --report      # rewrite signals.md from signals.json
    python benchmarks/signals.py --on-test --configs backbone,defaults --seeds 3

``--on-test`` is the judge, for configurations already chosen by CV: each featurizer
is fitted on the whole training split (labels of the labelled fraction only), the SVC
on the labelled images, and the score is on the test split (COVID-19: its ``val``
folder), written to ``signals_test.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    DATASETS,
    RESULTS,
    add_data_arguments,
    backbone_features,
    cv_bacc,
    eval_features,
    load_split,
    merge_rows,
    per_class_subset,
    read_json,
    write_json,
)

from sklearn_cae import CAETransferFeaturizer
from sklearn_cae.datasets import stratified_subset
from sklearn_cae.evaluation import markdown_table

PNEUMONIA_SUBSAMPLE = 1200
FOLDS = 5
# What identifies a row of the json: a rerun replaces the row of the same key.
KEY = ("config", "dataset", "fraction", "seed")

# name -> CAETransferFeaturizer parameters (beyond random_state and cache). "defaults" is
# whatever the installed sklearn_cae's defaults are (the current or an older release).
CONFIGS = {
    "defaults": {},
    "denoise": {"corrupted_views": 1},
    "semi": {"supervision": 1.0},
    "semi+denoise": {"supervision": 1.0, "corrupted_views": 1},
    "compact": {"bottleneck": 64, "include_backbone": False},
    "semi compact": {"supervision": 1.0, "bottleneck": 64, "include_backbone": False},
}


def evaluation_splits(name: str, on_test: bool, quick: bool, roots: dict | None = None):
    """Images, labels and [(fit_index, score_index), ...].

    Cross-validation folds of the training split (Pneumonia: a stratified subsample of
    it), or with ``on_test`` the whole training split against the test split. ``roots``:
    ``medmnist_root`` and ``covid_root`` of :func:`bench_common.load_split`.
    """
    roots = roots or {}
    X, y = load_split(name, "train", **roots)
    if on_test:
        X_test, y_test = load_split(name, "test", **roots)
        if quick:
            (X, y), (X_test, y_test) = per_class_subset(X, y), per_class_subset(X_test, y_test, 4)
        index = np.arange(len(y))
        X, y = np.concatenate([X, X_test]), np.concatenate([y, y_test])
        return X, y, [(index, np.arange(len(index), len(y)))]
    if name == "pneumoniamnist":
        keep = stratified_subset(y, PNEUMONIA_SUBSAMPLE / len(y), random_state=0)
        X, y = X[keep], y[keep]
    if quick:
        X, y = per_class_subset(X, y)
    cv = StratifiedKFold(3 if quick else FOLDS, shuffle=True, random_state=0)
    return X, y, list(cv.split(X, y))


def score(F_fit, y_fit, F_eval, y_eval) -> float:
    """Balanced accuracy on the held-out images of the SVC fitted on the labelled ones."""
    return float(eval_features(F_fit, y_fit, F_eval, y_eval, int(y_fit.max()) + 1)["bacc"])


def backbone_scores(X, y, folds, labelled, cache, reuse: dict) -> tuple[list[float], list[str]]:
    """Per fold: the SVC on the layer chosen by inner CV on the labelled images.

    The backbone features of every layer depend on neither the fold nor the labels:
    they are computed once, for every image, and kept in ``reuse``.
    """
    if "backbone" not in reuse:
        reuse["backbone"] = backbone_features(X, cache=cache)
    per_layer = reuse["backbone"]
    scores, chosen = [], []
    for (_, test), lab in zip(folds, labelled, strict=True):
        inner = {name: cv_bacc(G[lab], y[lab], folds=FOLDS) for name, G in per_layer.items()}
        best = max(inner, key=inner.get)
        chosen.append(best)
        scores.append(score(per_layer[best][lab], y[lab], per_layer[best][test], y[test]))
    return scores, chosen


def cae_scores(X, y, folds, labelled, params, seed, cache, reuse: dict) -> list[float]:
    """Per fold: fit the featurizer on the training fold, the SVC on its labelled part.

    An unsupervised featurizer does not depend on which images are labelled: its
    features are kept in ``reuse`` (keyed by parameters, seed and fold) for the next
    label fraction.
    """
    supervised = params.get("supervision", 0) > 0
    scores = []
    for k, ((train, test), lab) in enumerate(zip(folds, labelled, strict=True)):
        key = (json.dumps(params, sort_keys=True), seed, k)
        if supervised or key not in reuse:
            featurizer = CAETransferFeaturizer(random_state=seed, cache=cache, **params)
            y_fit = np.full(len(y), -1)
            y_fit[lab] = y[lab]
            F_train = featurizer.fit_transform(X[train], y_fit[train] if supervised else None)
            reuse[key] = (F_train, featurizer.transform(X[test]))
        F_train, F_test = reuse[key]
        position = {index: i for i, index in enumerate(train)}
        F_lab = F_train[[position[i] for i in lab]]
        scores.append(score(F_lab, y[lab], F_test, y[test]))
        if supervised:
            del reuse[key]
    return scores


def run(args) -> list[dict]:
    rows = []
    done = set()
    if args.resume and args.json.exists():
        done = {_key(r) for r in read_json(args.json)}
    with tempfile.TemporaryDirectory() as cache:
        for name in args.datasets:
            roots = {"medmnist_root": args.medmnist_root, "covid_root": args.covid_root}
            X, y, folds = evaluation_splits(name, args.on_test, args.quick, roots)
            reuse: dict = {}  # this data set's features, for the next fractions and seeds
            for fraction in args.fractions:
                for seed in range(args.seeds):
                    labelled = [
                        train[stratified_subset(y[train], fraction, random_state=seed)]
                        for train, _ in folds
                    ]
                    for config in args.configs:
                        if (args.label_prefix + config, name, fraction, seed) in done:
                            continue
                        params = CONFIGS.get(config, {})
                        if args.quick and config != "backbone":
                            params = {**params, "max_epochs": 1, "image_size": 32}
                        start = time.perf_counter()
                        extra = {}
                        if config == "backbone":
                            fold_scores, extra["layers"] = backbone_scores(
                                X, y, folds, labelled, cache, reuse
                            )
                        else:
                            fold_scores = cae_scores(
                                X, y, folds, labelled, params, seed, cache, reuse
                            )
                        row = {
                            "config": args.label_prefix + config,
                            "params": params,
                            "dataset": name,
                            "fraction": fraction,
                            "seed": seed,
                            "n_images": len(y),
                            "folds": fold_scores,
                            "bacc": float(np.mean(fold_scores)),
                            "seconds": round(time.perf_counter() - start, 1),
                            **extra,
                        }
                        print(
                            f"{name:15s} {fraction:>4} seed {seed} {row['config']:24s} "
                            f"{row['bacc']:.3f} ({row['seconds']:.0f} s)",
                            flush=True,
                        )
                        rows.append(row)
                        write_json(merge_rows(read_json(args.json, []), [row], KEY), args.json)
    return rows


def _key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY)


def report(path: Path, out: Path, on_test: bool = False) -> str:
    """Mean balanced accuracy per configuration, data set and fraction (± seed std)."""
    rows = read_json(path)
    fractions = sorted({r["fraction"] for r in rows}, reverse=True)
    configs = list(dict.fromkeys(r["config"] for r in rows))
    lines = [
        "# Training signals for the CAE: "
        + (
            "test splits (featurizers fitted on the whole training split)"
            if on_test
            else "5-fold CV on the training splits"
        ),
        "",
        f"Produced by `python benchmarks/signals.py{' --on-test' if on_test else ''}` (see "
        "its docstring for the protocol); balanced accuracy, mean over folds, then mean ± "
        "std over seeds (label draws and CAE seeds). Δ: the configuration minus `backbone` "
        "(layer chosen by inner CV), mean over the data sets both have, in points.",
        "",
    ]
    for fraction in fractions:
        table = []
        base = _means(rows, "backbone", fraction)
        for config in configs:
            means = _means(rows, config, fraction)
            if not means:
                continue
            cells = []
            for name in DATASETS:
                if name in means:
                    values = means[name]
                    cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
                else:
                    cells.append("-")
            shared = [n for n in DATASETS if n in means and n in base]
            mean = np.mean([np.mean(means[n]) for n in shared]) if shared else np.nan
            delta = 100 * (mean - np.mean([np.mean(base[n]) for n in shared])) if shared else np.nan
            seconds = sum(
                r["seconds"] for r in rows if r["config"] == config and r["fraction"] == fraction
            )
            table.append([config, *cells, f"{mean:.3f}", f"{delta:+.1f}", f"{seconds:.0f}"])
        header = ["configuration", *DATASETS, "mean", "Δ", "seconds"]
        lines += [
            f"## {fraction:.0%} of the training fold's labels",
            "",
            markdown_table(header, table),
            "",
        ]
    lines.append(
        "Parameters of each configuration (on top of the defaults of the release that ran it):"
    )
    lines.append("")
    for config in configs:
        params = next(r["params"] for r in rows if r["config"] == config)
        lines.append(f"- `{config}`: {params or 'defaults'}")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def _means(rows, config, fraction) -> dict[str, list[float]]:
    means: dict[str, list[float]] = {}
    for r in rows:
        if r["config"] == config and r["fraction"] == fraction:
            means.setdefault(r["dataset"], []).append(r["bacc"])
    return means


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="backbone,defaults", type=lambda s: s.split(","))
    parser.add_argument("--datasets", default=",".join(DATASETS), type=lambda s: s.split(","))
    parser.add_argument(
        "--fractions", default="1.0,0.1", type=lambda s: [float(f) for f in s.split(",")]
    )
    parser.add_argument("--seeds", type=int, default=2)
    add_data_arguments(parser)
    parser.add_argument("--label-prefix", default="", help="prefix of the configs' names")
    parser.add_argument("--json", type=Path, help="default: results/signals[_test].json")
    parser.add_argument("--out", type=Path, help="default: results/signals[_test].md")
    parser.add_argument("--report", action="store_true", help="only rewrite the table")
    parser.add_argument("--resume", action="store_true", help="skip rows the json already holds")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 12 images per class, 3 folds, 1 epoch"
    )
    parser.add_argument(
        "--on-test",
        action="store_true",
        help="fit on the whole training split, score on the test split (the judge: run "
        "only configurations chosen by CV)",
    )
    args = parser.parse_args(argv)
    stem = "signals_test" if args.on_test else "signals"
    args.json = args.json or RESULTS / f"{stem}.json"
    args.out = args.out or RESULTS / f"{stem}.md"
    for config in args.configs:
        if config != "backbone" and config not in CONFIGS:
            parser.error(f"unknown config {config!r}; choose from {['backbone', *CONFIGS]}")
    if not args.report:
        run(args)
    print(report(args.json, args.out, args.on_test))


if __name__ == "__main__":
    main()
