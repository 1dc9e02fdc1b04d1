"""Where the time of a default ``CAETransferFeaturizer().fit_transform`` goes (CPU).

Profiles one fit_transform on BreastMNIST's training split (546 images) with the
standard library's :mod:`cProfile` and reports the cumulative time of each stage:
backbone pass (decoding, preprocessing, forward), map standardisation, the CAE
training (:func:`sklearn_cae.cae.fit_autoencoder`; its skorch loop split into training
steps, validation steps, data loading and the rest of each epoch), and encoding. Writes
a Markdown table to ``benchmarks/results/cae_cost.md`` (``--label`` names the run;
``--append`` adds the table to the file, so that a before / after pair sits in one file).

Usage::

    python benchmarks/cae_cost.py --label "after" [--append] [--param max_epochs=10]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import os
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import add_data_arguments, load_split

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.evaluation import markdown_table

# (stage, how cProfile names the function: file suffix, function name). Nested stages
# are indented in the first column. The names are where the work happens, private
# methods of the featurizer included: the profile looks them up, it calls none of them
# (tests/test_benchmark_smoke.py checks that each still exists).
STAGES = [
    ("backbone pass (decode, preprocess, forward)", "featurizer.py", "_iter_float16_maps"),
    ("  of which backbone forward", "backbones/_features.py", "forward"),
    ("map standardisation", "feature_maps.py", "standardize"),
    ("CAE training (fit_autoencoder)", "cae.py", "fit_autoencoder"),
    ("  training steps (forward, backward, optimizer)", "net.py", "train_step"),
    ("  validation steps", "net.py", "validation_step"),
    ("  batches from the DataLoader", "dataloader.py", "__next__"),
    ("  callbacks (early stopping, logging)", "net.py", "notify"),
    ("encoding the training maps", "featurizer.py", "_encode"),
]


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds of the functions called ``name`` in files ending in ``suffix``."""
    total = 0.0
    for (filename, _, function), (_, _, _, cum, callers) in stats.stats.items():
        if function != name or not filename.endswith(suffix):
            continue
        # Count only outermost calls: skip those made from another function of that name.
        if any(f == function and fn.endswith(suffix) for fn, _, f in callers):
            continue
        total += cum
    return total


def parse_param(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, eval(value, {"__builtins__": {}})  # numbers, tuples, None, True/False


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current defaults")
    parser.add_argument("--param", action="append", default=[], type=parse_param)
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/cae_cost.md")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    X, _ = load_split("breastmnist", "train", medmnist_root=args.medmnist_root)
    params = dict(args.param)

    BackboneFeaturizer(image_size=32).fit_transform(X[:8])  # weights, imports: not timed
    start = time.perf_counter()
    BackboneFeaturizer().fit_transform(X)
    backbone_seconds = time.perf_counter() - start

    featurizer = CAETransferFeaturizer(random_state=0, **params)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(featurizer.fit_transform, X)
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    epochs = sum(len(net.history) for net in featurizer.cae_)  # one net per layer

    lines = [
        f"## {args.label}",
        "",
        f"- {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
        f"{os.getloadavg()[0]:.1f}; parameters: {params or 'defaults'}",
        f"- BreastMNIST training split, {len(X)} images; {epochs} CAE epochs run.",
        f"- `BackboneFeaturizer().fit_transform` (no profiler, after a warm-up): "
        f"{backbone_seconds:.1f} s.",
        f"- `CAETransferFeaturizer(random_state=0).fit_transform` under cProfile: "
        f"{total:.1f} s (**{total / backbone_seconds:.1f}x** the backbone featurizer; "
        "the profiler adds a few percent).",
        "",
    ]
    rows = []
    for stage, suffix, name in STAGES:
        seconds = cumulative(stats, suffix, name)
        rows.append([stage, f"{seconds:.1f}", f"{seconds / total:.0%}"])
    rows.append(["**total**", f"{total:.1f}", "100%"])
    lines += [markdown_table(["stage", "seconds", "share"], rows), ""]
    text = "\n".join(lines)
    print(text)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Cost of a default CAETransferFeaturizer fit_transform\n\n"
        "Produced by `python benchmarks/cae_cost.py` (cProfile, CPU).\n\n"
    )
    if args.append and path.exists():
        path.write_text(path.read_text() + "\n" + text + "\n")
    else:
        path.write_text(header + text + "\n")


if __name__ == "__main__":
    main()
