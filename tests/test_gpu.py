"""A model fitted on a GPU pickles, and loads and transforms on a machine without one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
import torch

from sklearn_cae import CAETransferFeaturizer

from .helpers import FAST_CAE

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fitted_model_transforms_on_cpu(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, size=(32, 28, 28), dtype=np.uint8)
    featurizer = CAETransferFeaturizer(device="cuda", **FAST_CAE).fit(X)
    assert next(featurizer.backbone_.parameters()).is_cuda
    on_gpu = featurizer.transform(X)
    joblib.dump(featurizer, tmp_path / "model.joblib")
    np.save(tmp_path / "X.npy", X)
    # A fresh process that cannot see any GPU, as on a CPU-only machine.
    script = textwrap.dedent(
        f"""
        import joblib, numpy as np, torch
        assert not torch.cuda.is_available()
        model = joblib.load({str(tmp_path / "model.joblib")!r})
        model.set_params(device="auto")
        assert not any(p.is_cuda for p in model.backbone_.parameters())
        X = np.load({str(tmp_path / "X.npy")!r})
        np.save({str(tmp_path / "cpu.npy")!r}, model.transform(X))
        """
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    on_cpu = np.load(tmp_path / "cpu.npy")
    assert on_cpu.shape == on_gpu.shape and on_cpu.dtype == np.float32
    # CUDA runs the backbone under bf16 autocast, the CPU in float32.
    scale = np.abs(on_gpu).max()
    np.testing.assert_allclose(on_cpu, on_gpu, atol=0.05 * scale, rtol=0)
    assert np.corrcoef(on_cpu.ravel(), on_gpu.ravel())[0, 1] > 0.99
