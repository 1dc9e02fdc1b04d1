"""Which final step of a ``y == -1`` pipeline wins: drop the unlabelled rows, or use them?

On the training splits of BreastMNIST, RetinaMNIST and COVID-19 X-ray, with 10% of
the labels (``hide_labels``, the demo's draw), the candidates each follow a
``StandardScaler`` fitted on every training row:

* ``LabelledOnly(SVC)``: the SVC on the labelled rows only;
* ``SelfTrainingClassifier(SVC(probability=True))``, thresholds 0.75 and 0.9;
* ``LabelSpreading`` on a 7-nearest-neighbour graph. (With an RBF kernel of width
  ``1 / n_features`` it predicted one class on BreastMNIST and gave NaN probabilities
  on RetinaMNIST: the kernel underflows on standardised features of this width.)

Features: ``BackboneFeaturizer()`` (no labels; computed once per data set) and
``CAETransferFeaturizer(supervision=1, corrupted_views=1)``, fitted once per data set
on every training image with seed 0's 10% of labels (the CAE has then seen the labels
of the labelled rows of each test fold: the same for every candidate, so the
comparison stands, the absolute numbers are optimistic). 5-fold CV of the training
split, shuffled per seed; in each fold the classifier is fitted on the training rows
(labels hidden as in the featurizer's draw) and scored on every held-out row.

Run: ``OMP_NUM_THREADS=1 python benchmarks/semi_supervised_classifiers.py``; writes
``results/semi_supervised_classifiers.{json,md}``, replacing the rows of the data sets
it ran.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common

from bench_common import (
    RESULTS,
    add_data_arguments,
    load_split,
    merge_rows,
    read_json,
    scores,
    write_json,
)
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
from sklearn.svm import SVC

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.evaluation import markdown_table
from sklearn_cae.semi_supervised import LabelledOnly, hide_labels

DATASETS = ("breastmnist", "retinamnist", "covid19_xray")
FRACTION = 0.1


def candidates() -> dict:
    """The final steps compared, each after a StandardScaler fitted on every row."""

    def svc(**params):
        return SVC(class_weight="balanced", **params)

    return {
        "LabelledOnly(SVC)": LabelledOnly(svc()),
        "SelfTraining(SVC, 0.75)": SelfTrainingClassifier(svc(probability=True, random_state=0)),
        "SelfTraining(SVC, 0.9)": SelfTrainingClassifier(
            svc(probability=True, random_state=0), threshold=0.9
        ),
        "LabelSpreading(knn 7)": LabelSpreading(kernel="knn", n_neighbors=7),
    }


def featurize(name: str, X, y, cache) -> dict[str, np.ndarray]:
    """Features of the training split: the backbone's, and the semi-supervised CAE's."""
    out = {}
    start = time.perf_counter()
    out["BackboneFeaturizer"] = BackboneFeaturizer(cache=cache).fit_transform(X)
    print(f"{name}: backbone {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    cae = CAETransferFeaturizer(supervision=1.0, corrupted_views=1, random_state=0, cache=cache)
    out["CAE(supervision=1, corrupted_views=1)"] = cae.fit_transform(X, hide_labels(y, FRACTION, 0))
    print(f"{name}: CAE {time.perf_counter() - start:.0f} s", flush=True)
    return out


def evaluate(F, y, seed: int, n_classes: int) -> dict[str, list[dict]]:
    """Per candidate, the scores of each fold of one seed."""
    y_semi = hide_labels(y, FRACTION, seed)
    results: dict[str, list[dict]] = {}
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(F, y):
        for name, step in candidates().items():
            model = make_pipeline(StandardScaler(), step).fit(F[train], y_semi[train])
            score = (
                model.decision_function(F[test])
                if hasattr(model, "decision_function")
                else model.predict_proba(F[test])
            )
            predicted = model.predict(F[test])
            if np.isfinite(score).all():
                fold = scores(y[test], predicted, score, n_classes)
            else:  # label spreading's normalisation can divide by zero: no ranking
                fold = {"bacc": balanced_accuracy_score(y[test], predicted), "auc": np.nan}
            results.setdefault(name, []).append(fold)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", default=None, help="backbone map cache folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "semi_supervised_classifiers")
    args = parser.parse_args()
    rows = []
    for name in args.datasets:
        X, y = load_split(name, medmnist_root=args.medmnist_root, covid_root=args.covid_root)
        for features, F in featurize(name, X, y, args.cache).items():
            # The CAE saw seed 0's labels: only that seed is a fair draw for it.
            seeds = range(args.seeds) if features == "BackboneFeaturizer" else [0]
            per_seed = [evaluate(F, y, seed, int(y.max()) + 1) for seed in seeds]
            for method in per_seed[0]:
                folds = [fold for runs in per_seed for fold in runs[method]]
                rows.append(
                    {
                        "dataset": name,
                        "features": features,
                        "classifier": method,
                        "bacc": float(np.mean([f["bacc"] for f in folds])),
                        "auc": float(np.mean([f["auc"] for f in folds])),  # NaN: a fold had none
                        "n_runs": len(folds),
                    }
                )
                print(rows[-1], flush=True)
    out = args.out
    saved = out.with_suffix(".json")
    rows = merge_rows(read_json(saved, []), rows, keys=("dataset", "features", "classifier"))
    rows = [r for r in rows if r["classifier"] in candidates() or r["dataset"] not in args.datasets]
    write_json(rows, saved)
    table = markdown_table(
        ["data set", "features", "classifier", "balanced acc.", "ROC AUC", "runs"],
        [
            (
                r["dataset"],
                r["features"],
                r["classifier"],
                f"{r['bacc']:.3f}",
                f"{r['auc']:.3f}",
                r["n_runs"],
            )
            for r in rows
        ],
    )
    out.with_suffix(".md").write_text(
        f"# Final step of a y == -1 pipeline, 10% labels\n\n{table}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
