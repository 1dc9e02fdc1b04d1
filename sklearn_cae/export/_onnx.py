"""A fitted pipeline as one ONNX graph: featurizer traced by torch, the rest by skl2onnx.

The featurizer part is traced with torch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``): it needs nothing beyond torch (the
``torch.export``-based exporter needs ``onnxscript``), works offline, and traces the
stage-by-stage backbones and the CAE in seconds. Tracing records one run, so a tapped
layer whose Python control flow depends on tensor values would be recorded wrongly:
the tracer's warning about it is turned into an :class:`ExportError`, and every graph
is checked against the featurizer's own ``transform`` on probe images before it is
returned.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline
from torch import nn

from .. import __version__
from .._utils import atomic_write, error_reason
from ..feature_maps import standardize
from ..featurizer import BackboneFeaturizer, CAETransferFeaturizer
from ..images import check_image_size, check_intensity, normalize_batch
from ..pooling import SPP_GRIDS, pool
from ._runtime import INPUT_DTYPES, check_input_dtype

__all__ = ["ExportError", "export_onnx"]

#: The ONNX opset of exported graphs (onnxruntime 1.17+ runs it).
OPSET = 17
_ML_OPSET = 3
# The probe check: the graph's features may differ from transform's by this much,
# relative to the largest feature (float16 rounding of the maps, other kernels).
_PROBE_RTOL = 1e-2
# What resizes images before the graph (see _runtime.py), by the graph's input type.
_RESIZE = (
    "antialiased bilinear to image_size, per channel on the image scaled to [0, 1] "
    "(torch interpolate(mode='bilinear', antialias=True) = Pillow BILINEAR on float "
    "images), {}: sklearn_cae.export.resize_images(images, image_size, dtype={!r})"
)
_RESIZE_OUTPUT = {
    "float32": "values kept on the 0..255 scale, not rounded",
    "uint8": "rounded to uint8",
}


class ExportError(ValueError):
    """A pipeline, or a step of it, cannot be exported to ONNX."""


class _FeatureGraph(nn.Module):
    """The featurizer's transform on images at ``image_size``, as one traceable module.

    The images are ``uint8``, or ``float32`` on the same 0..255 scale (resized, not
    rounded).

    The same steps, in the same order and precision, as the featurizer's
    ``transform``: intensity scaling, grey to RGB and the backbone's normalisation,
    the tapped maps rounded through float16, and (CAE) their standardisation, rounded
    again, the encoder and pooling, then the block balance (``block_scaler_``).
    """

    def __init__(self, featurizer, channels: int):
        super().__init__()
        self.backbone = copy.deepcopy(featurizer.backbone_).cpu().eval()
        self.mean, self.std = featurizer.input_mean_, featurizer.input_std_
        self.colour = channels == 3
        self.intensity = check_intensity(featurizer.intensity)
        self.pooling = featurizer.pooling
        self.map_shapes = [tuple(shape) for shape in featurizer.map_shapes_]
        cae = isinstance(featurizer, CAETransferFeaturizer)
        self.encoders = nn.ModuleList(
            [copy.deepcopy(net.module_.encoder).cpu().eval() for net in featurizer.cae_]
            if cae
            else []
        )
        self.include_backbone = not cae or featurizer.include_backbone
        for i, (mean, std) in enumerate(
            zip(
                getattr(featurizer, "map_mean_", []),
                getattr(featurizer, "map_std_", []),
                strict=True,
            )
        ):
            self.register_buffer(f"map_mean_{i}", torch.as_tensor(mean).float())
            self.register_buffer(f"map_std_{i}", torch.as_tensor(std).float())
        # BlockScaler: (x - mean) / scale * weight, the last two as one factor.
        scaler = getattr(featurizer, "block_scaler_", None)  # absent before release 0.2
        self.balance = scaler is not None
        if self.balance:
            factor = scaler.weights_ / scaler.scaler_.scale_
            self.register_buffer("block_mean", torch.as_tensor(scaler.scaler_.mean_).float())
            self.register_buffer("block_factor", torch.as_tensor(factor).float())

    def _unit(self, images: torch.Tensor) -> torch.Tensor:
        """(n, h, w[, 3]) on the uint8 scale to float32 (n, C, h, w) in [0, 1], by the
        intensity policy."""
        x = images.float()
        x = x.permute(0, 3, 1, 2) if self.colour else x.unsqueeze(1)
        if isinstance(self.intensity, tuple):
            low, high = self.intensity
            return ((x * 0.5 - low * 0.5) / (high * 0.5 - low * 0.5)).clamp(0.0, 1.0)
        if self.intensity == "minmax":
            low = x.amin(dim=(1, 2, 3), keepdim=True) * 0.5
            span = x.amax(dim=(1, 2, 3), keepdim=True) * 0.5 - low
            return (x * 0.5 - low) / torch.where(span > 0, span, torch.ones_like(span))
        return (x - 0.0) / 255.0  # "auto", "dtype": the uint8 scale over its range

    def _pool(self, maps: torch.Tensor, layer: int) -> torch.Tensor:
        """:func:`~sklearn_cae.pooling.pool`; "spp" by slices of the known map size (the
        exporter cannot size ``adaptive_max_pool2d`` behind the backbones' dynamic padding).
        """
        if self.pooling != "spp":
            return pool(maps, self.pooling)
        _, h, w = self.map_shapes[layer]
        parts = []
        for g in SPP_GRIDS:
            # adaptive_max_pool2d's cells: [floor(i * h / g), ceil((i + 1) * h / g)).
            cells = [
                maps[:, :, i * h // g : -(-(i + 1) * h // g), j * w // g : -(-(j + 1) * w // g)]
                for i in range(g)
                for j in range(g)
            ]
            parts.append(torch.stack([c.amax(dim=(2, 3)) for c in cells], dim=2).flatten(1))
        return torch.cat(parts, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = normalize_batch(self._unit(images), self.mean, self.std)
        maps = [m.float().half().float() for m in self.backbone(batch)]
        if self.encoders:
            maps = [
                standardize(m, getattr(self, f"map_mean_{i}"), getattr(self, f"map_std_{i}"))
                .half()
                .float()
                for i, m in enumerate(maps)
            ]
        parts = [
            self._pool(encoder(m), i)
            for i, (encoder, m) in enumerate(zip(self.encoders, maps, strict=False))  # no CAE: none
        ]
        if self.include_backbone:
            parts += [self._pool(m, i) for i, m in enumerate(maps)]
        features = torch.cat(parts, dim=1)
        return (features - self.block_mean) * self.block_factor if self.balance else features


def _split(pipeline):
    """(featurizer, the scikit-learn steps after it) of a fitted pipeline or featurizer."""
    featurizers = (BackboneFeaturizer, CAETransferFeaturizer)
    if isinstance(pipeline, featurizers):
        pipeline = Pipeline([("featurizer", pipeline)])
    steps = list(getattr(pipeline, "steps", []))
    if steps and isinstance(getattr(steps[0][1], "estimator", None), featurizers):
        steps[0] = (steps[0][0], steps[0][1].estimator)  # sklearn.frozen.FrozenEstimator
    if not steps or not isinstance(steps[0][1], featurizers):
        raise ExportError(
            "export_onnx takes a fitted featurizer, or a pipeline whose first step is "
            f"one (BackboneFeaturizer or CAETransferFeaturizer); got {type(pipeline).__name__}."
        )
    if not hasattr(steps[0][1], "backbone_"):
        raise ExportError("The pipeline is not fitted: fit it before exporting it.")
    # Samplers (imbalanced-learn) act in fit only; "passthrough" and None do nothing.
    rest = [
        (name, step)
        for name, step in _unwrapped(steps[1:])
        if step not in (None, "passthrough") and not hasattr(step, "fit_resample")
    ]
    return steps[0][1], rest


def _unwrapped(steps: list) -> list:
    """``steps`` with each ``LabelledOnly`` replaced by the estimator it predicts with
    (its fitted ``estimator_``, or that pipeline's steps), which skl2onnx converts."""
    from ..semi_supervised import LabelledOnly

    flat = []
    for name, step in steps:
        if isinstance(step, LabelledOnly):
            inner = step.estimator_
            flat += [(f"{name}__{n}", s) for n, s in getattr(inner, "steps", [(name, inner)])]
        else:
            flat.append((name, step))
    return flat


def _export_bytes(graph: _FeatureGraph, example: torch.Tensor) -> tuple[bytes, list[str]]:
    """ONNX bytes of one trace, and where Python branched on a traced tensor."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", torch.jit.TracerWarning)
        with torch.no_grad():
            torch.onnx.export(
                graph,
                (example,),
                buffer,
                dynamo=False,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "n"}, "features": {0: "n"}},
                opset_version=OPSET,
            )
    branches = [
        f"{Path(w.filename).name}:{w.lineno}" for w in caught if "Python boolean" in str(w.message)
    ]
    return buffer.getvalue(), branches


def _operators(model_bytes: bytes) -> list[str]:
    import onnx

    return [node.op_type for node in onnx.load_from_string(model_bytes).graph.node]


def _trace(graph: _FeatureGraph, size: tuple[int, int], dtype: np.dtype, backbone_name: str):
    """ONNX bytes of the featurizer graph; input "images" (``dtype``), output "features".

    Traced on random, black and white images: a graph that differs between them took
    other branches of Python control flow on tensor values, which no trace can hold.
    """
    shape = (2, *size, 3) if graph.colour else (2, *size)
    random = np.random.default_rng(0).integers(0, 256, shape)
    examples = [
        torch.from_numpy(image.astype(dtype))
        for image in (random, np.zeros(shape), np.full(shape, 255))
    ]
    try:
        traces = [_export_bytes(graph, example) for example in examples]
    except Exception as exc:
        raise ExportError(
            f"torch could not export the featurizer (backbone {backbone_name!r}) to "
            f"ONNX: {type(exc).__name__}: {error_reason(exc)[:500]}"
        ) from exc
    reference = _operators(traces[0][0])
    if any(_operators(model_bytes) != reference for model_bytes, _ in traces[1:]):
        places = sorted({place for _, branches in traces for place in branches})
        raise ExportError(
            f"The tapped layer(s) of backbone {backbone_name!r} cannot be exported: their "
            "Python control flow depends on the values of the input (branches at "
            f"{', '.join(places) or 'an unknown place'}), so the traced graph differs "
            "from one image to another. Tap a layer before that module, or write its "
            "branches as tensor operations (torch.where)."
        )
    return traces[0][0]


def _check_against_transform(model_bytes: bytes, featurizer, graph: _FeatureGraph, size, dtype):
    """Run the graph on probe images (two batch sizes) and compare with ``transform``."""
    import onnxruntime

    rng = np.random.default_rng(0)
    shape = (*size, 3) if graph.colour else size
    smooth = np.linspace(0, 255, int(np.prod(shape))).reshape(shape)
    probes = np.stack([rng.integers(0, 256, shape), smooth, 255 - smooth]).astype(np.uint8)
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    expected = featurizer.transform(probes)
    for batch in (probes, probes[:1]):
        got = session.run(["features"], {"images": batch.astype(dtype)})[0]
        error = np.abs(got - expected[: len(batch)]).max()
        if not error <= _PROBE_RTOL * np.abs(expected).max():
            raise ExportError(
                "The exported graph does not reproduce the featurizer's transform (largest "
                f"difference {error:.3g} on probe images, features up to "
                f"{np.abs(expected).max():.3g}): a tapped layer probably computes "
                "differently from one input to another (data-dependent control flow), "
                "which a traced graph cannot follow."
            )


def _sklearn_graph(steps, n_features: int):
    """skl2onnx's graph of the steps after the featurizer, from input "features"."""
    from skl2onnx import convert_sklearn, get_model_alias
    from skl2onnx.common.data_types import FloatTensorType

    for name, step in steps:
        try:
            get_model_alias(type(step))
        except RuntimeError:
            raise ExportError(
                f"Step {name!r} ({type(step).__name__}) cannot be exported: skl2onnx has "
                "no converter for it (see skl2onnx.supported_converters()). Replace it, "
                "or export the featurizer alone (export_onnx(pipeline[0], ...)) and run "
                "the step in Python."
            ) from None
    options = {id(step): {"zipmap": False} for _, step in steps if is_classifier(step)}
    try:
        with warnings.catch_warnings():  # skl2onnx reads attributes sklearn deprecates
            warnings.simplefilter("ignore", FutureWarning)
            return convert_sklearn(
                Pipeline(steps),
                initial_types=[("features", FloatTensorType([None, n_features]))],
                target_opset={"": OPSET, "ai.onnx.ml": _ML_OPSET},
                options=options,
            )
    except Exception as exc:
        raise ExportError(
            f"skl2onnx could not convert the steps {[name for name, _ in steps]}: "
            f"{type(exc).__name__}: {error_reason(exc)[:500]}"
        ) from exc


def _same_opsets(model, opsets: dict[str, int]):
    """Set the model's opset imports (merge_models wants one version per domain)."""
    import onnx

    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets.items())
    return model


def _merge(features_model, sklearn_model, final_step):
    """One graph: images -> features -> label, probabilities or scores (+ features)."""
    import onnx
    from onnx import compose

    opsets = {"": OPSET, "ai.onnx.ml": _ML_OPSET}
    sklearn_model = _same_opsets(sklearn_model, opsets)
    features_model = _same_opsets(features_model, opsets)
    sklearn_model.ir_version = features_model.ir_version
    outputs = [output.name for output in sklearn_model.graph.output]
    if is_classifier(final_step) and outputs == ["label", "probabilities"]:
        second = "probabilities" if hasattr(final_step, "predict_proba") else "scores"
        renamed = {"probabilities": second}
        for node in sklearn_model.graph.node:
            node.output[:] = [renamed.get(name, name) for name in node.output]
        sklearn_model.graph.output[1].name = second
    merged = compose.merge_models(features_model, sklearn_model, io_map=[("features", "features")])
    features = onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["n", None])
    merged.graph.output.append(features)
    return merged


def export_onnx(
    pipeline,
    path: str | os.PathLike | None = None,
    *,
    channels: int | None = None,
    input_dtype: str = "float32",
):
    """Export a fitted pipeline (featurizer, then scikit-learn steps) to one ONNX graph.

    The graph holds the featurizer's intensity scaling (for images on the ``uint8``
    scale), normalisation, the backbone up to its tapped layers, the maps' float16
    rounding and standardisation, the auto-encoder's encoder, the pooling and the
    block balance, then the steps after the featurizer as skl2onnx converts them
    (scalers, SVC, logistic regression, ...). Resizing and file decoding stay outside:
    resize with :func:`~sklearn_cae.export.resize_images`.

    Parameters
    ----------
    pipeline : Pipeline or featurizer
        Fitted; its first step a :class:`~sklearn_cae.BackboneFeaturizer` or
        :class:`~sklearn_cae.CAETransferFeaturizer`. Resamplers (imbalanced-learn)
        are left out, as ``predict`` skips them.
    path : str, os.PathLike or None, default=None
        Where to write the ``.onnx`` file (atomically); None writes nothing.
    channels : {1, 3} or None, default=None
        The images the graph takes: grey ``(n, S, S)`` or colour ``(n, S, S, 3)``, S
        the ``image_size``. None: as the featurizer was fitted (colour if it saw
        colour images).
    input_dtype : {"float32", "uint8"}, default="float32"
        The type of the graph's input. ``float32``: ``uint8`` images resized and not
        rounded (values 0..255), the featurizer's own input up to float rounding.
        ``uint8``: the same rounded to ``uint8``; the rounding moves the features of
        small images upscaled a lot (28 to 128 px) by up to 15% and a few labels
        (see ``benchmarks/results/export.md``). Make the input with
        :func:`~sklearn_cae.export.resize_images` (``dtype=input_dtype``).

    Returns
    -------
    onnx.ModelProto
        Input ``images``; outputs ``label`` then ``probabilities`` (a classifier
        with ``predict_proba``) or ``scores`` (skl2onnx's decision scores, one column
        per class), then ``features`` (the featurizer's output). A featurizer alone
        gives ``features`` only. Metadata (:func:`~sklearn_cae.export.read_metadata`):
        ``image_size``, ``channels``, ``input_dtype``, ``input_layout``, ``class_names``,
        ``intensity``, ``resize``, ``outputs``, ``sklearn_cae_version``.

    Raises
    ------
    ExportError
        A step skl2onnx cannot convert, a tapped layer that cannot be traced (Python
        control flow on tensor values), or a graph that does not reproduce the
        featurizer on probe images.
    """
    import onnx

    featurizer, steps = _split(pipeline)
    channels = channels or (3 if featurizer.n_input_channels_ >= 3 else 1)
    if channels not in (1, 3):
        raise ExportError(f"channels must be 1 (grey) or 3 (colour), got {channels!r}.")
    try:
        dtype = check_input_dtype(input_dtype)
    except ValueError:
        raise ExportError(
            f"input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}."
        ) from None
    size = check_image_size(featurizer.image_size)
    graph = _FeatureGraph(featurizer, channels).eval()
    name = featurizer.backbone if isinstance(featurizer.backbone, str) else "custom module"
    features_bytes = _trace(graph, size, dtype, str(name))
    _check_against_transform(features_bytes, featurizer, graph, size, dtype)
    model = onnx.load_from_string(features_bytes)
    n_features = len(featurizer.get_feature_names_out())
    final = steps[-1][1] if steps else None
    if steps:
        model = _merge(model, _sklearn_graph(steps, n_features), final)
    classes = getattr(final, "classes_", None)
    metadata = {
        "image_size": list(size),
        "channels": channels,
        "input_dtype": dtype.name,
        "input_layout": "NHWC" if channels == 3 else "NHW",
        "class_names": None if classes is None else np.asarray(classes).tolist(),
        "intensity": list(graph.intensity)
        if isinstance(graph.intensity, tuple)
        else graph.intensity,
        "resize": _RESIZE.format(_RESIZE_OUTPUT[dtype.name], dtype.name),
        "outputs": [output.name for output in model.graph.output],
        "sklearn_cae_version": __version__,
    }
    onnx.helper.set_model_props(model, {k: json.dumps(v) for k, v in metadata.items()})
    model.producer_name, model.producer_version = "sklearn-cae", __version__
    onnx.checker.check_model(model)
    if path is not None:
        with atomic_write(path) as file:
            file.write(model.SerializeToString())
    return model
