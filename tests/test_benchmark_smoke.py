"""Smoke runs of the benchmarks (``--quick``) and tests of their shared pieces.

The scripts live in ``benchmarks/`` (not a package): each is loaded from its file.
``accuracy.py`` is the benchmark, ``ablation.py`` the design studies,
``accuracy_report.py`` the report, ``bench_common.py`` what they share; ``speed.py``,
``dask_scaling.py``, ``gpu_check.py`` and ``demo_time.py`` judge goals (their verdicts
are tested here).
The fine-tuning baseline is ``tests/test_finetune_smoke.py``'s.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCHMARKS / "results"
PARTS = {"raw", "backbone", "cae", "grid", "finetune", "labels"}


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def accuracy():
    return load_benchmark("accuracy")


@pytest.fixture(scope="module")
def report():
    return load_benchmark("accuracy_report")


@pytest.fixture(scope="module")
def common():
    return load_benchmark("bench_common")


# ------------------------------------------------------------------- accuracy.py
@pytest.fixture(scope="module")
def quick_run(accuracy, medmnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("accuracy")
    rows = accuracy.main(
        ["--quick", "--device", "cpu", "--medmnist-root", str(medmnist_root), "--out", str(out)]
    )
    return rows, out


@pytest.mark.slow
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


@pytest.mark.slow
def test_quick_benchmark_tags_every_row_with_its_part(quick_run):
    rows, _ = quick_run
    assert {row["part"] for row in rows} == PARTS
    label_rows = [row for row in rows if row["part"] == "labels"]
    assert all(row.get("label_efficiency") for row in label_rows)
    assert {row["label_method"] for row in label_rows} == {"cae", "backbone", "finetune"}
    # The backbone's label curve at 100% reuses the layer of the main row (same images).
    chosen = next(r for r in rows if r["method"] == "BackboneFeaturizer, layer by inner CV")
    full = next(
        r
        for r in label_rows
        if r["label_method"] == "backbone" and r["fraction"] == 1.0 and r["seed"] == 0
    )
    assert full["bacc"] == chosen["bacc"] and full["auc"] == chosen["auc"]


@pytest.mark.slow
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


def test_config_is_frozen_and_quick_mode_shrinks_the_run(accuracy):
    config = accuracy.BenchmarkConfig.from_argv(["--quick", "--parts", "raw", "cae"])
    assert config.datasets == ("breastmnist",) and config.seeds == 1
    assert config.image_size == 32 and config.n_jobs == 1
    assert config.parts == ("raw", "cae") and config.command_line == "--quick --parts raw cae"
    with pytest.raises(AttributeError):
        config.seeds = 3
    full = accuracy.BenchmarkConfig.from_argv(["--seeds", "2", "--ft-seeds", "1"])
    assert full.datasets == ("breastmnist", "pneumoniamnist", "retinamnist", "covid19_xray")
    assert (full.seeds, full.finetune_seeds, full.n_jobs) == (2, 1, -1)
    with pytest.raises(SystemExit):  # the studies are ablation.py now
        accuracy.BenchmarkConfig.from_argv(["--parts", "ablation"])


def test_saved_rows_get_their_part_from_the_method_name(accuracy):
    rows = json.loads((RESULTS / "accuracy.json").read_text())["rows"]
    tagged = [accuracy.with_part(row) for row in rows]
    parts = {(r["method"], r["part"], r.get("label_method")) for r in tagged}
    assert ("raw pixels + PCA(50)", "raw", None) in parts
    assert ("BackboneFeaturizer layer=blocks.4", "backbone", None) in parts
    assert ("BackboneFeaturizer, layer by inner CV", "backbone", None) in parts
    assert ("CAETransferFeaturizer (defaults)", "cae", None) in parts
    assert ("CAETransferFeaturizer, GridSearchCV", "grid", None) in parts
    assert ("fine-tuning (linear head)", "finetune", None) in parts
    assert ("CAETransferFeaturizer", "labels", "cae") in parts
    assert ("BackboneFeaturizer (layer by CV)", "labels", "backbone") in parts
    assert ("fine-tuning", "labels", "finetune") in parts
    assert accuracy.with_part(tagged[0]) is tagged[0]  # tagged rows are left alone
    with pytest.raises(ValueError, match="which part"):
        accuracy.with_part({"dataset": "breastmnist", "method": "something else"})


def test_merge_replaces_the_rows_of_the_parts_run_now(accuracy):
    rows = json.loads((RESULTS / "accuracy.json").read_text())["rows"]
    argv = ["--merge", "--parts", "cae", "labels", "--label-methods", "cae"]
    config = accuracy.BenchmarkConfig.from_argv([*argv, "--datasets", "breastmnist"])
    kept = accuracy.kept_rows(rows, config)
    replaced = [
        r
        for r in rows
        if r["dataset"] == "breastmnist"
        and r["method"] in ("CAETransferFeaturizer (defaults)", "CAETransferFeaturizer")
    ]
    assert replaced and len(kept) == len(rows) - len(replaced)
    assert not any(
        r["dataset"] == "breastmnist" and r["method"].startswith("CAETransferFeaturizer")
        for r in kept
        if r["method"] != "CAETransferFeaturizer, GridSearchCV"
    )
    assert all("part" in r for r in kept)


# ------------------------------------------------------------- accuracy_report.py
def test_report_rewrites_the_saved_markdown(report, tmp_path):
    shutil.copy(RESULTS / "accuracy.json", tmp_path / "accuracy.json")
    report.main(["--out", str(tmp_path)])
    assert (tmp_path / "accuracy.md").read_text() == (RESULTS / "accuracy.md").read_text()
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_small_json(report, tmp_path):
    row = {"acc": 0.5, "acc_std": 0.1, "bacc": 0.6, "bacc_std": 0.05, "auc": 0.7, "n_runs": 3}
    rows = [
        {"dataset": "breastmnist", "method": "CAETransferFeaturizer (defaults)", **row},
        {"dataset": "breastmnist", "method": "BackboneFeaturizer layer=blocks.4", **row},
        {"dataset": "breastmnist", "method": "BackboneFeaturizer, layer by inner CV", **row},
    ]
    rows = [{**r, "seconds": 1.0} for r in rows]
    rows[-1] = {**rows[-1], "bacc": 0.55, "layers": ["blocks.4"]}
    meta = {"argv": "--x", "device": "cpu", "date": "today", "image_size": 32, "seeds": 3}
    meta["datasets"] = ["breastmnist"]
    (tmp_path / "accuracy.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    report.main(["--out", str(tmp_path)])
    markdown = (tmp_path / "accuracy.md").read_text()
    assert "`python benchmarks/accuracy.py --x` on cpu (today)" in markdown
    assert "| BackboneFeaturizer, layer by inner CV (blocks.4) | 0.500 ± 0.100 |" in markdown
    assert "| breastmnist | 0.600 ± 0.050 | +5.0 points | +0.0 (blocks.4) | 0.500 vs 0.863 |" in (
        markdown
    )
    assert "## Label efficiency" not in markdown
    assert not (tmp_path / "accuracy.png").exists()  # no label curves, no figure


# ----------------------------------------------------------------- bench_common.py
def test_scores_match_sklearn_for_multiclass_auc(common):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    proba = rng.dirichlet(np.ones(3), size=len(y))
    got = common.scores(y, proba.argmax(1), proba, 3)["auc"]
    assert got == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))


def test_per_class_subset_draws_as_many_of_each_class_in_order(common):
    y = np.array([0] * 90 + [1] * 10 + [2] * 7)
    X = np.arange(len(y)) * 10
    X_sub, y_sub = common.per_class_subset(X, y, per_class=5, seed=1)
    assert np.bincount(y_sub).tolist() == [5, 5, 5]
    assert np.all(np.diff(X_sub) > 0)  # distinct images, in their order in X
    np.testing.assert_array_equal(y[X_sub // 10], y_sub)
    again, _ = common.per_class_subset(X, y, per_class=5, seed=1)
    other, _ = common.per_class_subset(X, y, per_class=5, seed=2)
    assert again.tolist() == X_sub.tolist() and other.tolist() != X_sub.tolist()


def test_summarize_is_mean_and_std_over_runs(common):
    runs = [{"acc": 0.5, "bacc": 0.4, "auc": 0.9}, {"acc": 0.7, "bacc": 0.6, "auc": 0.7}]
    summary = common.summarize(runs)
    assert summary["acc"] == pytest.approx(0.6) and summary["acc_std"] == pytest.approx(0.1)
    assert summary["n_runs"] == 2


def test_quick_evaluation_set_is_stratified(common, medmnist_root):
    data = common.load_evaluation_set("breastmnist", medmnist_root=medmnist_root, quick=True)
    (train, test), *others = data.splits
    assert not others and data.n_classes == 2
    assert np.bincount(data.y[train]).tolist() == [12, 12] and len(test) == 24
    assert len(data.X) == len(data.y) == 48


def test_quick_evaluation_set_has_every_class_in_its_test_part(common, medmnist_root):
    if not (medmnist_root / "retinamnist.npz").exists():
        pytest.skip("RetinaMNIST not in the shared data")
    data = common.load_evaluation_set("retinamnist", medmnist_root=medmnist_root, quick=True)
    (train, test), *others = data.splits
    assert not others and data.n_classes == 5
    # Per-class ROC AUC needs each class among the test images.
    assert np.bincount(data.y[train]).tolist() == np.bincount(data.y[test]).tolist() == [12] * 5


def test_merge_rows_replaces_rows_of_the_same_key_in_place_of_order(common):
    old = [{"k": k, "v": "old"} for k in ("a", "b", "c")]
    new = [{"k": "b", "v": "new"}, {"k": "d", "v": "new"}]
    merged = common.merge_rows(old, new, ("k",))
    assert [(r["k"], r["v"]) for r in merged] == [
        ("a", "old"),
        ("c", "old"),
        ("b", "new"),
        ("d", "new"),
    ]


def test_merge_rows_sorts_by_key_when_asked(common):
    old = [{"name": "b", "seed": s, "v": "old"} for s in (2, 0)]
    new = [{"name": "a", "seed": 1, "v": "new"}, {"name": "b", "seed": 2, "v": "new"}]
    merged = common.merge_rows(old, new, ("name", "seed"), sort=True)
    assert [(r["name"], r["seed"], r["v"]) for r in merged] == [
        ("a", 1, "new"),
        ("b", 0, "old"),
        ("b", 2, "new"),
    ]


def test_json_rows_round_trip(common, tmp_path):
    path = tmp_path / "new" / "rows.json"
    assert common.read_json(path) is None and common.read_json(path, []) == []
    common.write_json([{"fraction": 0.1, "where": Path("x")}], path)
    assert common.read_json(path) == [{"fraction": 0.1, "where": "x"}]


def test_scores_of_a_fitted_model_and_of_fitted_features(common):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    F = rng.normal(size=(len(y), 5)) + y[:, None]
    train, test = np.arange(0, 60, 2), np.arange(1, 60, 2)
    model = common.svc().fit(F[train], y[train])
    expected = common.scores(y[test], model.predict(F[test]), model.decision_function(F[test]), 3)
    assert common.model_scores(model, F[test], y[test], 3) == expected
    assert common.eval_features(F[train], y[train], F[test], y[test], 3) == expected
    with_pca = common.eval_features(F[train], y[train], F[test], y[test], 3, common.svc(PCA(1)))
    assert with_pca != expected  # the model given is the one fitted
    assert expected["bacc"] > 0.6


def test_verdict_table_says_which_goals_were_met(common):
    table = common.verdict_table([("fast", "2.0x", True), ("small", "9 MiB", False)])
    assert table.splitlines() == [
        "| target | measured | met |",
        "|---|---|---|",
        "| fast | 2.0x | yes |",
        "| small | 9 MiB | no |",
    ]


def test_svc_takes_the_steps_before_it(common):
    from sklearn.decomposition import PCA

    assert [name for name, _ in common.svc().steps] == ["standardscaler", "svc"]
    pipeline = common.svc(PCA(2))
    assert [name for name, _ in pipeline.steps] == ["pca", "standardscaler", "svc"]
    assert pipeline[-1].class_weight == "balanced"


def test_cv_bacc_has_no_more_folds_than_the_smallest_class(common):
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(0)
    y = np.array([0] * 20 + [1] * 3)
    F = rng.normal(size=(len(y), 4)) + y[:, None]
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    expected = cross_val_score(common.svc(), F, y, cv=cv, scoring="balanced_accuracy")
    assert common.cv_bacc(F, y) == pytest.approx(expected.mean())


def test_backbone_features_split_the_featurizer_output_by_layer(common, small_breast):
    from sklearn_cae import BackboneFeaturizer

    X, _ = small_breast
    X = X[:4]
    per_layer = common.backbone_features(X, ["blocks.1", "blocks.3"], image_size=32)
    assert list(per_layer) == ["blocks.1", "blocks.3"]
    for layer, F in per_layer.items():
        alone = BackboneFeaturizer(layer=layer, image_size=32, balance_blocks=False).fit_transform(
            X
        )
        np.testing.assert_allclose(F, alone, rtol=1e-5, atol=1e-6)


def test_accuracy_fine_tunes_with_the_finetune_benchmarks_loop(accuracy, monkeypatch):
    """One fine-tuning implementation: accuracy.py's rows come from finetune.py's run."""
    import torch

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(6, 16, 16), dtype=np.uint8)
    y = np.array([0, 1, 0, 1, 0, 1])
    data = accuracy.EvaluationSet(X=X, y=y, splits=[], n_classes=2)
    config = accuracy.BenchmarkConfig.from_argv(["--quick", "--device", "cpu", "--ft-lr", "0.01"])
    work = accuracy.DatasetWork(data, config)
    torch.testing.assert_close(work.network_images, accuracy.finetune.resized_images(X, 32))
    calls = []

    def run(images, y_train, test_images, y_test, n_classes, seed, flip, recipe, quick, device):
        calls.append((images, y_train, test_images, y_test, n_classes, seed, flip, recipe))
        return {"acc": 0.5, "bacc": 0.25, "auc": 1.0, "probe": {}, "seconds": 3.0}

    monkeypatch.setattr(accuracy.finetune, "fine_tune_run", run)
    train, test = np.array([0, 1, 2, 3]), np.array([4, 5])
    assert accuracy.fine_tune("retinamnist", work, train, test, seed=7) == {
        "acc": 0.5,
        "bacc": 0.25,
        "auc": 1.0,
    }
    ((images, y_train, test_images, y_test, k, seed, flip, recipe),) = calls
    torch.testing.assert_close(images, work.network_images[:4])
    torch.testing.assert_close(test_images, work.network_images[4:])
    assert y_train.tolist() == [0, 1, 0, 1] and y_test.tolist() == [0, 1]
    assert (k, seed, flip) == (2, 7, True)
    assert recipe == {**accuracy.finetune.RECIPE, "image_size": 32, "head_lr": 0.01}


def test_one_fine_tuning_loop_in_the_benchmarks():
    training = re.compile(r"NeuralNetClassifier|\.backward\(|optimizer\.step\(")
    holders = {
        path.name
        for path in BENCHMARKS.glob("*.py")
        if training.search(path.read_text()) and path.name != "speed.py"  # its CPU burner
    }
    assert holders == {"finetune.py"}


def test_benchmarks_share_one_copy_of_each_step(accuracy):
    from sklearn_cae.datasets import stratified_subset

    ablation = load_benchmark("ablation")
    signals = load_benchmark("signals")
    assert accuracy.cv_bacc is ablation.cv_bacc is signals.cv_bacc
    assert accuracy.eval_features is ablation.eval_features is signals.eval_features
    assert accuracy.stratified_subset is signals.stratified_subset is stratified_subset
    assert accuracy.backbone_features is signals.backbone_features


def test_benchmarks_call_no_private_name_of_another_module():
    private_use = re.compile(r"\b(?!self\b|cls\b)[A-Za-z]\w*\._[a-z]\w*|import _|import .*\b_[a-z]")
    offences = [
        f"{path.name}: {line.strip()}"
        for path in BENCHMARKS.glob("*.py")
        for line in path.read_text().splitlines()
        if private_use.search(line.split("#")[0])
    ]
    assert offences == []


def test_cost_profile_reads_the_data_options(capsys):
    cae_cost = load_benchmark("cae_cost")
    with pytest.raises(SystemExit):
        cae_cost.main(["--help"])
    assert "--medmnist-root" in capsys.readouterr().out


def test_cost_profile_stages_name_existing_functions():
    import skorch
    import torch.utils.data

    import sklearn_cae

    cae_cost = load_benchmark("cae_cost")
    packages = [sklearn_cae, skorch, torch.utils.data]
    folders = [Path(package.__file__).parent for package in packages]
    for stage, suffix, name in cae_cost.STAGES:
        sources = [
            (folder / suffix).read_text() for folder in folders if (folder / suffix).exists()
        ]
        assert any(re.search(rf"\bdef {name}\(", text) for text in sources), (stage, suffix, name)


# ------------------------------------------------------------------- ablation.py
def test_ablation_trains_with_the_featurizers_defaults(medmnist_root):
    from sklearn_cae import CAETransferFeaturizer

    ablation = load_benchmark("ablation")
    defaults = CAETransferFeaturizer().get_params()
    settings = ablation.autoencoder_settings({"bottleneck": 64}, quick=False)
    assert settings["bottleneck"] == 64
    for key in ("layer_sizes", "noise", "sparsity", "lr", "max_epochs", "batch_size"):
        assert settings[key] == defaults[key], key
    assert settings["net_params"] == defaults["cae_params"]
    assert "device" not in settings and "random_state" not in settings
    assert ablation.autoencoder_settings({}, quick=True)["max_epochs"] == 2
    assert set(ablation.STUDIES) == set(ablation.STUDY_RUNNERS) == set(ablation.OUTPUT_FILES)


def test_ablation_keeps_the_raw_maps_of_the_layers_asked_for(medmnist_root):
    ablation = load_benchmark("ablation")
    config = ablation.AblationConfig.from_argv(
        ["--quick", "--device", "cpu", "--medmnist-root", str(medmnist_root)]
    )
    data = ablation.ablation_data("breastmnist", config)[0]
    maps, pooled = ablation.ablation_maps(data, config, raw_layers=("blocks.4",))
    assert list(maps) == ["blocks.4"] and maps["blocks.4"].shape[0] == len(data.y)
    assert "conv_head" in pooled and len(pooled["blocks.4"]) == len(data.y)


def test_ablation_standardizes_as_before_up_to_float16():
    import torch

    ablation = load_benchmark("ablation")
    maps = (torch.randn(20, 3, 4, 4) * torch.tensor([1.0, 5.0, 0.0]).view(1, 3, 1, 1) + 2).half()
    fit = np.arange(12)
    train = maps[fit].double()
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    var = train.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
    before = ((maps.double() - mean) / std).half().numpy()  # the formula of accuracy.py
    now = ablation.standardized(maps, fit)
    assert now.dtype == np.float16
    np.testing.assert_allclose(now.astype(np.float32), before.astype(np.float32), atol=4e-3)


@pytest.mark.slow
def test_quick_sparse_ablation(medmnist_root, tmp_path):
    ablation = load_benchmark("ablation")
    argv = ["--quick", "--device", "cpu", "--medmnist-root", str(medmnist_root)]
    ablation.main([*argv, "--set", "sparse", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "accuracy.ablation_sparse.json").read_text())["breastmnist"]
    for key in ablation.SPARSE_CAES:
        for name in (f"code {key}", f"code {key} + backbone blocks.4 avg"):
            assert 0.0 <= results[name]["cv_bacc"] <= 1.0
            assert 0.0 <= results[name]["bacc"] <= 1.0
    assert "backbone blocks.4 avg" in results


# -------------------------------------------------------------------- signals.py
@pytest.mark.slow
def test_quick_training_signals_benchmark(medmnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    signals = load_benchmark("signals")
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


@pytest.mark.slow
def test_quick_training_signals_on_test_split(medmnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    signals = load_benchmark("signals")
    argv = ["--quick", "--on-test", "--datasets", "breastmnist", "--seeds", "1"]
    argv += ["--fractions", "1.0", "--configs", "backbone,defaults"]
    signals.main([*argv, "--json", str(tmp_path / "t.json"), "--out", str(tmp_path / "t.md")])
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [len(r["folds"]) for r in rows] == [1, 1]  # one split: train -> test
    assert "test splits" in (tmp_path / "t.md").read_text()


@pytest.mark.slow
def test_signals_computes_backbone_features_once_per_data_set(medmnist_root, tmp_path):
    signals = load_benchmark("signals")
    calls = []
    features = signals.backbone_features

    def counted(X, *args, **kwargs):
        calls.append(len(X))
        return features(X, *args, **kwargs)

    signals.backbone_features = counted
    argv = ["--quick", "--datasets", "breastmnist", "--seeds", "2", "--fractions", "1.0,0.5"]
    argv += ["--configs", "backbone", "--medmnist-root", str(medmnist_root)]
    signals.main([*argv, "--json", str(tmp_path / "b.json"), "--out", str(tmp_path / "b.md")])
    rows = json.loads((tmp_path / "b.json").read_text())
    assert len(rows) == 4 and calls == [24]  # 2 fractions x 2 seeds, one extraction


def test_signals_table_is_rewritten_from_the_saved_rows(tmp_path):
    signals = load_benchmark("signals")
    for stem, on_test in (("signals", False), ("signals_test", True)):
        signals.report(RESULTS / f"{stem}.json", tmp_path / f"{stem}.md", on_test)
        assert (tmp_path / f"{stem}.md").read_text() == (RESULTS / f"{stem}.md").read_text()


# ------------------------------------------------------------------ gpu_check.py
@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    """The CUDA check's code path, run on the CPU so that a GPU session finds it working.

    On the CPU the "CUDA" features and the reference (the featurizer's pickled CPU
    copy) come from the same fitted featurizer on the same device: this run proves the
    script runs end to end and writes its tables, not that any two devices agree.
    """
    gpu_check = load_benchmark("gpu_check")
    out = tmp_path / "gpu_check.md"
    small = ["--n", "8", "--n-agree", "8", "--size", "32", "--batch-size", "8", "--repeats", "1"]
    assert gpu_check.main(["--device", "cpu", *small, "--out", str(out)]) == 0
    text = out.read_text()
    assert "Agreement within tolerance: yes" in text
    assert "CAE transform" in text and "BackboneFeaturizer.transform" in text


@pytest.mark.slow
def test_gpu_check_agreement_against_independent_references(monkeypatch):
    """:func:`check_agreement` against featurizers fitted again, independently, on the CPU.

    Fitted with the same seed they must agree (the CPU fit is reproducible, so the
    pickled copy is not what makes the dry run agree); with another seed the CAE's
    features differ, and the check must say so. Only the pretrained backbone: a
    ``weights=None`` backbone draws new random weights at each fit.
    """
    from sklearn.base import clone

    gpu_check = load_benchmark("gpu_check")
    monkeypatch.setattr(gpu_check, "BACKBONES", [("efficientnet_lite0", "DEFAULT")])
    args = SimpleNamespace(size=32, batch_size=8)
    X = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    cpu = gpu_check.torch.device("cpu")

    def refitted(random_state):
        def reference(featurizer, X):
            params = {"device": "cpu"}
            if "random_state" in featurizer.get_params():
                params["random_state"] = random_state
            return clone(featurizer).set_params(**params).fit(X).transform(X)

        return reference

    def verdicts(random_state) -> tuple[bool, list[str]]:
        lines = []
        ok = gpu_check.check_agreement(X, args, cpu, lines.append, reference=refitted(random_state))
        rows = "\n".join(lines).splitlines()
        return ok, [row.split(" | ")[0][2:] for row in rows if row.endswith("| NO |")]

    assert verdicts(0) == (True, [])
    ok, failed = verdicts(1)
    assert not ok and failed == ["efficientnet_lite0 CAETransferFeaturizer"] * 2


# ---------------------------------------------------------------------- speed.py
@pytest.fixture(scope="module")
def speed():
    return load_benchmark("speed")


def test_speed_transform_goal_is_each_ratio_at_each_size(speed):
    goals = speed.transform_goals({128: {"a": 0.95, "b": 0.9}, 224: {"a": 0.89, "b": 1.2}})
    assert [met for _, _, met in goals] == [True, True, False, True]
    assert "at 224 px" in goals[2][0] and goals[2][1] == "0.89x"


def test_speed_search_goal_counts_backbone_images(speed):
    single = (1.0, 2.0, 100, 0.5)
    met = speed.search_goals({"one fit + transform (no cache)": single,
                              "GridSearchCV, cache (cold)": (9.0, 9.0, 150, 5.0)})  # fmt: skip
    missed = speed.search_goals({"one fit + transform (no cache)": single,
                                 "GridSearchCV, cache (cold)": (9.0, 9.0, 151, 0.1)})  # fmt: skip
    assert met[0][2] and not missed[0][2]
    assert met[0][1].startswith("1.50x (150 vs 100")


def _memory_rows(growth_cached, cpu_no_cache=(1.0, 4.0, 16.0)):
    ns, maps = (1000, 4000, 16000), (16.0, 62.0, 250.0)
    rows = [
        {"n": n, "cached": False, "maps_mib": m, "anon_growth_mib": 40 + m, "cpu": cpu}
        for n, m, cpu in zip(ns, maps, cpu_no_cache, strict=True)
    ]
    rows += [
        {"n": n, "cached": True, "maps_mib": m, "anon_growth_mib": g, "cpu": n / 1000}
        for n, m, g in zip(ns, maps, growth_cached, strict=True)
    ]
    return rows


def test_speed_memory_goals(speed):
    flat = speed.memory_goals(_memory_rows((30, 33, 41)))  # saved run: 5% of the maps
    assert [met for _, _, met in flat] == [True, True, True]
    assert "30 -> 41 MiB" in flat[0][1] and "(5%)" in flat[0][1]
    growing = speed.memory_goals(_memory_rows((30, 60, 90)))  # 26% of the maps
    assert [met for _, _, met in growing] == [False, True, True]
    superlinear = speed.memory_goals(_memory_rows((30, 33, 41), cpu_no_cache=(1.0, 4.0, 32.0)))
    assert [met for _, _, met in superlinear] == [True, False, True]
    assert superlinear[1][1] == "1.00 -> 1.00 -> 2.00 (2.00x)"
    overhead = speed.memory_goals(_memory_rows((30, 33, 41), cpu_no_cache=(2.0, 4.0, 16.0)))
    assert [met for _, _, met in overhead] == [True, True, True]  # dearer small N is fine


def test_speed_exits_non_zero_on_a_missed_goal(speed, monkeypatch, tmp_path):
    def section(goal_met):
        return lambda *args: [("a goal", "measured", goal_met)]

    out = tmp_path / "speed.md"
    monkeypatch.setattr(speed, "section_3", section(True))
    assert speed.main(["--sections", "3", "--out", str(out)]) == 0
    assert "Goals met: 1 of 1." in out.read_text()
    monkeypatch.setattr(speed, "section_3", section(False))
    assert speed.main(["--sections", "3", "--out", str(out)]) == 1
    assert "Goals met: 0 of 1; missed: a goal." in out.read_text()


# ----------------------------------------------------------------------- scale.py
def _scale_row(**change):
    row = {
        "n": 2000, "cold_s": 100.0, "cold_rss": 1.2, "warm_s": 30.0, "warm_identical": True,
        "was_killed": True, "resumed_s": 70.0, "resumed_identical": True, "left_beside": [],
        "cache_mib": 10.0, "cap_mib": 5.0, "capped_mib": 5.1, "files_rate": 90.0,
        "bare_rate": 100.0,
    }  # fmt: skip
    return {**row, **change}


def test_scale_report_judges_every_goal():
    scale = load_benchmark("scale")
    text, passed = scale.report([_scale_row()], threads="1")
    assert passed and "| N | cold s | img/s |" in text and "| 2,000 | 100 | 20 |" in text
    assert text.count("| yes |") == 5 and "| no |" not in text
    text, passed = scale.report([_scale_row(), _scale_row(n=4000, warm_identical=False)], "1")
    assert not passed and text.count("| no |") == 1
    assert "## Growth with N, extrapolated to 100,000 files" in text


# ---------------------------------------------------------------------- export.py
def test_export_table_formats_each_kind_of_value():
    export = load_benchmark("export")
    assert export.cell("labels agree (same uint8 input)", 0.99871) == "99.87%"
    assert export.cell("max feature difference (relative)", 0.000123) == "1.2e-04"
    assert export.cell("graph MB", 12.34) == "12.3" and export.cell("data set", "x") == "x"


# ---------------------------------------------------------------- dask_scaling.py
def test_dask_goals_compare_every_run_with_the_reference():
    dask_scaling = load_benchmark("dask_scaling")

    def search(best, scores):
        results = {f"split{i}_test_score": np.array(scores) + i for i in range(3)}
        return SimpleNamespace(best_params_=best, cv_results_=results)

    reference = search({"b": 16}, [0.5, 0.6])
    same = {
        "in-process": [{"search": reference}],
        "cluster": [{"search": search({"b": 16}, [0.5, 0.6])}],
    }
    assert [met for _, _, met in dask_scaling.goals(same, reference)] == [True, True]
    other_best = {**same, "cluster": [{"search": search({"b": 32}, [0.5, 0.6])}]}
    verdict = dask_scaling.goals(other_best, reference)
    assert [met for _, _, met in verdict] == [False, True] and "{'b': 32}" in verdict[0][1]
    other_scores = {**same, "cluster": [{"search": search({"b": 16}, [0.5, 0.61])}]}
    verdict = dask_scaling.goals(other_scores, reference)
    assert [met for _, _, met in verdict] == [True, False] and verdict[1][1] == "1 of 2 runs"


# ------------------------------------------------------------------ demo_time.py
def test_demo_time_judges_the_median_and_the_table(tmp_path):
    demo_time = load_benchmark("demo_time")
    output = tmp_path / "demo_time.md"
    # A stand-in for the demo: prints a table whose last column (seconds) varies.
    table = "import time; print('| method | seconds |'); print(f'| a | {time.time()} |')"
    tiny = ["--output", str(output), "--command", sys.executable, "-c", table]
    assert demo_time.main(["--repeats", "2", "--goal-seconds", "60", *tiny]) == 0
    saved = json.loads(output.with_suffix(".json").read_text())
    assert [run["table"] for run in saved["runs"]] == [["| method |", "| a |"]] * 2
    text = output.read_text()
    assert (
        "| median wall time <= 60 s |" in text
        and "| the same table on every run | yes | yes |" in text
    )
    assert demo_time.main(["--repeats", "1", "--goal-seconds", "0", *tiny]) == 1
    assert "| no |" in output.read_text()
    varying = "import random; print(f'| {random.random()} | 1 |')"
    command = ["--output", str(output), "--command", sys.executable, "-c", varying]
    assert demo_time.main(["--repeats", "2", *command]) == 1
    assert "| the same table on every run | no | no |" in output.read_text()
