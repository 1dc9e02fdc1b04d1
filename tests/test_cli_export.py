"""``sklearn-cae export``: a saved model as an ONNX graph that onnxruntime runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_cae import BackboneFeaturizer, persistence
from sklearn_cae.cli import main
from sklearn_cae.export import read_metadata, resize_images

from .helpers import FAST


class _Doubler(TransformerMixin, BaseEstimator):
    """A step skl2onnx has no converter for."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return 2 * X


def _saved(tmp_path, small_breast, name: str, *steps) -> tuple[Pipeline, str]:
    X, y = small_breast
    pipe = Pipeline([("feat", BackboneFeaturizer(**FAST)), *steps, ("svc", SVC())]).fit(X, y)
    path = tmp_path / name
    persistence.dump(pipe, path)
    return pipe, str(path)


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sklearn-cae: error: "), lines
    return lines[0]


def test_export_writes_a_graph_that_onnxruntime_runs(tmp_path, small_breast, capsys):
    pipe, model = _saved(tmp_path, small_breast, "model.skops", ("scale", StandardScaler()))
    out = tmp_path / "model.onnx"
    assert main(["export", model, "-o", str(out)]) == 0
    assert "input images float32 ('n', 32, 32), outputs label, scores, features" in (
        capsys.readouterr().out
    )
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = read_metadata(session)
    X, _ = small_breast  # 28 px: resized outside the graph, as its metadata says
    images = resize_images(X, meta["image_size"], dtype=meta["input_dtype"])
    label, _, _ = session.run(None, {"images": images})
    np.testing.assert_array_equal(label, pipe.predict(X))


def test_uint8_colour_input_on_request(tmp_path, small_breast):
    _, model = _saved(tmp_path, small_breast, "model.joblib")
    out = tmp_path / "model.onnx"
    assert main(["export", model, "-o", str(out), "--input-dtype", "uint8", "--channels", "3"]) == 0
    (images,) = onnx.load(out).graph.input
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in images.type.tensor_type.shape.dim][1:] == [32, 32, 3]


def test_help_names_the_input_and_the_resize(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("MODEL", "--output", "--channels", "--input-dtype", "resize_images", "pickle"):
        assert words in text


def test_bad_exports_are_one_line(tmp_path, small_breast, capsys):
    _, model = _saved(tmp_path, small_breast, "model.joblib", ("double", _Doubler()))
    assert main(["export", model, "-o", str(tmp_path / "model.txt")]) == 1
    assert "must end in .onnx" in _one_error_line(capsys)
    assert main(["export", str(tmp_path / "missing.skops"), "-o", str(tmp_path / "m.onnx")]) == 1
    assert "no such model file" in _one_error_line(capsys)
    assert main(["export", model, "-o", str(tmp_path / "m.onnx")]) == 1
    assert "Step 'double' (_Doubler) cannot be exported" in _one_error_line(capsys)
    assert not (tmp_path / "m.onnx").exists()
