"""Smoke run of the fine-tuning baseline (benchmarks/finetune.py --quick) and its warm start."""

from __future__ import annotations

import importlib.util
import json
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune.py"


@pytest.fixture(scope="module")
def finetune():
    spec = importlib.util.spec_from_file_location("finetune_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(finetune, medmnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    argv = ["--quick", "--medmnist-root", str(medmnist_root), "--out", str(out)]
    rows = finetune.main(argv)
    return rows, out


@pytest.mark.slow
def test_quick_run_writes_rows_and_table(quick_run):
    rows, out = quick_run
    assert [(r["dataset"], r["fraction"], r["seed"]) for r in rows] == [
        ("breastmnist", 0.5, 0),
        ("breastmnist", 1.0, 0),
    ]
    for row in rows:
        for key in ("bacc", "acc", "auc"):
            assert 0 <= row[key] <= 1
            assert 0 <= row["probe"][key] <= 1
        assert row["steps"] >= 1 and row["seconds"] > 0
    # 6 labelled images a class: fixed schedule; 12: early stopping on a held-out part.
    assert [r["early_stopping"] for r in rows] == [False, True]
    assert rows[1]["n_val"] > 0 and rows[1]["val_history"][0][0] == 0  # the probe is checked
    saved = json.loads((out / "finetune.json").read_text())
    assert len(saved["rows"]) == 2 and saved["meta"]["recipe"]["image_size"] == 32
    table = (out / "finetune.md").read_text()
    assert "| data set | labels | runs |" in table
    assert "| breastmnist | 50% | 1 | 12 |" in table
    assert "| breastmnist | 100% | 1 | 24 |" in table
    assert "## Recipe" in table and "## Not run" in table


def test_merge_keeps_other_runs_and_replaces_reruns(finetune):
    old = [{"dataset": "a", "fraction": 0.1, "seed": s, "bacc": 0.0} for s in (0, 1)]
    new = [{"dataset": "a", "fraction": 0.1, "seed": 1, "bacc": 1.0}]
    merged = finetune.merge_rows(old, new)
    assert [(r["seed"], r["bacc"]) for r in merged] == [(0, 0.0), (1, 1.0)]


def test_labelled_images_match_the_accuracy_benchmark(finetune, medmnist_root):
    path = BENCHMARK.with_name("accuracy.py")
    spec = importlib.util.spec_from_file_location("accuracy_benchmark_ft", path)
    accuracy = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = accuracy  # its config is a dataclass, looked up there
    spec.loader.exec_module(accuracy)
    assert finetune.subsample is accuracy.subsample  # one rule, from bench_common.py
    # The label counts of the saved label-efficiency rows are those of the rule.
    _, y = finetune.load_split(
        "breastmnist", "train", Namespace(medmnist_root=medmnist_root, covid_root=None)
    )
    saved = json.loads((BENCHMARK.parent / "results" / "accuracy.json").read_text())["rows"]
    label_rows = [r for r in saved if r.get("label_efficiency") and r["dataset"] == "breastmnist"]
    assert label_rows
    for row in label_rows:
        assert len(finetune.subsample(y, row["fraction"], row["seed"])) == row["n_labels"]


def test_network_input_is_normalised_as_the_featurizers_feed_lite0(finetune, monkeypatch):
    unit = torch.rand(2, 1, 8, 8)
    mean, std = finetune.bench_common.input_normalisation()
    expected = (unit.expand(-1, 3, -1, -1) - mean[0]) / std[0]
    torch.testing.assert_close(finetune.normalise(unit), expected)
    assert finetune.normalise(unit).is_contiguous(memory_format=torch.channels_last)
    # Read from bench_common on each call, not a constant of its own.
    monkeypatch.setattr(
        finetune.bench_common, "input_normalisation", lambda *args: ((0.25,) * 3, (2.0,) * 3)
    )
    torch.testing.assert_close(finetune.normalise(unit), (unit.expand(-1, 3, -1, -1) - 0.25) / 2)


def test_training_mode_keeps_batch_norm_statistics_frozen(finetune):
    model = finetune.build_model(2)
    finetune.set_train_mode(model, freeze_bn_stats=True)
    norms = [m for m in model.modules() if "BatchNorm" in type(m).__name__]
    # eval() reaches the norms' own children (timm's fused activation) too.
    frozen = {id(child) for m in norms for child in m.modules()}
    assert norms and not any(m.training for m in norms)
    assert all(m.training for m in model.modules() if id(m) not in frozen)
    finetune.set_train_mode(model, freeze_bn_stats=False)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("n_classes", [2, 3])
def test_warm_start_copies_the_linear_probe_into_the_head(finetune, n_classes):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), 8)
    # Images whose brightness depends on the class, so the probe has something to learn.
    X = (rng.random((len(y), 32, 32)) * 100 + 60 * y[:, None, None]).astype(np.uint8)
    unit = finetune.to_unit(X, 32)
    torch.manual_seed(0)
    model = finetune.build_model(n_classes)
    scaler, probe = finetune.warm_start(model, unit, y, finetune.RECIPE, seed=0)

    coef, bias = finetune.probe_head_weights(scaler, probe, n_classes)
    head = model.get_classifier()
    np.testing.assert_allclose(head.weight.detach().numpy(), coef, rtol=0, atol=0)
    np.testing.assert_allclose(head.bias.detach().numpy(), bias, rtol=0, atol=0)
    # The network now predicts what the probe predicts on the frozen features.
    features = finetune.pooled_features(model, unit)
    expected = probe.predict_proba(scaler.transform(features))
    np.testing.assert_allclose(finetune.predict_proba(model, unit), expected, atol=1e-4)
