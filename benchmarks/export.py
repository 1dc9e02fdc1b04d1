"""ONNX export: agreement with the pipeline on the shared test splits, and CPU speed.

For each data set: a ``CAETransferFeaturizer`` (defaults, 128 px) + ``svc()`` fitted on
a stratified subset of the training split, exported with
:func:`sklearn_cae.export.export_onnx` twice, with each graph input type
(``input_dtype="float32"``, the default, and ``"uint8"``), then, on the test split
(COVID-19: ``val``):

* the labels of each graph (onnxruntime, CPU) on ``resize_images`` of the test images
  (``dtype`` the graph's) against ``predict`` of the pipeline on the images as stored
  (what a user compares with), and for the uint8 graph also against ``predict`` on the
  same resized uint8 images (the rounding then excluded);
* the largest feature difference, relative to the largest feature, of each graph
  against ``transform`` of the stored images;
* throughput: ``transform`` of the featurizer and the float32 graph's features and
  labels by onnxruntime, each on the test images already resized, interleaved, best of
  ``--repeats``.

Writes ``benchmarks/results/export.md``::

    OMP_NUM_THREADS=1 python benchmarks/export.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common

from bench_common import (
    DATASETS,
    RESULTS,
    add_data_arguments,
    load_split,
    per_class_subset,
    svc,
)

from sklearn_cae.datasets import stratified_subset
from sklearn_cae.evaluation import markdown_table


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


def session_on(pipe, folder: Path, input_dtype: str, threads: int):
    """Export ``pipe`` with ``input_dtype``; the session on it, export seconds, graph MB."""
    import onnxruntime

    from sklearn_cae.export import export_onnx

    path = folder / f"model-{input_dtype}.onnx"
    start = time.perf_counter()
    export_onnx(pipe, path, input_dtype=input_dtype)
    export_s = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, export_s, path.stat().st_size / 1e6


def relative_difference(got, expected) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def measure(name: str, args) -> dict:
    from sklearn_cae.export import read_metadata, resize_images

    X, y = load_split(name, "train", medmnist_root=args.medmnist_root, covid_root=args.covid_root)
    X_test, _ = load_split(
        name, "test", medmnist_root=args.medmnist_root, covid_root=args.covid_root
    )
    if args.quick:
        X, y = per_class_subset(X, y)
        X_test = X_test[:48]
    elif len(y) > args.train_images:
        keep = stratified_subset(y, args.train_images / len(y), random_state=0)
        X, y = X[keep], y[keep]
    pipe = fitted_pipeline(X, y, args.image_size, args.quick)
    predicted = pipe.predict(X_test)
    expected = pipe[0].transform(X_test)
    with tempfile.TemporaryDirectory() as folder:
        session, export_s, size_mb = session_on(pipe, Path(folder), "float32", args.threads)
        session_uint8, _, _ = session_on(pipe, Path(folder), "uint8", args.threads)
    size = read_metadata(session)["image_size"]
    images = resize_images(X_test, size, dtype="float32")
    images_uint8 = resize_images(X_test, size, dtype="uint8")
    label, _, features = session.run(None, {"images": images})
    label_uint8, _, features_uint8 = session_uint8.run(None, {"images": images_uint8})
    batch = pipe[0].batch_size
    speed_uint8, speed_float = images_uint8[: args.speed_images], images[: args.speed_images]

    def onnx_run():
        for start in range(0, len(speed_float), batch):
            session.run(None, {"images": speed_float[start : start + batch]})

    rates = {"transform": [], "onnx": []}
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        rates["transform"].append(
            best_rate(lambda: pipe[0].transform(speed_uint8), len(speed_uint8), 1)
        )
        rates["onnx"].append(best_rate(onnx_run, len(speed_float), 1))
    return {
        "data set": name,
        "train / test images": f"{len(y)} / {len(X_test)}",
        "test image shape": "x".join(map(str, X_test.shape[1:])),
        "labels agree, float32 input": float(np.mean(label == predicted)),
        "labels agree, uint8 input": float(np.mean(label_uint8 == predicted)),
        "labels agree, uint8 input (same uint8 images)": float(
            np.mean(label_uint8 == pipe.predict(images_uint8))
        ),
        "max feature difference, float32 (relative)": relative_difference(features, expected),
        "max feature difference, uint8 (relative)": relative_difference(features_uint8, expected),
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
    threads = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}"
    lines = [
        "# ONNX export: agreement and CPU speed",
        "",
        f"Command: `{' '.join([threads, 'python', 'benchmarks/export.py', *args.argv])}`",
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
        "- each graph's input is `resize_images(test images, image_size, dtype=...)` "
        "(antialiased bilinear): float32 keeps the resized values (the default, "
        "`export_onnx(..., input_dtype='float32')`), uint8 rounds them. 'labels agree': "
        "the graph's labels against `predict` on the images as stored (which resizes them "
        "in float32 itself); '(same uint8 images)': against `predict` on the uint8 graph's "
        "own input, the rounding excluded. Feature differences: each graph against "
        "`transform` of the stored images.",
        f"- speed: the first {args.speed_images} test images, already resized, in batches "
        f"of 64: `transform` (uint8 images at image_size) vs `session.run` of the float32 "
        f"graph (features and labels), interleaved, best of {args.repeats}.",
        "",
        markdown_table(
            columns, [[cell(column, row[column]) for column in columns] for row in rows]
        ),
    ]
    return "\n".join(lines) + "\n"


def cell(column: str, value) -> str:
    """A value of the table: agreements in percent, the relative difference in e-notation."""
    if isinstance(value, float) and "agree" in column:
        return f"{100 * value:.2f}%"
    if isinstance(value, float) and "relative" in column:
        return f"{value:.1e}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


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
    args.argv = sys.argv[1:] if argv is None else list(argv)
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
