"""Fingerprints of the featurizers' output, to show that a refactor changed no feature.

Fits both featurizers in several settings (defaults, several layers, denoising and
semi-supervised training, the cache with a hold-out, flattened input) on 48 BreastMNIST
images with a fixed ``random_state``, on the CPU, and prints one SHA-256 digest per
feature array. Run it against two checkouts and compare the lines: equal digests are
bit-identical features. It uses the public API only, so it runs against older
releases too::

    python benchmarks/fingerprint.py > after.txt
    git worktree add /tmp/before <rev>
    (cd /tmp && PYTHONPATH=/tmp/before python "$OLDPWD/benchmarks/fingerprint.py") > before.txt
    diff before.txt after.txt

(From outside the repository, so that ``PYTHONPATH`` wins over an editable install.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"


def digest(features: np.ndarray) -> str:
    """SHA-256 of the array's shape, dtype and bytes."""
    array = np.ascontiguousarray(features)
    header = f"{array.shape}{array.dtype}".encode()
    return hashlib.sha256(header + array.tobytes()).hexdigest()


def feature_arrays(root: str) -> dict[str, np.ndarray]:
    """Features of both featurizers in each setting, by name."""
    from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
    from sklearn_cae.datasets import load_medmnist

    X, y = load_medmnist("breastmnist", "train", root=root)
    rng = np.random.default_rng(0)
    index = np.concatenate(
        [rng.choice(np.flatnonzero(y == label), 24, replace=False) for label in (0, 1)]
    )
    X_fit, y_fit = X[index], y[index]
    X_new = X[rng.choice(len(X), 20, replace=False)]
    base = {"image_size": 64, "batch_size": 16, "device": "cpu"}
    cae = {**base, "max_epochs": 3, "random_state": 0}
    out = {
        "backbone defaults": BackboneFeaturizer(**base).fit(X_fit).transform(X_new),
        "backbone two layers spp": BackboneFeaturizer(
            layer=["blocks.2", "blocks.5"], pooling="spp", **base
        )
        .fit(X_fit)
        .transform(X_new),
    }
    featurizer = CAETransferFeaturizer(**cae)
    out["cae defaults fit_transform"] = featurizer.fit_transform(X_fit)
    out["cae defaults transform"] = featurizer.transform(X_new)
    two_layers = CAETransferFeaturizer(
        layer=["blocks.3", "blocks.4"],
        pooling="avgmax",
        include_backbone=False,
        layer_sizes=(32, 16),
        bottleneck=8,
        noise=0.2,
        **cae,
    )
    out["cae two layers fit_transform"] = two_layers.fit_transform(X_fit)
    out["cae two layers transform"] = two_layers.transform(X_new)
    y_semi = y_fit.copy()
    y_semi[::3] = -1
    semi = CAETransferFeaturizer(corrupted_views=1, supervision=1.0, **cae)
    out["cae semi-supervised denoising fit_transform"] = semi.fit_transform(X_fit, y_semi)
    out["cae semi-supervised denoising transform"] = semi.transform(X_new)
    with tempfile.TemporaryDirectory() as cache:
        cached = CAETransferFeaturizer(cache=cache, validation_fraction=0.25, patience=1, **cae)
        out["cae cache hold-out fit_transform"] = cached.fit_transform(X_fit)
        out["cae cache hold-out transform"] = cached.transform(X_new)
    flat = CAETransferFeaturizer(image_shape=(28, 28), sparsity=0.0, **cae)
    flat.fit(X_fit.reshape(len(X_fit), -1))
    out["cae flattened input transform"] = flat.transform(X_new.reshape(len(X_new), -1))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medmnist-root", default=os.environ.get("MEDMNIST_ROOT") or str(SHARED))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the same reductions on every machine with any core count
    import sklearn_cae

    print(f"# sklearn_cae from {Path(sklearn_cae.__file__).parent}", file=sys.stderr)
    for name, features in feature_arrays(args.medmnist_root).items():
        print(f"{digest(features)}  {name} {features.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
