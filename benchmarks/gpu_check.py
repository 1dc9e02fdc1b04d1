"""One-shot check of the CUDA path (about 1-3 minutes on one H100/H200).

Prints, and writes as Markdown to ``--out``:

1. CPU vs CUDA feature agreement, for a CUDA-fitted featurizer and its pickled copy run
   on the CPU, with CUDA under bf16 autocast (the default) and in float32;
2. ``transform`` images/s at 224 px for the default backbone (EfficientNet-Lite0) and
   ResNet-50 (``weights=None``: no download needed for timing), with and without
   autocast, next to a bare forward pass of ``backbone_`` on the same preprocessed
   batches, and the GPU memory peak of each.

Without CUDA it prints why it skips and exits 0 without writing anything. Features
outside the tolerance make it exit with status 1.

``--device cpu`` is a dry run of the code: the "CUDA" featurizer then runs on the CPU
too, so the agreement it reports is that of a featurizer with its own pickled copy
(exact unless pickling or the device switch changes the features) -- not a check of
any GPU. ``tests/test_benchmark_smoke.py`` also runs :func:`check_agreement` against
independent references: featurizers fitted again on the CPU with the same seed (which
must agree) and with another seed (which must not).

Usage::

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.md]
    python benchmarks/gpu_check.py --device cpu --n 32 --size 64   # dry run of the code
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import MarkdownLog

import sklearn_cae
from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae import featurizer as featurizer_module
from sklearn_cae.evaluation import markdown_table
from sklearn_cae.images import preprocess_batch

# Relative L2 error ||cpu - cuda|| / ||cpu|| accepted for the features.
TOLERANCE = {"bf16 autocast": 3e-2, "fp32": 5e-3}
BACKBONES = [("efficientnet_lite0", "DEFAULT"), ("resnet50", None)]


@contextlib.contextmanager
def autocast_enabled(enabled: bool):
    """Run the featurizers with (default) or without bf16 autocast on CUDA."""
    if enabled:
        yield
        return
    original = featurizer_module.autocast
    featurizer_module.autocast = lambda device: contextlib.nullcontext()
    try:
        yield
    finally:
        featurizer_module.autocast = original


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def agreement(cpu: np.ndarray, other: np.ndarray) -> tuple[float, float, float]:
    """Relative L2 error, max abs error over max |cpu|, worst row cosine similarity."""
    rel = float(np.linalg.norm(cpu - other) / np.linalg.norm(cpu))
    worst = float(np.abs(cpu - other).max() / np.abs(cpu).max())
    cos = (cpu * other).sum(1) / (np.linalg.norm(cpu, axis=1) * np.linalg.norm(other, axis=1))
    return rel, worst, float(cos.min())


def on_cpu(featurizer):
    """A CPU copy through pickling, as a CPU-only machine would load it."""
    copy = pickle.loads(pickle.dumps(featurizer))
    return copy.set_params(device="cpu")


def pickled_on_cpu(featurizer, X) -> np.ndarray:
    """The reference features: the fitted featurizer's pickled CPU copy transforms ``X``."""
    return on_cpu(featurizer).transform(X)


def check_agreement(X, args, device, out, reference=pickled_on_cpu) -> bool:
    """Whether each featurizer fitted on ``device`` gives the reference's features.

    ``reference(fitted_featurizer, X)`` returns the features to compare with, in
    float32 on the CPU: by default its pickled copy's (:func:`pickled_on_cpu`).
    """
    out("## CPU vs CUDA feature agreement")
    out("")
    out(
        f"{len(X)} images at {args.size} px; the featurizer is fitted on {device.type}, "
        "pickled, and the copy transforms on the CPU in float32. Tolerance: relative L2 "
        + ", ".join(f"{k} <= {v:g}" for k, v in TOLERANCE.items())
        + " (fp32 on CUDA still uses TF32 convolutions, cuDNN's default)."
    )
    out("")
    header = [
        "model",
        "CUDA precision",
        "rel. L2 error",
        "max abs err / max",
        "min row cosine",
        "ok",
    ]
    rows, ok = [], True
    common = dict(image_size=args.size, batch_size=args.batch_size, device=str(device))
    models = [
        (f"{name} BackboneFeaturizer", BackboneFeaturizer(name, weights=weights, **common))
        for name, weights in BACKBONES
    ]
    models.append(
        (
            "efficientnet_lite0 CAETransferFeaturizer",
            CAETransferFeaturizer(max_epochs=2, random_state=0, **common),
        )
    )
    for label, model in models:
        model.fit(X)
        expected = reference(model, X)
        for precision, enabled in (("bf16 autocast", True), ("fp32", False)):
            with autocast_enabled(enabled):
                features = model.transform(X)
            rel, worst, cos = agreement(expected, features)
            passed = rel <= TOLERANCE[precision]
            ok &= passed
            yes = "yes" if passed else "NO"
            rows.append([label, precision, f"{rel:.2e}", f"{worst:.2e}", f"{cos:.5f}", yes])
    out(markdown_table(header, rows))
    out("")
    return ok


def time_it(fn, device, repeats: int) -> tuple[float, float]:
    """Best wall time over ``repeats`` runs after one warm-up, and the memory peak."""
    fn()
    best = float("inf")
    reset_peak(device)
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, peak_mib(device)


def check_throughput(X, args, device, out) -> None:
    out(f"## transform throughput at {args.size} px")
    out("")
    out(
        f"{len(X)} uint8 RGB images, batch_size={args.batch_size}, best of {args.repeats}. "
        "'bare forward' runs `backbone_` alone on batches preprocessed beforehand (already "
        "on the device); `transform` starts from the host numpy array (copy, resize, "
        "normalise, backbone, CAE encoder, pooling, copy back). Memory: peak "
        "`torch.cuda.max_memory_allocated` during the measurement."
    )
    out("")
    rows = []
    common = dict(image_size=args.size, batch_size=args.batch_size, device=str(device))
    for name, weights in BACKBONES:
        base = BackboneFeaturizer(name, weights=weights, **common).fit(X[:8])
        cae = CAETransferFeaturizer(name, weights=weights, max_epochs=1, random_state=0, **common)
        cae.fit(X[: min(len(X), 4 * args.batch_size)])
        layout = next(p for p in base.backbone_.parameters() if p.ndim == 4)
        assert layout.is_contiguous(memory_format=torch.channels_last), "not channels_last"
        batches = [
            preprocess_batch(
                X[i : i + args.batch_size],
                image_size=(args.size, args.size),
                mean=base.input_mean_,
                std=base.input_std_,
                device=device,
            )
            for i in range(0, len(X), args.batch_size)
        ]
        for enabled in (True, False):

            def bare(batches=batches, enabled=enabled, module=base.backbone_):
                ctx = featurizer_module.autocast(device) if enabled else contextlib.nullcontext()
                with torch.inference_mode(), ctx:
                    for batch in batches:
                        module(batch)

            bare_s, bare_mem = time_it(bare, device, args.repeats)
            timings = [("bare forward", bare_s, bare_mem)]
            with autocast_enabled(enabled):
                for label, model in (
                    ("BackboneFeaturizer.transform", base),
                    ("CAE transform", cae),
                ):
                    seconds, mem = time_it(
                        lambda model=model: model.transform(X), device, args.repeats
                    )
                    timings.append((label, seconds, mem))
            rows += [
                [
                    f"{name}{' (weights=None)' if weights is None else ''}",
                    "bf16" if enabled else "off (fp32)",
                    label,
                    f"{len(X) / seconds:,.0f}",
                    f"{bare_s / seconds:.2f}",
                    f"{mem:,.0f}",
                ]
                for label, seconds, mem in timings
            ]
        del base, cae, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()
    header = ["backbone", "autocast", "what", "images/s", "ratio to bare", "GPU peak MiB"]
    out(markdown_table(header, rows))
    out("")


def describe(device: torch.device) -> list[str]:
    lines = [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- sklearn_cae {sklearn_cae.__version__}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
        f"- Python {platform.python_version()}, {platform.platform()}, {os.cpu_count()} CPUs",
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("- no GPU: CPU dry run (numbers are not the GPU check)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gpu_check.md")
    parser.add_argument("--n", type=int, default=2048, help="images timed per measurement")
    parser.add_argument("--n-agree", type=int, default=64, help="images for the agreement")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="'cpu' only to dry-run the script")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine: skipping the GPU check (nothing written).")
        return 0
    started = time.perf_counter()
    out = MarkdownLog()

    out("# GPU check")
    out("")
    for line in describe(device):
        out(line)
    out("")
    out("Command: `python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]) + "`")
    out("")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(args.n, args.size, args.size, 3), dtype=np.uint8)
    ok = check_agreement(X[: args.n_agree], args, device, out)
    check_throughput(X, args, device, out)
    out(f"Agreement within tolerance: {'yes' if ok else 'NO'}. ")
    out(f"Total time: {time.perf_counter() - started:.0f} s.")
    out.write(args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
