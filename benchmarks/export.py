"""ONNX export: agreement with the pipeline on the shared test splits, and CPU speed.

For each data set: a ``CAETransferFeaturizer`` (defaults, 128 px) + ``svc()`` fitted on
a stratified subset of the training split, exported with
:func:`sklearn_cae.export.export_onnx`, then, on the test split (COVID-19: ``val``):

* the labels of the graph (onnxruntime, CPU) on ``resize_images`` of the test images
  against ``predict`` of the pipeline on the same resized uint8 images, and on the
  original images (the uint8 rounding of the resize is then part of the difference);
* the largest feature difference, relative to the largest feature, on the same input;
* throughput: ``transform`` of the featurizer and the graph's features and labels by
  onnxruntime on the same resized uint8 batches, interleaved, best of ``--repeats``.

Writes ``benchmarks/results/export.md``::

    OMP_NUM_THREADS=2 python benchmarks/export.py
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from bench_common import (
    DATASETS,
    RESULTS,
    add_data_arguments,
    load_split,
    quick_subset,
    subsample,
    svc,
)


def fitted_pipeline(X, y, image_size: int, quick: bool):
    from sklearn.pipeline import Pipeline

    from sklearn_cae import CAETransferFeaturizer

    params = {"image_size": image_size, **({"max_epochs": 2} if quick else {})}
    featurizer = CAETransferFeaturizer(random_state=0, **params)
    return Pipeline([("feat", featurizer), *svc().steps]).fit(X, y)


def best_rate(run, n_images: int, repeats: int) -> float:
    """Images per second of ``run()``: the best of ``repeats`` timings."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return n_images / min(times)


def measure(name: str, args) -> dict:
    import onnxruntime

    from sklearn_cae.export import export_onnx, read_metadata, resize_images

    X, y = load_split(name, "train", medmnist_root=args.medmnist_root, covid_root=args.covid_root)
    X_test, _ = load_split(
        name, "test", medmnist_root=args.medmnist_root, covid_root=args.covid_root
    )
    if args.quick:
        X, y = quick_subset(X, y)
        X_test = X_test[:48]
    elif len(y) > args.train_images:
        keep = subsample(y, args.train_images / len(y), seed=0)
        X, y = X[keep], y[keep]
    pipe = fitted_pipeline(X, y, args.image_size, args.quick)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        start = time.perf_counter()
        export_onnx(pipe, path)
        export_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    images = resize_images(X_test, read_metadata(session)["image_size"])
    label, _, features = session.run(None, {"images": images})
    expected = pipe[0].transform(images)
    batch = pipe[0].batch_size
    speed_images = images[: args.speed_images]

    def onnx_run():
        for start in range(0, len(speed_images), batch):
            session.run(None, {"images": speed_images[start : start + batch]})

    rates = {"transform": [], "onnx": []}
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        rates["transform"].append(
            best_rate(lambda: pipe[0].transform(speed_images), len(speed_images), 1)
        )
        rates["onnx"].append(best_rate(onnx_run, len(speed_images), 1))
    return {
        "data set": name,
        "train / test images": f"{len(y)} / {len(X_test)}",
        "test image shape": "x".join(map(str, X_test.shape[1:])),
        "labels agree (same uint8 input)": float(np.mean(label == pipe.predict(images))),
        "labels agree (original images)": float(np.mean(label == pipe.predict(X_test))),
        "max feature difference (relative)": float(
            np.abs(features - expected).max() / np.abs(expected).max()
        ),
        "transform images/s": max(rates["transform"]),
        "onnxruntime images/s": max(rates["onnx"]),
        "export s": export_s,
        "graph MB": size_mb,
    }


def markdown(rows: list[dict], args, started: str) -> str:
    import onnxruntime
    import torch

    import sklearn_cae

    columns = list(rows[0])
    lines = [
        "# ONNX export: agreement and CPU speed",
        "",
        f"Command: `python benchmarks/export.py{' --quick' if args.quick else ''}`",
        "",
        f"- date: {started}",
        f"- load average (1 min) at the end: {os.getloadavg()[0]:.1f}",
        f"- CPU: {os.cpu_count()} cores; torch threads {torch.get_num_threads()}, "
        f"onnxruntime intra-op threads {args.threads}",
        f"- sklearn_cae {sklearn_cae.__version__}, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, Python {platform.python_version()}",
        f"- pipeline: CAETransferFeaturizer(random_state=0) defaults at {args.image_size} px "
        f"+ StandardScaler + SVC(class_weight='balanced'), fitted on at most "
        f"{args.train_images} training images (stratified); test: the test split "
        "(COVID-19: val).",
        "- the graph takes uint8 images at image_size: `resize_images` resizes the test "
        "images (antialiased bilinear, rounded to uint8). 'same uint8 input': `predict` on "
        "those images; 'original images': `predict` on the images as stored, which it "
        "resizes in float32 itself.",
        f"- speed: the first {args.speed_images} resized test images in batches of 64, "
        f"`transform` vs `session.run` (features and labels), interleaved, best of "
        f"{args.repeats}.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            if isinstance(value, float) and "agree" in column:
                cells.append(f"{100 * value:.2f}%")
            elif isinstance(value, float) and "relative" in column:
                cells.append(f"{value:.1e}")
            elif isinstance(value, float):
                cells.append(f"{value:.1f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=500)
    parser.add_argument("--speed-images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny subsets, 32 px")
    parser.add_argument("--out", type=Path, default=RESULTS / "export.md")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size = 32
    started = datetime.now().isoformat(timespec="seconds")
    rows = []
    for name in args.datasets:
        rows.append(measure(name, args))
        print(rows[-1], flush=True)
    args.out.write_text(markdown(rows, args, started))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
