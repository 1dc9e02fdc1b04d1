"""Saving without pickles of torch classes: skops and joblib files, their bad inputs, cards."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile

import joblib
import numpy as np
import pytest
import skops.io
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer, persistence
from sklearn_cae._state import InconsistentReleaseWarning

from .helpers import FAST, FAST_CAE


def _pipeline(featurizer) -> Pipeline:
    return Pipeline([("feat", featurizer), ("scale", StandardScaler()), ("clf", SVC())])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(24, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def labels():
    return np.arange(24) % 2


@pytest.fixture(scope="module")
def cae_pipe(images, labels):
    return _pipeline(CAETransferFeaturizer(**FAST_CAE)).fit(images, labels)


@pytest.fixture(scope="module")
def skops_file(cae_pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.skops"
    persistence.dump(cae_pipe, path)
    return path


FEATURIZERS = {
    "cae, two layers, supervised": lambda: CAETransferFeaturizer(
        **{**FAST_CAE, "layer": ["blocks.2", "blocks.4"], "supervision": 1.0}
    ),
    "cae, code and maps, spp": lambda: CAETransferFeaturizer(
        **{**FAST_CAE, "include_backbone": True, "pooling": "spp"}
    ),
    "backbone": lambda: BackboneFeaturizer(**FAST, layer=["blocks.3", "blocks.4"]),
}


@pytest.mark.parametrize("make", FEATURIZERS.values(), ids=FEATURIZERS.keys())
@pytest.mark.parametrize("suffix", [".skops", ".joblib"])
def test_round_trip_transforms_bit_for_bit(make, suffix, images, labels, tmp_path):
    featurizer = make().fit(images, labels)
    expected = featurizer.transform(images)
    path = tmp_path / f"model{suffix}"
    persistence.dump(featurizer, path)
    restored = persistence.load(path)
    np.testing.assert_array_equal(restored.transform(images), expected)
    assert restored.layers_ == featurizer.layers_
    for net, original in zip(
        getattr(restored, "cae_", []), getattr(featurizer, "cae_", []), strict=True
    ):
        assert list(net.history[:, "train_loss"]) == list(original.history[:, "train_loss"])


def test_pickles_hold_no_torch_class(cae_pipe, images):
    data = pickle.dumps(cae_pipe)
    assert b"torch" not in data and b"skorch" not in data
    np.testing.assert_array_equal(
        pickle.loads(data).decision_function(images), cae_pipe.decision_function(images)
    )


def test_skops_file_needs_trust_for_the_package_types_only(skops_file):
    asked = skops.io.get_untrusted_types(file=skops_file)
    assert asked == [
        "sklearn_cae.featurizer.CAETransferFeaturizer",
        "sklearn_cae.pooling.BlockScaler",
    ]
    assert set(asked) <= set(persistence.TRUSTED_TYPES)


def test_trusted_types_name_existing_classes():
    import importlib

    from sklearn_cae.pooling import BlockScaler
    from sklearn_cae.semi_supervised import LabelledOnly

    package = (BackboneFeaturizer, CAETransferFeaturizer, BlockScaler, LabelledOnly)
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in package}
    assert names <= set(persistence.TRUSTED_TYPES)
    for name in persistence.TRUSTED_TYPES:  # every entry is a class that exists
        module, _, qualname = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), qualname), type), name


def test_skops_load_in_a_fresh_process_trusting_only_the_package(
    skops_file, cae_pipe, images, tmp_path
):
    """No network, no GPU, nothing trusted but TRUSTED_TYPES: the same scores bit for bit."""
    np.save(tmp_path / "X.npy", images)
    script = textwrap.dedent(
        f"""
        import socket, numpy as np, skops.io
        def no_network(*args, **kwargs):
            raise RuntimeError("network access attempted")
        socket.socket.connect = no_network
        from sklearn_cae.persistence import TRUSTED_TYPES
        pipe = skops.io.load({str(skops_file)!r}, trusted=list(TRUSTED_TYPES))
        X = np.load({str(tmp_path / "X.npy")!r})
        np.save({str(tmp_path / "out.npy")!r}, pipe.decision_function(X))
        """
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "SKLEARN_CAE_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), cae_pipe.decision_function(images))


def test_loading_leaves_torch_random_state_alone(skops_file):
    before = torch.random.get_rng_state()
    persistence.load(skops_file)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_own_module_backbone_pickles_but_is_refused_by_skops(images, tmp_path):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU())
    featurizer = BackboneFeaturizer(backbone=module, layer="1", **FAST).fit(images)
    persistence.dump(featurizer, tmp_path / "own.joblib")
    restored = persistence.load(tmp_path / "own.joblib")
    np.testing.assert_array_equal(restored.transform(images), featurizer.transform(images))
    with pytest.raises(ValueError, match=r"own torch module \(Sequential\).*\.joblib"):
        persistence.dump(featurizer, tmp_path / "own.skops")
    assert not (tmp_path / "own.skops").exists()


def test_unknown_extension(cae_pipe, tmp_path):
    with pytest.raises(ValueError, match=r"\.skops or \.joblib"):
        persistence.dump(cae_pipe, tmp_path / "model.pkl")


# ---------------------------------------------------------------------------- bad input
def _rewrite_schema(source, target, edit) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "schema.json":
                data = edit(data.decode()).encode()
            new.writestr(item, data)


def test_untrusted_type_is_refused_by_name(skops_file, tmp_path):
    tampered = tmp_path / "tampered.skops"

    def ask_for_os_system(schema: str) -> str:
        return schema.replace('"__module__": "sklearn.svm._classes"', '"__module__": "os"', 1)

    _rewrite_schema(skops_file, tampered, ask_for_os_system)
    with pytest.raises(persistence.UntrustedTypeError, match=r"'os\.SVC'"):
        persistence.load(tampered)


@pytest.mark.parametrize("suffix", [".skops", ".joblib"])
def test_truncated_file_gives_one_clear_error(cae_pipe, suffix, tmp_path):
    path = tmp_path / f"model{suffix}"
    persistence.dump(cae_pipe, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(persistence.ModelFileError, match="truncated, damaged or was changed"):
        persistence.load(path)


def test_tampered_array_gives_one_clear_error(skops_file, tmp_path):
    tampered = tmp_path / "tampered.skops"
    with zipfile.ZipFile(skops_file) as old, zipfile.ZipFile(tampered, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            new.writestr(item, data[:-8] if item.filename.endswith(".npy") else data)
    with pytest.raises(persistence.ModelFileError, match="Cannot load the model"):
        persistence.load(tampered)


@pytest.mark.parametrize("suffix", [".skops", ".joblib"])
def test_model_of_another_release_says_which(cae_pipe, suffix, tmp_path, monkeypatch, images):
    from sklearn_cae import _state

    path = tmp_path / f"model{suffix}"
    monkeypatch.setattr(_state, "__version__", "0.0.9")
    persistence.dump(cae_pipe, path)
    monkeypatch.undo()
    assert persistence.saved_by(path) == "0.0.9"
    with pytest.warns(InconsistentReleaseWarning, match="saved by sklearn-cae 0.0.9"):
        restored = persistence.load(path)
    np.testing.assert_array_equal(
        restored.decision_function(images), cae_pipe.decision_function(images)
    )


def test_model_of_another_release_that_cannot_load_says_which(cae_pipe, tmp_path, monkeypatch):
    from sklearn_cae import _state

    path = tmp_path / "model.joblib"
    monkeypatch.setattr(_state, "__version__", "0.0.9")
    # A release whose state the current one cannot rebuild: a weight less.
    monkeypatch.setattr(_state, "_arrays", lambda module: {})
    persistence.dump(cae_pipe, path)
    monkeypatch.undo()
    with pytest.raises(persistence.ModelFileError, match=r"saved by sklearn-cae 0\.0\.9"):
        persistence.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file"):
        persistence.load(tmp_path / "none.skops")


# --------------------------------------------------------------------------- model card
def test_model_card(cae_pipe, tmp_path):
    card = tmp_path / "README.md"
    persistence.write_model_card(
        cae_pipe,
        card,
        training_set={"source": "breastmnist", "images": 24},
        cv_scores={"balanced accuracy": 0.8125},
        model_file="model.skops",
    )
    text = card.read_text()
    for expected in (
        "Backbone and weights",
        "efficientnet_lite0",
        "blocks.4",
        "breastmnist",
        "0.8125",
        "sklearn-cae",
        "skorch",
        "feat__bottleneck",
        "sklearn_cae.featurizer.CAETransferFeaturizer",
    ):
        assert expected in text, expected
    assert not re.search(r"\|\s*steps\s*\|", text)  # no estimator reprs as parameters


def test_joblib_files_load_with_plain_joblib(cae_pipe, images, tmp_path):
    persistence.dump(cae_pipe, tmp_path / "model.joblib")
    restored = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(
        restored.decision_function(images), cae_pipe.decision_function(images)
    )
