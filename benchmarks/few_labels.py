"""Few labels, many images: the featurizers' defaults against the best frozen features.

Four parts (``--parts``), on the four shared data sets (BreastMNIST, PneumoniaMNIST,
RetinaMNIST, COVID-19 X-ray):

``cv`` -- the screening, on the **training splits only**: 5 stratified folds (seed 0);
in each, the labelled images ``L`` are all of the training fold (fraction 1) or a
stratified fraction of it, the rest of the fold is unlabelled. Each CAE configuration is
fitted on every image of the training fold, with ``y == -1`` for the unlabelled ones,
and ``SVC(class_weight="balanced")`` on its features of ``L`` (no scaler: the
featurizers balance their blocks themselves). The baseline is ``BackboneFeaturizer``
with its layer or layer list chosen by inner CV on ``L`` (:data:`CANDIDATE_LAYERS`),
fitted on the same images, with the same SVC; beside it, ``BackboneFeaturizer()`` at
its default layers. Balanced accuracy and ROC AUC on the held-out fold.

``judge`` -- for the configuration chosen by CV (``--judge-config``): the same, but
fitted on the whole training split and scored on its test split (COVID-19: its ``val``
folder), 3 seeds (label draws and CAE seeds), 100%, 25%, 10% and 5% of the labels.
The fine-tuning reference is read from ``benchmarks/results/finetune.json``.

``cost`` -- ``fit_transform`` of both featurizers at their defaults, side by side on
each training split (``--repeats`` alternated repeats).

``figure`` -- the label-efficiency figure (``--figure``, by default
``docs/_static/label_efficiency.png``) from the judge's rows under ``--out`` and the
fine-tuning's: balanced accuracy against the fraction of labelled training images,
one panel per data set, mean and standard deviation over seeds.

The baseline's backbone features are computed once per data set (every candidate
layer, raw pooled) and balanced per fold with :class:`sklearn_cae.pooling.BlockScaler`,
which is what ``BackboneFeaturizer(layer=...)`` fitted on the same images returns; the
CAE featurizers share a map cache, so only their corrupted views and the CAE training
run per fold. Results: ``few_labels_<part>.json`` and ``.md`` under ``--out``; with
``--merge`` a run's rows replace those of the same data set, fraction, seed (or fold)
and method in them and keep the rest, so that data sets can run one at a time. The
script exits with status 1 when the saved judge or cost rows miss one of issue 18's
goals (:func:`missed_goals`), after writing them.

Usage::

    # CPU screening (as run for docs/method.md, round 4)
    python benchmarks/few_labels.py --parts cv --subsample 1000
    # the GPU run: CV on the full training splits, then the test-split judge
    python benchmarks/few_labels.py --parts cv,judge --device cuda \\
        --medmnist-root DIR --covid-root DIR
    # one more data set beside the saved judge, then the figure
    python benchmarks/few_labels.py --parts judge --datasets pneumoniamnist --merge
    python benchmarks/few_labels.py --parts figure
    # a smoke run on a few images
    python benchmarks/few_labels.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.svm import SVC

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_report import plot_label_efficiency
from bench_common import load_split, merge_rows, scores, verdict_table

from sklearn_cae.semi_supervised import hide_labels

RESULTS = Path(__file__).resolve().parent / "results"
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "_static" / "label_efficiency.png"
# Smallest first, so that a run cut short by a time limit has the most data sets.
DATASETS = ("covid19_xray", "breastmnist", "retinamnist", "pneumoniamnist")
#: The baseline's layer choices for inner CV: single stages and hierarchical lists.
CANDIDATE_LAYERS = {
    "blocks.3": ["blocks.3"],
    "blocks.4": ["blocks.4"],
    "blocks.5": ["blocks.5"],
    "blocks.6": ["blocks.6"],
    "conv_head": ["conv_head"],
    "blocks.4+6": ["blocks.4", "blocks.6"],
    "blocks.4+5+6": ["blocks.4", "blocks.5", "blocks.6"],
    "blocks.3+4+6": ["blocks.3", "blocks.4", "blocks.6"],
}
#: CAE configurations: parameters of CAETransferFeaturizer beside its defaults.
CONFIGS = {
    "defaults": {},
    "supervised": {"supervision": 1.0},  # also with every image labelled
    "unsupervised": {"supervision": 0.0},
    "no views": {"corrupted_views": 0},
    "bottleneck 64": {"bottleneck": 64},
    "label smoothing": {"cae_params": {"label_smoothing": 0.2}},
    # A head that cannot memorise the few labelled codes: L2 on its weights only.
    "head weight decay": {
        "cae_params": {"optimizer__param_groups": [("head.*", {"weight_decay": 1e-2})]}
    },
}
FRACTIONS_CV = (0.1, 1.0)
FRACTIONS_JUDGE = (1.0, 0.25, 0.1, 0.05)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="cv", help="comma-separated: cv, judge, cost, figure")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="CAE configurations")
    parser.add_argument(
        "--judge-config",
        default="cv",
        choices=["cv", *CONFIGS],
        help="cv: the configuration with the best mean CV balanced accuracy at 10%% labels",
    )
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--fractions", default=None, help="label fractions (part's default)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the judge")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="judge: seeds FIRST_SEED, FIRST_SEED + 1, ..."
    )
    parser.add_argument(
        "--subsample", type=int, default=None, help="cv: at most N training images a data set"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-jobs", type=int, default=1, help="processes of the inner CV")
    parser.add_argument("--repeats", type=int, default=3, help="cost: paired repeats")
    parser.add_argument("--medmnist-root", default=os.environ.get("MEDMNIST_ROOT"))
    parser.add_argument("--covid-root", default=os.environ.get("COVID_ROOT"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge", action="store_true", help="keep the saved rows of other data sets"
    )
    parser.add_argument("--figure", type=Path, default=FIGURE, help="figure: the image")
    parser.add_argument("--quick", action="store_true", help="a few images, short training")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ data
def load(name: str, split: str, args, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One split of a data set, a stratified subsample of at most ``limit`` images (48
    with ``--quick``)."""
    X, y = load_split(name, split, medmnist_root=args.medmnist_root, covid_root=args.covid_root)
    limit = 48 if args.quick else limit
    if limit and len(y) > limit:
        keep, _ = train_test_split(np.arange(len(y)), train_size=limit, stratify=y, random_state=0)
        X, y = X[np.sort(keep)], y[np.sort(keep)]
    return X, y


def semi_labels(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``y`` with ``-1`` outside a stratified ``fraction`` of it (``hide_labels``)."""
    return hide_labels(y, fraction, random_state=seed)


# -------------------------------------------------------------------------- baseline
def raw_backbone_blocks(X, args) -> dict[str, np.ndarray]:
    """Raw pooled maps of every candidate layer, ``{layer: (n, channels)}``, one pass."""
    from sklearn_cae import BackboneFeaturizer

    layers = sorted({name for names in CANDIDATE_LAYERS.values() for name in names})
    featurizer = BackboneFeaturizer(layer=layers, balance_blocks=False, device=args.device)
    F = featurizer.fit_transform(X)
    edges = np.cumsum([0, *featurizer.n_channels_])
    return {name: F[:, a:b] for name, a, b in zip(layers, edges[:-1], edges[1:], strict=True)}


def balanced(blocks: dict, layers: list[str], fit_rows: np.ndarray):
    """``BackboneFeaturizer(layer=layers)`` features of every row, fitted on ``fit_rows``."""
    from sklearn_cae.pooling import BlockScaler

    F = np.hstack([blocks[name] for name in layers])
    scaler = BlockScaler([blocks[name].shape[1] for name in layers]).fit(F[fit_rows])
    return scaler.transform(F)


def inner_cv_layers(blocks: dict, fit_rows, labelled, y_labelled, n_jobs: int = 1) -> str:
    """The candidate whose features score best by inner CV on the labelled rows."""
    folds = max(2, min(5, np.bincount(y_labelled).min()))
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)

    def score(layers):
        F = balanced(blocks, layers, fit_rows)[labelled]
        return cross_val_score(
            classifier(), F, y_labelled, cv=cv, scoring="balanced_accuracy", n_jobs=n_jobs
        )

    return max(CANDIDATE_LAYERS, key=lambda key: score(CANDIDATE_LAYERS[key]).mean())


def classifier() -> SVC:
    """The classifier on every featurizer's output (which is already standardised)."""
    return SVC(class_weight="balanced")


def evaluate(F_train, y_train, F_test, y_test) -> dict:
    """:func:`scores` of :func:`classifier` fitted on the labelled training features."""
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    model = classifier().fit(F_train, y_train)
    return scores(y_test, model.predict(F_test), model.decision_function(F_test), n_classes)


# ------------------------------------------------------------------------------ runs
def run_cae(params: dict, X_fit, y_fit, X_test, args, cache, seed: int):
    """Features of a CAE configuration fitted on ``X_fit`` (``y_fit`` with -1 for the rest)."""
    from sklearn_cae import CAETransferFeaturizer

    quick = {"max_epochs": 2} if args.quick else {}
    featurizer = CAETransferFeaturizer(
        device=args.device, cache=cache, random_state=seed, **quick, **params
    )
    return featurizer.fit_transform(X_fit, y_fit), featurizer.transform(X_test)


def one_split(X, y, train, test, fraction, seed, configs, args, cache, blocks, choices):
    """Rows of every method on one train/test split at one label fraction.

    ``blocks``: :func:`raw_backbone_blocks` of ``X``; ``choices``: the baseline's
    layer choices so far, by labelled images (filled in).
    """
    y_semi = semi_labels(y[train], fraction, seed)
    labelled = np.flatnonzero(y_semi != -1)
    rows = baseline_rows(blocks, y, train, test, labelled, choices, args.n_jobs)
    done = {}  # configurations that fit the same featurizer here share its scores
    for name in configs:
        start = time.perf_counter()
        key = json.dumps(resolved(CONFIGS[name], fraction), sort_keys=True)
        if key not in done:
            F_train, F_test = run_cae(CONFIGS[name], X[train], y_semi, X[test], args, cache, seed)
            result = evaluate(F_train[labelled], y[train][labelled], F_test, y[test])
            done[key] = {**result, "seconds": time.perf_counter() - start}
        rows.append({"method": name, **done[key]})
    return rows


#: The layers of ``BackboneFeaturizer()`` (EfficientNet-Lite0's ``hierarchical_layers``).
DEFAULT_LAYERS = "blocks.4+6"


def baseline_rows(blocks, y, train, test, labelled, choices, n_jobs: int = 1) -> list[dict]:
    """The baselines' rows: ``BackboneFeaturizer`` with its layers chosen by inner CV on
    the labelled training rows (``choices`` caches the choice by labelled images), and
    ``BackboneFeaturizer()`` at its default layers."""
    rows = []
    start = time.perf_counter()
    # All labels: every seed labels the same images, so the choice is made once.
    key = (train.tobytes(), labelled.tobytes())
    if key not in choices:
        choices[key] = inner_cv_layers(blocks, train, train[labelled], y[train][labelled], n_jobs)
    for method, choice in (
        ("backbone (inner CV)", choices[key]),
        ("backbone (default layers)", DEFAULT_LAYERS),
    ):
        F = balanced(blocks, CANDIDATE_LAYERS[choice], train)
        result = evaluate(F[train][labelled], y[train][labelled], F[test], y[test])
        rows.append({"method": method, "layers": choice, **result})
        rows[-1]["seconds"] = time.perf_counter() - start
        start = time.perf_counter()
    return rows


def resolved(params: dict, fraction: float) -> dict:
    """``params`` with ``supervision="auto"`` resolved as ``fit`` resolves it: labels
    are used when some images are unlabelled (``fraction < 1``)."""
    supervision = params.get("supervision", "auto")
    if supervision == "auto":
        from sklearn_cae.featurizer import AUTO_SUPERVISION

        supervision = AUTO_SUPERVISION if fraction < 1 else 0.0
    return {**params, "supervision": float(supervision)}


def run_cv(name: str, args, configs, cache) -> list[dict]:
    X, y = load(name, "train", args, args.subsample)
    blocks = raw_backbone_blocks(X, args)
    rows = []
    folds = StratifiedKFold(2 if args.quick else 5, shuffle=True, random_state=0)
    for fold, (train, test) in enumerate(folds.split(X, y)):
        for fraction in fractions(args, FRACTIONS_CV):
            split_rows = one_split(X, y, train, test, fraction, 0, configs, args, cache, blocks, {})
            for row in split_rows:
                rows.append({"dataset": name, "fraction": fraction, "fold": fold, **row})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def chosen_by_cv(rows: list[dict], fraction: float = 0.1) -> str:
    """The CAE configuration with the best mean balanced accuracy at ``fraction`` (ties:
    ROC AUC) over the data sets of a CV run."""
    part = [r for r in rows if r["fraction"] == fraction and r["method"] in CONFIGS]
    if not part:
        raise SystemExit(f"--judge-config cv needs the cv part's rows at {fraction:.0%} labels")
    names = sorted({r["dataset"] for r in part})

    def key(method):
        means = [_means(part, method, d) for d in names]
        return tuple(np.mean(means, axis=0))

    return max(dict.fromkeys(r["method"] for r in part), key=key)


def run_judge(name: str, args, cache) -> list[dict]:
    (X_train, y_train), (X_test, y_test) = load(name, "train", args), load(name, "test", args)
    X, y = np.concatenate([X_train, X_test]), np.concatenate([y_train, y_test])
    train, test = np.arange(len(y_train)), np.arange(len(y_train), len(y))
    blocks, choices = raw_backbone_blocks(X, args), {}
    rows = []
    for seed in range(args.first_seed, args.first_seed + (1 if args.quick else args.seeds)):
        for fraction in fractions(args, FRACTIONS_JUDGE):
            split_rows = one_split(
                X, y, train, test, fraction, seed, [args.judge_config], args, cache, blocks, choices
            )
            for row in split_rows:
                rows.append({"dataset": name, "fraction": fraction, "seed": seed, **row})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def run_cost(name: str, args) -> list[dict]:
    """Seconds of ``fit_transform`` at the defaults, both featurizers, paired and
    alternated so that load from other processes hits both alike: wall time, and the
    process's CPU time, which other processes on shared cores do not inflate."""
    from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer

    X, y = load(name, "train", args)
    y_semi = semi_labels(y, 0.1, 0)
    BackboneFeaturizer(device=args.device).fit_transform(X[:8])  # weights, lazy imports
    rows = []
    for repeat in range(1 if args.quick else args.repeats):
        row = {"dataset": name, "repeat": repeat, "n_images": len(y)}
        for method, fit_transform in (
            ("backbone", lambda: BackboneFeaturizer(device=args.device).fit_transform(X)),
            ("cae", lambda: CAETransferFeaturizer(device=args.device).fit_transform(X, y_semi)),
        ):
            wall, cpu = time.perf_counter(), time.process_time()
            fit_transform()
            row[method] = time.perf_counter() - wall
            row[f"{method}_cpu"] = time.process_time() - cpu
        row["ratio"] = row["cae"] / row["backbone"]
        row["cpu_ratio"] = row["cae_cpu"] / row["backbone_cpu"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def fractions(args, default) -> tuple[float, ...]:
    if args.fractions is None:
        return default
    return tuple(float(f) for f in args.fractions.split(","))


# ---------------------------------------------------------------------------- report
def finetune_reference(path: Path = RESULTS / "finetune.json") -> dict:
    """Mean test balanced accuracy and ROC AUC of the fine-tuning, by (data set, fraction)."""
    if not path.exists():
        return {}
    runs: dict = {}
    for row in json.loads(path.read_text()).get("rows", []):
        key = (row["dataset"], round(float(row["fraction"]), 2))
        runs.setdefault(key, []).append((row["bacc"], row["auc"]))
    return {key: tuple(np.mean(values, axis=0)) for key, values in runs.items()}


def markdown(rows: list[dict], title: str, finetune: dict) -> str:
    """One table per label fraction: bacc and ROC AUC per data set and method."""
    lines = [f"# {title}", ""]
    if rows and "ratio" in rows[0]:  # the cost part
        lines += [
            "| data set | images | backbone s (CPU s) | CAE s (CPU s) | ratio (CPU) |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['dataset']} | {r['n_images']} | {r['backbone']:.1f} "
                f"({r['backbone_cpu']:.1f}) | {r['cae']:.1f} ({r['cae_cpu']:.1f}) "
                f"| {r['ratio']:.2f} ({r['cpu_ratio']:.2f}) |"
            )
        medians = [np.median([r[k] for r in rows]) for k in ("ratio", "cpu_ratio")]
        summary = f"Median ratio: {medians[0]:.2f} wall, {medians[1]:.2f} CPU time."
        return "\n".join([*lines, "", summary]) + "\n"
    for fraction in sorted({r["fraction"] for r in rows}, reverse=True):
        part = [r for r in rows if r["fraction"] == fraction]
        names = [d for d in DATASETS if any(r["dataset"] == d for r in part)]
        methods = list(dict.fromkeys(r["method"] for r in part))
        methods.sort(key=lambda m: not m.startswith("backbone"))  # the baselines first
        lines += [f"## {fraction:.0%} of the labels", ""]
        lines += ["| method | " + " | ".join(names) + " | mean Δ bacc | mean Δ AUC |"]
        lines += ["|---" * (len(names) + 3) + "|"]
        base = {d: _means(part, "backbone (inner CV)", d) for d in names}
        for method in methods:
            cells, deltas = [], []
            for d in names:
                if not any(r["method"] == method and r["dataset"] == d for r in part):
                    cells.append("-")  # not run on this data set
                    continue
                bacc, auc = _means(part, method, d)
                cells.append(f"{bacc:.3f} / {auc:.3f}")
                deltas.append((bacc - base[d][0], auc - base[d][1]))
            db, da = np.mean(deltas, axis=0) * 100
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {db:+.1f} | {da:+.1f} |")
        judge = any("seed" in r for r in rows)  # fine-tuning scores are test-split scores
        tuned = [finetune.get((d, round(fraction, 2))) for d in names] if judge else []
        if any(t is not None for t in tuned):
            cells = ["-" if t is None else f"{t[0]:.3f} / {t[1]:.3f}" for t in tuned]
            lines.append("| fine-tuning (finetune.json) | " + " | ".join(cells) + " | | |")
        lines.append("")
    if any("seed" in r for r in rows):  # the judge
        lines += goals(rows, finetune)
    lines.append(
        "Cells: balanced accuracy / ROC AUC, mean over folds or seeds; mean Δ: against the "
        "backbone, over the data sets the method ran on."
    )
    return "\n".join(lines) + "\n"


def goal_rows(rows: list[dict], finetune: dict, method: str = "defaults") -> list[tuple]:
    """The judge's rows against issue 18's goals: ``(goal, measured, met)`` per goal.

    Differences are in points of balanced accuracy (ROC AUC), mean over seeds, of
    ``method`` minus the inner-CV backbone on each data set. Goals whose label fraction
    the rows lack are left out.
    """

    def deltas(fraction):
        part = [r for r in rows if r["fraction"] == fraction]
        names = [d for d in DATASETS if any(r["dataset"] == d for r in part)]
        return {
            d: 100 * (np.array(_means(part, method, d)) - _means(part, "backbone (inner CV)", d))
            for d in names
            if any(r["method"] == method and r["dataset"] == d for r in part)
        }

    def cells(by_set, index):
        return ", ".join(f"{d} {v[index]:+.1f}" for d, v in by_set.items())

    out = []
    full, few = deltas(1.0), deltas(0.1)
    if full:
        bacc = [v[0] for v in full.values()]
        out.append(
            (
                "all labels: level (>= -0.3) on every set, >= +1 on average, AUC not lower",
                f"{cells(full, 0)}; mean {np.mean(bacc):+.1f}; AUC {cells(full, 1)}",
                min(bacc) >= -0.3 and np.mean(bacc) >= 1 and all(v[1] >= 0 for v in full.values()),
            )
        )
    if few:
        out.append(
            (
                "10% labels: >= +3 on every set, AUC not lower",
                f"{cells(few, 0)}; AUC {cells(few, 1)}",
                all(v[0] >= 3 and v[1] >= 0 for v in few.values()),
            )
        )
        part = [r for r in rows if r["fraction"] == 0.1]
        ahead = {
            d: 100 * (_means(part, method, d)[0] - finetune[(d, 0.1)][0])
            for d in few
            if (d, 0.1) in finetune
        }
        if ahead:
            won = sum(v > 0 for v in ahead.values())
            measured = ", ".join(f"{d} {v:+.1f}" for d, v in ahead.items())
            out.append(
                (
                    "10% labels: ahead of the fine-tuning on >= 3 of 4 sets",
                    f"{measured} ({won} of {len(ahead)})",
                    won >= 3,
                )
            )
    return out


def goals(rows: list[dict], finetune: dict, method: str = "defaults") -> list[str]:
    """Markdown lines: :func:`goal_rows` as a table."""
    table = verdict_table(goal_rows(rows, finetune, method))
    return ["## Against the goals", "", *table.splitlines(), ""]


#: The cost goal: ``fit_transform`` of the CAE defaults at most this many times the
#: backbone's (median wall-time ratio).
MAX_COST_RATIO = 4.0


def missed_goals(part: str, rows: list[dict]) -> list[str]:
    """The goals a part's saved rows miss (the judge's and the cost's; none for cv)."""
    if part == "judge":
        return [goal for goal, _, met in goal_rows(rows, finetune_reference()) if not met]
    if part == "cost" and rows:
        ratio = float(np.median([r["ratio"] for r in rows]))
        if ratio > MAX_COST_RATIO:
            return [f"cost: median wall-time ratio {ratio:.2f} > {MAX_COST_RATIO}"]
    return []


def _means(rows, method, dataset) -> tuple[float, float]:
    chosen = [r for r in rows if r["method"] == method and r["dataset"] == dataset]
    return float(np.mean([r["bacc"] for r in chosen])), float(np.mean([r["auc"] for r in chosen]))


def main(argv=None) -> None:
    args = parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="few_labels_cache_") as cache:
        for part in args.parts.split(","):
            if part == "figure":
                judge = json.loads((args.out / f"few_labels_judge{suffix}.json").read_text())
                efficiency_figure(judge["rows"], args.figure)
                print(f"figure: {args.figure}", flush=True)
                continue
            if part == "judge" and args.judge_config == "cv":
                cv_rows = json.loads((args.out / f"few_labels_cv{suffix}.json").read_text())
                args.judge_config = chosen_by_cv(cv_rows["rows"])
                print(f"judge: {args.judge_config!r}, chosen by CV", flush=True)
            start = time.perf_counter()
            rows, saved = [], saved_rows(args, part, suffix)
            for name in args.datasets.split(","):
                if part == "cv":
                    rows += run_cv(name, args, configs, cache)
                elif part == "judge":
                    rows += run_judge(name, args, cache)
                elif part == "cost":
                    rows += run_cost(name, args)
                else:
                    raise SystemExit(f"unknown part {part!r}: choose cv, judge, cost or figure")
                # After each data set, so that a run cut short keeps what it did.
                write(args, part, suffix, rows, time.perf_counter() - start, saved)
            print(f"{part}: {time.perf_counter() - start:.0f} s", flush=True)
            written = json.loads((args.out / f"few_labels_{part}{suffix}.json").read_text())
            missed += missed_goals(part, written["rows"])
    for goal in missed:
        print(f"goal missed: {goal}", flush=True)
    if missed and not args.quick:  # a smoke run measures nothing
        raise SystemExit(1)


def efficiency_figure(rows: list[dict], path: Path, finetune=RESULTS / "finetune.json") -> None:
    """The judge's rows and the fine-tuning's as label-efficiency curves
    (:func:`accuracy_report.plot_label_efficiency`), on the judge's data sets."""
    names = {
        "backbone (inner CV)": "BackboneFeaturizer, layers by inner CV",
        "backbone (default layers)": "BackboneFeaturizer()",
    }
    curves = [
        {**r, "method": names.get(r["method"], f"CAETransferFeaturizer ({r['method']})")}
        for r in rows
    ]
    datasets = {r["dataset"] for r in rows}
    if finetune.exists():
        tuned = json.loads(finetune.read_text())["rows"]
        curves += [
            {**r, "method": "fine-tuning (finetune.py)"} for r in tuned if r["dataset"] in datasets
        ]
    order = {name: i for i, name in enumerate(DATASETS)}
    curves.sort(key=lambda r: order.get(r["dataset"], len(order)))
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_label_efficiency([{**r, "label_efficiency": True} for r in curves], path)


#: The columns that name a row of each part (``--merge`` replaces rows equal on them).
ROW_KEYS = {
    "cv": ("dataset", "fraction", "fold", "method"),
    "judge": ("dataset", "fraction", "seed", "method"),
    "cost": ("dataset", "repeat"),
}


def saved_rows(args, part: str, suffix: str) -> dict | None:
    """What ``few_labels_<part><suffix>.json`` holds, with ``--merge`` (else None)."""
    path = args.out / f"few_labels_{part}{suffix}.json"
    return json.loads(path.read_text()) if args.merge and path.exists() else None


def write(
    args, part: str, suffix: str, rows: list[dict], seconds: float, saved: dict | None = None
) -> None:
    """``few_labels_<part><suffix>.{json,md}`` under ``args.out``: ``rows``, merged into
    the ``saved`` ones when given (:func:`saved_rows`)."""
    stem = args.out / f"few_labels_{part}{suffix}"
    settings = {k: str(v) for k, v in vars(args).items()}
    if saved is not None:
        rows = merge_rows(saved["rows"], rows, ROW_KEYS[part])
        seconds += saved.get("seconds", 0.0)
    stem.with_suffix(".json").write_text(
        json.dumps({"settings": settings, "seconds": seconds, "rows": rows}, indent=1)
    )
    title = f"few_labels.py --parts {part} ({seconds:.0f} s, device {args.device})"
    stem.with_suffix(".md").write_text(markdown(rows, title, finetune_reference()))


if __name__ == "__main__":
    main()
