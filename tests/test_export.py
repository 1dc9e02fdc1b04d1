"""ONNX export: one graph that agrees with the pipeline, run where torch cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.export import ExportError, export_onnx, read_metadata, resize_images

from .helpers import FAST, FAST_CAE

# Run in a subprocess: torch cannot be imported there.
_NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"{name} is blocked: this process deploys without torch")
sys.meta_path.insert(0, NoTorch())
"""


@pytest.fixture(scope="module")
def exported(breast, tmp_path_factory):
    """A CAE pipeline fitted on 200 BreastMNIST training images, and its graph."""
    (X, y), _ = breast
    rng = np.random.default_rng(0)
    train = rng.choice(len(X), 200, replace=False)
    featurizer = CAETransferFeaturizer(
        image_size=64, max_epochs=3, layer_sizes=(32,), bottleneck=32, random_state=0
    )
    pipe = Pipeline([("feat", featurizer), ("scale", StandardScaler()), ("clf", SVC())])
    pipe.fit(X[train], y[train])
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(pipe, path)
    return pipe, path


def test_graph_agrees_with_predict_where_torch_cannot_be_imported(exported, breast, tmp_path):
    pipe, path = exported
    _, (X_test, _) = breast
    np.save(tmp_path / "X.npy", X_test)
    script = _NO_TORCH + textwrap.dedent(
        f"""
        import numpy as np, onnxruntime
        from sklearn_cae.export import read_metadata, resize_images
        session = onnxruntime.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        meta = read_metadata(session)
        images = np.load({str(tmp_path / "X.npy")!r})
        images = resize_images(images, meta["image_size"], dtype=meta["input_dtype"])
        label, scores, features = session.run(None, {{"images": images}})
        assert "torch" not in sys.modules
        np.savez({str(tmp_path / "out.npz")!r}, label=label, features=features)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    out = np.load(tmp_path / "out.npz")
    # Against the pipeline on the images as stored (28 px, resized by the featurizer):
    # the float32 input leaves only float rounding between the two.
    agreement = np.mean(out["label"] == pipe.predict(X_test))
    assert agreement >= 0.995, f"{agreement:.4f} of the test labels agree"
    expected = pipe[0].transform(X_test)
    error = np.abs(out["features"] - expected).max() / np.abs(expected).max()
    assert error <= 1e-3, f"features differ by {error:.2e} of the largest"


def test_metadata_and_outputs(exported):
    _, path = exported
    meta = read_metadata(path)
    assert meta["image_size"] == [64, 64] and meta["channels"] == 1
    assert meta["input_dtype"] == "float32" and "dtype='float32'" in meta["resize"]
    assert meta["class_names"] == [0, 1] and meta["input_layout"] == "NHW"
    assert meta["outputs"] == ["label", "scores", "features"]
    assert meta["sklearn_cae_version"] == "0.1.0" and "resize_images" in meta["resize"]
    model = onnx.load(path)
    (graph_input,) = model.graph.input
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_uint8_input_stays_available(small_breast):
    X, y = small_breast
    pipe = Pipeline([("feat", BackboneFeaturizer(**FAST)), ("clf", SVC())]).fit(X, y)
    model = export_onnx(pipe, input_dtype="uint8")
    (graph_input,) = model.graph.input
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    session = onnxruntime.InferenceSession(model.SerializeToString())
    meta = read_metadata(session)
    assert meta["input_dtype"] == "uint8" and "rounded to uint8" in meta["resize"]
    images = resize_images(X, meta["image_size"], dtype="uint8")
    assert images.dtype == np.uint8
    # The pipeline on the same rounded images: only the rounding differs from X itself.
    np.testing.assert_array_equal(
        session.run(["label"], {"images": images})[0], pipe.predict(images)
    )
    with pytest.raises(ExportError, match="input_dtype must be one of"):
        export_onnx(pipe, input_dtype="float16")


def test_colour_input_and_logistic_regression(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    y = np.arange(20) % 2
    pipe = Pipeline(
        [("feat", BackboneFeaturizer(**FAST, pooling="spp")), ("clf", LogisticRegression())]
    ).fit(X, y)
    model = export_onnx(pipe)
    session = onnxruntime.InferenceSession(model.SerializeToString())
    label, probabilities, _ = session.run(None, {"images": resize_images(X, 32)})
    np.testing.assert_array_equal(label, pipe.predict(X))
    np.testing.assert_allclose(probabilities, pipe.predict_proba(X), atol=1e-4)
    assert read_metadata(session)["input_layout"] == "NHWC"


def test_featurizer_alone_gives_its_features(tmp_path):
    X = np.random.default_rng(1).integers(0, 256, size=(10, 32, 32), dtype=np.uint8)
    featurizer = CAETransferFeaturizer(**{**FAST_CAE, "layer": ["blocks.2", "blocks.4"]}).fit(X)
    session = onnxruntime.InferenceSession(export_onnx(featurizer).SerializeToString())
    (features,) = session.run(None, {"images": X.astype(np.float32)})
    expected = featurizer.transform(X)
    assert np.abs(features - expected).max() <= 1e-3 * np.abs(expected).max()


# ---------------------------------------------------------------------------- resizing
@pytest.mark.parametrize("shape", [(3, 28, 28), (2, 100, 90), (2, 50, 70, 3)])
@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-3), ("uint8", 0.5 + 1e-3)])
def test_resize_is_the_featurizers_up_to_rounding(shape, dtype, tolerance):
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    resized = resize_images(images, 64, dtype=dtype)
    unit = torch.from_numpy(images).float() / 255
    unit = unit.permute(0, 3, 1, 2) if unit.ndim == 4 else unit[:, None]
    expected = F.interpolate(unit, size=(64, 64), mode="bilinear", antialias=True)
    expected = expected.permute(0, 2, 3, 1).numpy() * 255
    expected = expected[..., 0] if len(shape) == 3 else expected
    assert resized.shape == expected.shape and resized.dtype == dtype
    assert np.abs(resized - expected).max() <= tolerance


def test_resize_takes_mixed_sizes_and_replicates_grey_among_colour():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(30, 40), dtype=np.uint8)
    colour = rng.integers(0, 256, size=(20, 20, 4), dtype=np.uint8)  # alpha dropped
    out = resize_images([grey, colour], 16)
    assert out.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(out[0, ..., 0], out[0, ..., 2])
    with pytest.raises(ValueError, match="uint8"):
        resize_images([grey.astype(np.float32)], 16)
    with pytest.raises(ValueError, match="dtype must be one of"):
        resize_images([grey], 16, dtype=np.float64)


# --------------------------------------------------------------------------- bad input
class _Doubler(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return 2 * X


def test_step_skl2onnx_cannot_convert_is_named(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, size=(12, 32, 32), dtype=np.uint8)
    pipe = Pipeline(
        [("feat", BackboneFeaturizer(**FAST)), ("double", _Doubler()), ("clf", SVC())]
    ).fit(X, np.arange(12) % 2)
    with pytest.raises(ExportError, match=r"Step 'double' \(_Doubler\) cannot be exported"):
        export_onnx(pipe, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


class _Gate(torch.nn.Module):
    """A user's layer whose Python control flow depends on the values of its input."""

    def forward(self, x):
        if x.mean() > 0:
            return x
        return -x


def test_layer_with_data_dependent_control_flow_fails_clearly():
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    model.conv1 = torch.nn.Sequential(_Gate(), model.conv1)
    X = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32), dtype=np.uint8)
    featurizer = BackboneFeaturizer(backbone=model, weights=None, layer="layer1", **FAST).fit(X)
    with pytest.raises(ExportError, match="control flow depends on the values") as info:
        export_onnx(featurizer)
    assert "test_export.py" in str(info.value)  # where it branches
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 600


def test_unfitted_or_foreign_pipelines_are_refused():
    with pytest.raises(ExportError, match="first step is one"):
        export_onnx(Pipeline([("clf", SVC())]))
    with pytest.raises(ExportError, match="not fitted"):
        export_onnx(Pipeline([("feat", BackboneFeaturizer()), ("clf", SVC())]))


def test_semi_supervised_pipeline_exports_its_labelled_classifier():
    from sklearn_cae.semi_supervised import make_pipeline

    rng = np.random.default_rng(2)
    X = rng.integers(0, 256, size=(24, 32, 32), dtype=np.uint8)
    y = np.arange(24) % 2
    y[::3] = -1  # unlabelled images: the classifier (LabelledOnly) never sees them
    pipe = make_pipeline(BackboneFeaturizer(**FAST), LogisticRegression()).fit(X, y)
    session = onnxruntime.InferenceSession(export_onnx(pipe).SerializeToString())
    label, probabilities, _ = session.run(None, {"images": X.astype(np.float32)})
    np.testing.assert_array_equal(label, pipe.predict(X))
    np.testing.assert_allclose(probabilities, pipe.predict_proba(X), atol=1e-4)
