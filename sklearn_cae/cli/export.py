"""``sklearn-cae export``: a saved model as one ONNX graph, to run without Python or torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._console import CLIError
from ._io import check_output, load_model

NAME = "export"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="export a saved model to one ONNX graph (onnxruntime, no torch)",
        description="Export a model saved by 'fit' (or any fitted pipeline whose first step "
        "is an sklearn-cae featurizer, then steps skl2onnx converts) to one ONNX graph: "
        "intensity scaling, the backbone up to its tapped layers, the auto-encoder's "
        "encoder, pooling, then the scaler and classifier. Its input 'images' are images "
        "already resized to the model's image size, (N, S, S) grey or (N, S, S, 3) colour; "
        "its outputs 'label', 'probabilities' (or 'scores') and 'features'. Resize with "
        "sklearn_cae.export.resize_images (numpy and Pillow only), as the graph's metadata "
        "says (image_size, channels, input_dtype, class_names). Needs the deploy extra: "
        "pip install 'sklearn-cae[deploy]'.",
        epilog="Security: a .skops model loads without running code; a .joblib model is a "
        "pickle: load only files you trust.",
    )
    parser.add_argument("model", metavar="MODEL", help="model file (.skops or .joblib)")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="ONNX",
        help="file to write, e.g. model.onnx; replaced only once the graph is complete",
    )
    parser.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="images the graph takes: 1 (grey, N x S x S) or 3 (colour, N x S x S x 3) "
        "(default: colour if the model was fitted on colour images)",
    )
    parser.add_argument(
        "--input-dtype",
        choices=("float32", "uint8"),
        default="float32",
        help="type of the graph's input: float32, the resized image before rounding (values "
        "0..255; what the model itself computes with), or uint8, rounded, which moves a few "
        "labels of small images upscaled a lot (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> None:
    if Path(args.output).suffix.lower() != ".onnx":
        raise CLIError(f"the ONNX path must end in .onnx, got {args.output!r}")
    output = check_output(args.output, [args.model], "ONNX")
    try:
        from ..export import export_onnx

        model = load_model(args.model)
        graph = export_onnx(model, output, channels=args.channels, input_dtype=args.input_dtype)
    except ImportError as exc:
        raise CLIError(
            f"export needs the deploy extra ({exc}): pip install 'sklearn-cae[deploy]'"
        ) from exc
    (images,) = graph.graph.input
    shape = [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim]
    outputs = ", ".join(output.name for output in graph.graph.output)
    print(
        f"exported {args.model} to {args.output}: input images {args.input_dtype} "
        f"{tuple(shape)}, outputs {outputs}"
    )
