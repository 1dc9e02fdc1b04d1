"""Shared fixtures: real data from ../shared/data, offline mode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from .helpers import SHARED_DATA

# Tests never download weights: asking for them must fail fast with a clear message.
os.environ.setdefault("SKLEARN_CAE_OFFLINE", "1")


def _require(path: Path, what: str) -> Path:
    """Return ``path``; a missing shared data set fails in CI and skips elsewhere."""
    if path.exists():
        return path
    message = f"{what} not found at {path}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must provide ../shared/data.")
    pytest.skip(message)


@pytest.fixture(scope="session")
def medmnist_root() -> Path:
    root = Path(os.environ.get("MEDMNIST_ROOT") or SHARED_DATA / "medmnist")
    return _require(root / "breastmnist.npz", "BreastMNIST").parent


@pytest.fixture(scope="session")
def covid_root() -> Path:
    return _require(SHARED_DATA / "covid19_xray" / "covid19_xray.npz", "covid19_xray").parent


@pytest.fixture(scope="session")
def breast(medmnist_root):
    """BreastMNIST through the medmnist package: ((X_train, y_train), (X_test, y_test))."""
    from sklearn_cae.datasets import load_medmnist

    train = load_medmnist("breastmnist", split="train", root=medmnist_root)
    test = load_medmnist("breastmnist", split="test", root=medmnist_root)
    return train, test


@pytest.fixture(scope="session")
def small_breast(breast):
    """A stratified 48-image slice of BreastMNIST's training split."""
    (X, y), _ = breast
    rng = np.random.default_rng(0)
    index = np.concatenate(
        [rng.choice(np.flatnonzero(y == label), 24, replace=False) for label in (0, 1)]
    )
    return X[index], y[index]


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
