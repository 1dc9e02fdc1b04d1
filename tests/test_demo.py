"""The demo: both labelling regimes, a progress line per method and fold, a table."""

from __future__ import annotations

from collections import Counter

import numpy as np

from sklearn_cae import demo
from sklearn_cae.cache import FeatureCache
from sklearn_cae.featurizer import BackboneFeaturizer, CAETransferFeaturizer

from .helpers import FAST, FAST_CAE


def test_demo_shows_the_defaults_no_recipe_needed():
    featurizers = demo.demo_featurizers(random_state=3)
    assert list(featurizers) == ["raw pixels + PCA", "BackboneFeaturizer", "CAETransferFeaturizer"]
    assert featurizers["BackboneFeaturizer"].get_params() == BackboneFeaturizer().get_params()
    cae = featurizers["CAETransferFeaturizer"]
    assert cae.get_params() == CAETransferFeaturizer(random_state=3).get_params()
    # The default featurizer is the one that uses the few labels it is given.
    assert cae.supervision == "auto"


def test_demo_featurizers_share_one_cache(tmp_path):
    cache = FeatureCache(tmp_path)
    featurizers = demo.demo_featurizers(cache=cache)
    assert featurizers["BackboneFeaturizer"].cache is cache
    assert featurizers["CAETransferFeaturizer"].cache is cache


def test_run_demo_prints_progress_and_an_honest_table(monkeypatch, capsys, small_breast):
    monkeypatch.setattr(demo, "load_medmnist", lambda name, split: small_breast)
    fitted_with, saves_at_fit = [], []

    class Recording(CAETransferFeaturizer):
        def fit_transform(self, X, y=None):
            fitted_with.append(None if y is None else np.asarray(y).copy())
            saves_at_fit.append(len(saved))
            return super().fit_transform(X, y)

    tiny = {
        "BackboneFeaturizer": BackboneFeaturizer(**FAST),
        "semi": Recording(**FAST_CAE),  # supervision="auto", the default
    }
    caches, saved, read = [], [], []

    def tiny_featurizers(random_state=0, cache=None):
        caches.append(cache)
        return {name: featurizer.set_params(cache=cache) for name, featurizer in tiny.items()}

    def spy(method, record):
        def wrapper(self, model, keys, *args):
            out = method(self, model, keys, *args)
            record.extend((model, key) for key in keys)
            return out

        return wrapper

    monkeypatch.setattr(demo, "demo_featurizers", tiny_featurizers)
    # Class-level spies: clone() deep-copies the cache handle, the folder is one.
    monkeypatch.setattr(FeatureCache, "save_many", spy(FeatureCache.save_many, saved))
    monkeypatch.setattr(FeatureCache, "load_many", spy(FeatureCache.load_many, read))
    rows = demo.run_demo(n_splits=2, label_fraction=0.2, n_jobs=1)  # spies see this process
    # One temporary cache for every featurizer, fold and regime: each image's backbone
    # maps are computed once, then read back.
    [cache] = caches
    assert isinstance(cache, FeatureCache)
    assert len(saved) == len(set(saved))
    per_model = Counter(model for model, _ in saved)  # the featurizers may tap other layers
    assert set(per_model.values()) == {len(small_breast[0])}
    assert len(read) > len(saved)
    # Stored before the first fold (fill_cache), so no fold's timing changes a map.
    assert saves_at_fit and set(saves_at_fit) == {len(saved)}
    assert not cache.location.exists()  # removed with the run
    out, err = capsys.readouterr()
    assert [(row[0], row[1]) for row in rows] == [
        ("BackboneFeaturizer", "all labels"),
        ("semi", "all labels"),
        ("BackboneFeaturizer", "20% labels"),
        ("semi", "20% labels"),
    ]
    for row in rows:
        assert 0 <= row[2] <= 1 and 0 <= row[4] <= 1
    assert err.count("fold 1/2") == 2 and err.count("fold 2/2") == 2
    n_images = len(small_breast[0])
    for name in ("BackboneFeaturizer", "semi"):  # the maps, before the folds
        assert f"{name}: backbone maps of {n_images} images (" in err
    # One progress line per method and fold, with the scores of both regimes.
    assert any(
        line.startswith("semi: fold 2/2: all labels: balanced acc. ") and "; 20% labels: " in line
        for line in err.splitlines()
    )
    assert "| semi" in out and "20% labels" in out
    # The table: a column per regime's labels, one row per method and regime.
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert [cell.strip() for cell in table[0].split("|")[1:-1]] == [
        *("method", "labels", "balanced acc.", "ROC AUC", "seconds")
    ]
    assert len(table) == 2 + len(rows)
    # The semi-supervised featurizer saw every training image of the fold, labelled in
    # the first regime and mostly unlabelled (-1) in the second; never a held-out label.
    assert len(fitted_with) == 4
    all_labels, few_labels = fitted_with[0], fitted_with[1]
    assert len(all_labels) == len(few_labels) and np.all(all_labels >= 0)
    assert 0.1 < np.mean(few_labels >= 0) < 0.3


def test_folds_in_parallel_give_the_same_scores(monkeypatch, capsys, small_breast):
    monkeypatch.setattr(demo, "load_medmnist", lambda name, split: small_breast)
    tiny = {"semi": CAETransferFeaturizer(**FAST_CAE)}  # seeded
    monkeypatch.setattr(
        demo,
        "demo_featurizers",
        lambda random_state=0, cache=None: {k: v.set_params(cache=cache) for k, v in tiny.items()},
    )
    one_by_one = demo.run_demo(n_splits=3, label_fraction=0.3, n_jobs=1)
    parallel = demo.run_demo(n_splits=3, label_fraction=0.3, n_jobs=2)
    # (method, regime, bacc mean, bacc std, AUC mean, AUC std): all but the seconds
    assert [row[:6] for row in parallel] == [row[:6] for row in one_by_one]
    err = capsys.readouterr().err
    folds = [
        line.split(":")[1].strip() for line in err.splitlines() if line.startswith("semi: fold")
    ]
    assert folds == ["fold 1/3", "fold 2/3", "fold 3/3"] * 2  # in fold order both times
