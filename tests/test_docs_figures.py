"""The docs' method diagram is drawn from the code's defaults and kept in sync."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def diagram():
    spec = importlib.util.spec_from_file_location("method_diagram", DOCS / "method_diagram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_method_diagram_matches_the_defaults(diagram):
    # Fails when a default changes and nobody rebuilt the docs (make docs redraws it).
    assert diagram.SVG_PATH.read_text() == diagram.render()


def test_method_diagram_shows_the_defaults(diagram):
    from sklearn_cae import CAETransferFeaturizer

    params = CAETransferFeaturizer().get_params()
    d = diagram.defaults()
    assert (d["bottleneck"], d["pooling"]) == (params["bottleneck"], params["pooling"])
    svg = diagram.render(d)
    assert f"{params['pooling']}-pooled code ({params['bottleneck']})" in svg
    assert ("include_backbone=True" in svg) == params["include_backbone"]
    without = diagram.render({**d, "include_backbone": False, "sparsity": 0.0})
    assert "include_backbone" not in without and "L1" not in without
    assert f"{d['n_code']} features" in without
