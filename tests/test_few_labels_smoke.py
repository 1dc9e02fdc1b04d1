"""``benchmarks/few_labels.py``: a smoke run and the pieces its tables rest on."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def few_labels():
    spec = importlib.util.spec_from_file_location("few_labels", BENCHMARKS / "few_labels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_baseline_blocks_are_what_backbone_featurizer_returns(few_labels):
    from sklearn_cae import BackboneFeaturizer

    X = np.random.default_rng(0).integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    args = few_labels.parse_args(["--device", "cpu"])
    blocks = few_labels.raw_backbone_blocks(X, args)
    fit_rows = np.arange(8)
    layers = ["blocks.4", "blocks.6"]
    expected = BackboneFeaturizer(layer=layers, device="cpu").fit(X[fit_rows]).transform(X)
    actual = few_labels.balanced(blocks, layers, fit_rows)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_configurations_resolve_as_fit_resolves_supervision(few_labels):
    resolved = few_labels.resolved
    assert resolved({}, 0.1) == resolved({"supervision": 1.0}, 0.1)
    assert resolved({}, 1.0) == resolved({"supervision": 0.0}, 1.0)
    assert resolved({}, 1.0) != resolved({"supervision": 1.0}, 1.0)


def test_chosen_by_cv_takes_the_best_mean_balanced_accuracy(few_labels):
    scores = [
        ("a", "defaults", 0.6),
        ("a", "unsupervised", 0.7),
        ("b", "defaults", 0.9),
        ("b", "unsupervised", 0.7),
        ("a", "backbone (inner CV)", 1.0),  # not a CAE configuration
    ]
    rows = [
        {"dataset": d, "fraction": 0.1, "method": m, "bacc": b, "auc": 0.5} for d, m, b in scores
    ]
    assert few_labels.chosen_by_cv(rows) == "defaults"  # 0.75 against 0.70


@pytest.mark.slow
def test_quick_judge_writes_its_tables(few_labels, medmnist_root, covid_root, tmp_path):
    run = ["--quick", "--parts", "judge", "--judge-config", "defaults", "--fractions", "0.25"]
    data = ["--medmnist-root", str(medmnist_root), "--covid-root", str(covid_root)]
    few_labels.main([*run, "--datasets", "breastmnist", *data, "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "few_labels_judge_quick.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"backbone (inner CV)", "defaults"}
    assert all(0 <= r["bacc"] <= 1 and 0 <= r["auc"] <= 1 for r in rows)
    table = (tmp_path / "few_labels_judge_quick.md").read_text()
    assert "## 25% of the labels" in table and "| defaults |" in table
