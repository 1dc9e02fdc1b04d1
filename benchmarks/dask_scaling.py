"""Dask scaling benchmark: one grid search, in-process vs a LocalCluster of 1 and 2 workers.

The same ``GridSearchCV`` (``CAETransferFeaturizer`` + logistic regression, 4 candidates x
3 folds = 12 CAE fits, no refit) runs

* in this process (``n_jobs=1``, torch with 1 thread: the reference for the scores);
* under ``joblib.parallel_config(backend="dask")`` on a ``LocalCluster`` of 2 worker
  processes (1 thread each, torch pinned to 1 thread by ``TorchWorkerPlugin``). A
  1-worker cluster is the in-process run: joblib runs ``n_jobs`` = 1 sequentially.

Cluster start-up and the per-worker warm-up (importing torch, loading the Lite0 weights)
are timed apart from the search. Its goals: every run (each repeat of each row) finds the
same best parameters and the same fold scores as the first in-process run. Writes a
Markdown table and the verdict to ``--out``; a missed goal makes the script exit with
status 1.

Usage::

    python benchmarks/dask_scaling.py [--n 180] [--image-size 32] [--epochs 5] [--repeats 3]
        [--out benchmarks/results/dask_scaling.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import torch
from distributed import Client, LocalCluster, get_task_stream
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from bench_common import load_split, per_class_subset, verdict_table  # noqa: E402

from sklearn_cae import CAETransferFeaturizer  # noqa: E402
from sklearn_cae.dask_cluster import TorchWorkerPlugin  # noqa: E402
from sklearn_cae.evaluation import markdown_table  # noqa: E402

GRID = {"feat__bottleneck": [16, 32], "feat__pooling": ["avg", "avgmax"]}
FOLDS = 3


def _data(n: int, root: str | None):
    """``n`` BreastMNIST training images, half of each class."""
    X, y = load_split("breastmnist", "train", medmnist_root=root)
    return per_class_subset(X, y, n // 2, seed=0)


def _search(args, n_jobs=None) -> GridSearchCV:
    pipe = Pipeline(
        [
            (
                "feat",
                CAETransferFeaturizer(
                    image_size=args.image_size,
                    max_epochs=args.epochs,
                    layer_sizes=(64,),
                    batch_size=32,
                    patience=None,
                    device="cpu",
                    random_state=0,
                ),
            ),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    cv = StratifiedKFold(FOLDS, shuffle=True, random_state=0)
    return GridSearchCV(pipe, GRID, cv=cv, refit=False, n_jobs=n_jobs)


def _in_process(args, X, y, threads: int) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        search = _search(args).fit(X, y)
        return {"seconds": time.perf_counter() - start, "search": search}
    finally:
        torch.set_num_threads(previous)


def _start_cluster(n_workers: int) -> tuple[Client, float]:
    start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    client.register_plugin(TorchWorkerPlugin(num_threads=1))
    return client, time.perf_counter() - start


def _on_cluster(args, X, y, client: Client) -> dict:
    start = time.perf_counter()
    with get_task_stream(client) as stream, joblib.parallel_config(backend="dask", client=client):
        search = _search(args, n_jobs=-1).fit(X, y)
    seconds = time.perf_counter() - start
    # Seconds the workers spent computing, over the wall time: how many were busy.
    busy = sum(
        part["stop"] - part["start"]
        for task in stream.data
        for part in task["startstops"]
        if part["action"] == "compute"
    )
    return {"seconds": seconds, "search": search, "busy": busy / seconds}


def same_scores(search: GridSearchCV, reference: GridSearchCV) -> bool:
    """Whether every fold score of ``search`` equals that of ``reference``."""
    return all(
        np.array_equal(
            search.cv_results_[f"split{i}_test_score"],
            reference.cv_results_[f"split{i}_test_score"],
        )
        for i in range(FOLDS)
    )


def goals(runs: dict[str, list[dict]], reference: GridSearchCV) -> list[tuple[str, str, bool]]:
    """The benchmark's goals: every run finds the reference's best parameters and scores."""
    searches = [r["search"] for repeats in runs.values() for r in repeats]
    best = [s.best_params_ for s in searches]
    differ = [b for b in best if b != reference.best_params_]
    equal_scores = sum(same_scores(s, reference) for s in searches)
    return [
        (
            "every run finds the same best parameters",
            f"{len(best) - len(differ)} of {len(best)} runs: {reference.best_params_}"
            + (f"; others: {differ}" if differ else ""),
            not differ,
        ),
        (
            "every run's fold scores equal the in-process run's",
            f"{equal_scores} of {len(searches)} runs",
            equal_scores == len(searches),
        ),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=180, help="training images (balanced)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", default=os.environ.get("MEDMNIST_ROOT"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/dask_scaling.md")
    args = parser.parse_args(argv)

    X, y = _data(args.n, args.root)
    # Warm this process's weight cache so that no row pays the first Lite0 load.
    CAETransferFeaturizer(image_size=args.image_size, max_epochs=1, device="cpu").fit(X[:8])
    # Only 2 workers: joblib runs a search whose n_jobs resolves to 1 (a 1-worker cluster)
    # sequentially in this process, so "1 worker" is the in-process, 1-thread run.
    clusters = {2: _start_cluster(2)}
    configs = {
        "in-process, n_jobs=1, torch 1 thread": lambda: _in_process(args, X, y, 1),
        "LocalCluster, 2 workers x 1 thread": lambda: _on_cluster(args, X, y, clusters[2][0]),
    }
    load_before = os.getloadavg()
    # Interleaved repeats: on a shared machine, load changes from minute to minute.
    runs = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, run in configs.items():
            runs[name].append(run())
            print(f"{name}: {runs[name][-1]['seconds']:.1f} s", flush=True)
    load_after = os.getloadavg()
    for client, _ in clusters.values():
        client.cluster.close()
        client.close()

    reference = runs["in-process, n_jobs=1, torch 1 thread"][0]["search"]
    one_worker = np.median([r["seconds"] for r in runs["in-process, n_jobs=1, torch 1 thread"]])
    lines = [
        "# Dask scaling: one grid search on 1 vs 2 workers",
        "",
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `python benchmarks/"
        f"dask_scaling.py --n {args.n} --image-size {args.image_size} --epochs {args.epochs}"
        f" --repeats {args.repeats}` on {os.cpu_count()} CPU cores ({platform.machine()}), "
        f"torch {torch.__version__}, CPU only. Load average (1 min) before / after: "
        f"{load_before[0]:.1f} / {load_after[0]:.1f}.",
        "",
        f"BreastMNIST train, {len(X)} images (balanced), image_size {args.image_size}, "
        f"`GridSearchCV` over {GRID} x 3 folds = 12 CAE fits ({args.epochs} epochs, "
        f"no early stopping), `refit=False`. {args.repeats} interleaved repeats per row.",
        "",
    ]
    header = [
        "run", "search s, median (min-max)", "speed-up vs 1 worker (median)", "busy workers",
        "cluster start + warm-up (s)", "best params", "same scores",
    ]  # fmt: skip
    table = []
    for name, repeats in runs.items():
        seconds = [r["seconds"] for r in repeats]
        same = all(same_scores(r["search"], reference) for r in repeats)
        busy = f"{np.median([r['busy'] for r in repeats]):.2f}" if "busy" in repeats[0] else "-"
        n_workers = 2 if "2 workers" in name else None
        table.append(
            [
                name,
                f"{np.median(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f})",
                f"{one_worker / np.median(seconds):.2f}x",
                busy,
                f"{clusters[n_workers][1]:.1f}" if n_workers else "-",
                repeats[0]["search"].best_params_,
                "yes" if same else "NO",
            ]
        )
    verdict = goals(runs, reference)
    lines += [
        markdown_table(header, table),
        "",
        "Speed-up is the in-process (= 1 worker, see below) median divided by the row's "
        "median. A `LocalCluster` of 1 worker is not a row: joblib runs a search whose "
        "`n_jobs` resolves to 1 sequentially in the calling process, dask backend or not. "
        "*Busy workers* is "
        "the seconds the workers spent in fit tasks divided by the search's wall time "
        "(at most the number of workers). This machine has 2 CPU cores, shared with other "
        "jobs (see the load average), so 2 workers can at best halve the time and any "
        "other load eats into that. *Same scores*: every fold score of every repeat equals "
        "the in-process, 1-thread run's. Worker start-up (torch import, Lite0 weights, by "
        "`TorchWorkerPlugin`) is paid once per cluster, not per fit.",
        "",
        verdict_table(verdict),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if all(met for _, _, met in verdict) else 1


if __name__ == "__main__":
    sys.exit(main())
