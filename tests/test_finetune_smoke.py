"""Smoke run of the fine-tuning baseline (benchmarks/finetune.py --quick) and its pieces:
the warm start, the skorch net's optimizer groups, schedule and early stopping."""

from __future__ import annotations

import importlib.util
import json
import sys
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
    assert [epoch for epoch, _, _ in rows[1]["val_history"]] == [0, 1]  # then each epoch
    assert rows[0]["val_history"] == [] and rows[0]["best_step"] == rows[0]["steps"]
    saved = json.loads((out / "finetune.json").read_text())
    assert len(saved["rows"]) == 2 and saved["meta"]["recipe"]["image_size"] == 32
    table = (out / "finetune.md").read_text()
    assert "| data set | labels | runs |" in table
    assert "| breastmnist | 50% | 1 | 12 |" in table
    assert "| breastmnist | 100% | 1 | 24 |" in table
    assert "## Recipe" in table and "## Not run" in table


def test_labelled_images_match_the_accuracy_benchmark(finetune, medmnist_root):
    path = BENCHMARK.with_name("accuracy.py")
    spec = importlib.util.spec_from_file_location("accuracy_benchmark_ft", path)
    accuracy = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = accuracy  # its config is a dataclass, looked up there
    spec.loader.exec_module(accuracy)
    assert finetune.stratified_subset is accuracy.stratified_subset  # the package's rule
    assert Path(accuracy.finetune.__file__) == BENCHMARK  # accuracy.py fine-tunes with it
    # The label counts of the saved label-efficiency rows are those of the rule.
    _, y = finetune.load_split("breastmnist", "train", medmnist_root=medmnist_root)
    saved = json.loads((BENCHMARK.parent / "results" / "accuracy.json").read_text())["rows"]
    label_rows = [r for r in saved if r.get("label_efficiency") and r["dataset"] == "breastmnist"]
    assert label_rows
    for row in label_rows:
        labelled = finetune.stratified_subset(y, row["fraction"], random_state=row["seed"])
        assert len(labelled) == row["n_labels"]


def test_network_and_normalization_are_the_packages(finetune):
    from sklearn_cae.backbones import load_backbone

    spec = load_backbone("efficientnet_lite0")
    assert finetune.input_normalization() == (tuple(spec.mean), tuple(spec.std))
    network = finetune.FineTuningNetwork(3)
    assert network.head is network.model.get_classifier() and network.head.out_features == 3
    weight = next(p for p in network.parameters() if p.ndim == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_network_input_is_normalized_as_the_featurizers_feed_lite0(finetune, monkeypatch):
    images = torch.rand(2, 1, 8, 8)
    mean, std = finetune.input_normalization()
    expected = (images.expand(-1, 3, -1, -1) - mean[0]) / std[0]
    torch.testing.assert_close(finetune.normalize(images), expected)
    assert finetune.normalize(images).is_contiguous(memory_format=torch.channels_last)
    # Read on each call, not a constant of its own.
    monkeypatch.setattr(finetune, "input_normalization", lambda *args: ((0.25,) * 3, (2.0,) * 3))
    torch.testing.assert_close(
        finetune.normalize(images), (images.expand(-1, 3, -1, -1) - 0.25) / 2
    )


def test_training_mode_keeps_batch_norm_statistics_frozen(finetune):
    network = finetune.FineTuningNetwork(2)
    network.train()
    norms = [m for m in network.modules() if "BatchNorm" in type(m).__name__]
    # eval() reaches the norms' own children (timm's fused activation) too.
    frozen = {id(child) for m in norms for child in m.modules()}
    assert norms and not any(m.training for m in norms)
    assert all(m.training for m in network.modules() if id(m) not in frozen)
    network.eval()
    assert not any(m.training for m in network.modules())
    unfrozen = finetune.FineTuningNetwork(2, freeze_bn_stats=False).train()
    assert all(m.training for m in unfrozen.modules())


@pytest.mark.parametrize("n_classes", [2, 3])
def test_warm_start_copies_the_linear_probe_into_the_head(finetune, n_classes):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), 8)
    # Images whose brightness depends on the class, so the probe has something to learn.
    X = (rng.random((len(y), 32, 32)) * 100 + 60 * y[:, None, None]).astype(np.uint8)
    images = finetune.resized_images(X, 32)
    torch.manual_seed(0)
    network = finetune.FineTuningNetwork(n_classes)
    scaler, probe = finetune.warm_start(network, images, y, finetune.RECIPE, seed=0)

    coef, bias = finetune.probe_head_weights(scaler, probe, n_classes)
    np.testing.assert_allclose(network.head.weight.detach().numpy(), coef, rtol=0, atol=0)
    np.testing.assert_allclose(network.head.bias.detach().numpy(), bias, rtol=0, atol=0)
    # The network now predicts what the probe predicts on the frozen features.
    expected = probe.predict_proba(scaler.transform(network.pooled_features(images)))
    network.eval()
    with torch.inference_mode():
        proba = network(images).softmax(1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-4)


def test_optimizer_groups_head_lr_and_no_decay_on_one_dimensional_parameters(finetune):
    recipe = finetune.RECIPE
    network = finetune.FineTuningNetwork(2)
    y = np.array([0, 1] * 4)
    net = finetune.fine_tuning_net(
        network, y, recipe, seed=0, flip=False, epochs=1, per_epoch=1
    ).initialize()
    head = {id(p) for p in network.head.parameters()}
    seen = set()
    for group in net.optimizer_.param_groups:
        for p in group["params"]:
            seen.add(id(p))
            lr = recipe["head_lr"] * (1 if id(p) in head else recipe["backbone_lr_ratio"])
            decay = recipe["weight_decay"] if p.ndim > 1 else 0.0
            assert group["weight_decay"] == decay and group["lr"] == pytest.approx(lr)
    assert seen == {id(p) for p in network.parameters()}


def test_schedule_is_whole_epochs_within_the_step_budget(finetune):
    recipe = finetune.RECIPE  # 30 epochs, clipped to [60, 150] steps of 32 images
    assert finetune.schedule(55, recipe, quick=False) == (30, 2)  # 60 steps
    assert finetune.schedule(941, recipe, quick=False) == (5, 30)  # 150 steps
    assert finetune.schedule(376, recipe, quick=False) == (12, 12)  # 150 -> 144 steps
    assert finetune.schedule(376, recipe, quick=True) == (1, 12)
    factor = finetune.warmup_cosine(total=10, warmup=2)
    assert [round(factor(step), 3) for step in (0, 1, 2, 6, 9)] == [0.5, 1.0, 1.0, 0.5, 0.038]


def _tiny_net(finetune, lr: float, flip_training_labels: bool):
    """A 2-feature linear classifier that starts perfect on its validation data."""
    from skorch import NeuralNetClassifier
    from skorch.callbacks import EpochScoring
    from skorch.dataset import Dataset
    from skorch.helper import predefined_split

    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 20)
    X = (rng.normal(size=(40, 2)) + 3 * (2 * y[:, None] - 1)).astype(np.float32)
    module = torch.nn.Linear(2, 2)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
        module.bias.zero_()
    valid_bacc = EpochScoring("balanced_accuracy", lower_is_better=False, name="valid_bacc")
    stopping = finetune.EarlyStoppingFromStart(
        monitor="valid_bacc", lower_is_better=False, patience=2, threshold=0.0,
        threshold_mode="abs", load_best=True,
    )  # fmt: skip
    net = NeuralNetClassifier(
        module,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        lr=lr,
        max_epochs=6,
        batch_size=40,
        train_split=predefined_split(Dataset(X, y)),
        callbacks=[("valid_bacc", valid_bacc), ("early_stopping", stopping)],
        verbose=0,
    )
    net.fit(X, 1 - y if flip_training_labels else y)
    return net, stopping, module


def test_early_stopping_keeps_the_start_when_no_epoch_beats_it(finetune):
    start = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    # Training on flipped labels ruins the validation score: the start is kept.
    net, stopping, module = _tiny_net(finetune, lr=1.0, flip_training_labels=True)
    assert stopping.start_["valid_bacc"] == 1.0 and stopping.best_epoch_ == 0
    assert len(net.history) == 2  # patience 2: stopped after two epochs without a gain
    assert net.history[-1, "valid_bacc"] < 1.0
    torch.testing.assert_close(module.weight.detach(), start)
    # A tie is not a gain either: with lr 0 nothing changes and training stops as early.
    net, stopping, _ = _tiny_net(finetune, lr=0.0, flip_training_labels=False)
    assert stopping.best_epoch_ == 0 and len(net.history) == 2


def test_fine_tuning_run_takes_its_steps_from_skorch(finetune):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 10)
    X = (rng.random((len(y), 32, 32)) * 100 + 60 * y[:, None, None]).astype(np.uint8)
    images = finetune.resized_images(X, 32)
    recipe = {**finetune.RECIPE, "image_size": 32, "batch_size": 8, "min_steps": 6, "max_steps": 6}
    recipe["min_per_class_for_val"] = 10**9  # fixed schedule: 6 steps of 3 batches
    row = finetune.fine_tune_run(images, y, images, y, 2, 0, True, recipe)
    assert (row["epochs"], row["steps"], row["planned_steps"]) == (2, 6, 6)
    assert row["n_train"] == 20 and not row["early_stopping"] and row["val_history"] == []
