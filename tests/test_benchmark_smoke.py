"""Smoke run of the accuracy benchmark (benchmarks/accuracy.py --quick) on a tiny subset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"


@pytest.fixture(scope="module")
def accuracy():
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(accuracy, medmnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("accuracy")
    rows = accuracy.main(
        ["--quick", "--device", "cpu", "--medmnist-root", str(medmnist_root), "--out", str(out)]
    )
    return rows, out


def test_quick_benchmark_runs_every_method(quick_run):
    rows, _ = quick_run
    methods = {row["method"] for row in rows if not row.get("label_efficiency")}
    assert "raw pixels + PCA(50)" in methods
    assert "BackboneFeaturizer, layer by inner CV" in methods
    assert "CAETransferFeaturizer (defaults)" in methods
    assert "CAETransferFeaturizer, GridSearchCV" in methods
    assert "fine-tuning (linear head)" in methods
    assert sum(m.startswith("BackboneFeaturizer layer=") for m in methods) >= 9
    curves = {(row["method"], row["fraction"]) for row in rows if row.get("label_efficiency")}
    assert {method for method, _ in curves} == {
        "CAETransferFeaturizer",
        "BackboneFeaturizer (layer by CV)",
        "fine-tuning",
    }
    for row in rows:
        for key in ("acc", "bacc", "auc"):
            assert 0.0 <= row[key] <= 1.0, (row["method"], key, row[key])


def test_quick_benchmark_writes_reports(quick_run):
    rows, out = quick_run
    saved = json.loads((out / "accuracy.json").read_text())
    assert len(saved["rows"]) == len(rows)
    markdown = (out / "accuracy.md").read_text()
    assert "| CAETransferFeaturizer (defaults) |" in markdown
    assert "MedMNIST v2 ResNet-18 (28), published | 0.863" in markdown
    assert "## Label efficiency" in markdown
    assert "## Against the goals" in markdown and "| breastmnist | " in markdown
    assert "Mean difference to the layer chosen by inner CV" in markdown
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scores_match_sklearn_for_multiclass_auc(accuracy):
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    proba = rng.dirichlet(np.ones(3), size=len(y))
    got = accuracy.scores(y, proba.argmax(1), proba, 3)["auc"]
    assert got == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))


def test_subsample_is_stratified_with_two_per_class(accuracy):
    import numpy as np

    y = np.array([0] * 90 + [1] * 10)
    index = accuracy.subsample(y, 0.05, seed=0)
    assert np.bincount(y[index]).tolist() == [4, 2]
    assert len(set(index)) == len(index)


def test_quick_sparse_ablation(accuracy, medmnist_root, tmp_path):
    argv = ["--quick", "--device", "cpu", "--medmnist-root", str(medmnist_root)]
    accuracy.main(
        [*argv, "--parts", "ablation", "--ablation-set", "sparse", "--out", str(tmp_path)]
    )
    results = json.loads((tmp_path / "accuracy.ablation_sparse.json").read_text())["breastmnist"]
    for key in accuracy.SPARSE_CAES:
        for name in (f"code {key}", f"code {key} + backbone blocks.4 avg"):
            assert 0.0 <= results[name]["cv_bacc"] <= 1.0
            assert 0.0 <= results[name]["bacc"] <= 1.0
    assert "backbone blocks.4 avg" in results


def _load(name: str):
    path = BENCHMARK.parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_training_signals_benchmark(medmnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    signals = _load("signals")
    argv = ["--quick", "--datasets", "breastmnist", "--seeds", "1", "--fractions", "1.0,0.5"]
    argv += ["--configs", "backbone,defaults,semi+denoise", "--json", str(tmp_path / "s.json")]
    signals.main([*argv, "--out", str(tmp_path / "s.md")])
    rows = json.loads((tmp_path / "s.json").read_text())
    assert {(r["config"], r["fraction"]) for r in rows} == {
        (config, fraction)
        for config in ("backbone", "defaults", "semi+denoise")
        for fraction in (1.0, 0.5)
    }
    for row in rows:
        assert len(row["folds"]) == 3 and 0.0 <= row["bacc"] <= 1.0
    # An unsupervised featurizer is fitted once for both fractions; the semi-supervised
    # one once per fraction (it sees the labels).
    seconds = {(r["config"], r["fraction"]): r["seconds"] for r in rows}
    assert seconds[("defaults", 0.5)] < seconds[("defaults", 1.0)]
    table = (tmp_path / "s.md").read_text()
    assert "| semi+denoise |" in table and "## 50% of the training fold's labels" in table


def test_quick_training_signals_on_test_split(medmnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    signals = _load("signals")
    argv = ["--quick", "--on-test", "--datasets", "breastmnist", "--seeds", "1"]
    argv += ["--fractions", "1.0", "--configs", "backbone,defaults"]
    signals.main([*argv, "--json", str(tmp_path / "t.json"), "--out", str(tmp_path / "t.md")])
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [len(r["folds"]) for r in rows] == [1, 1]  # one split: train -> test
    assert "test splits" in (tmp_path / "t.md").read_text()
