"""verbose: silent at 0; a tqdm bar over backbone batches and skorch's epoch table at 1."""

from __future__ import annotations

import pytest

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer

from .helpers import FAST, FAST_CAE


@pytest.mark.parametrize(
    "cls, params", [(BackboneFeaturizer, FAST), (CAETransferFeaturizer, FAST_CAE)]
)
def test_verbose_0_is_silent(capsys, small_breast, cls, params):
    X, _ = small_breast
    cls(**params, verbose=0).fit_transform(X)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_verbose_1_shows_backbone_bar_with_eta_and_epoch_table(capsys, small_breast):
    X, _ = small_breast
    featurizer = CAETransferFeaturizer(**FAST_CAE, validation_fraction=0.2, verbose=1).fit(X)
    captured = capsys.readouterr()
    n_batches = -(-len(X) // FAST_CAE["batch_size"])
    # tqdm on stderr: one bar over the backbone batches, with its rate and ETA.
    assert "backbone" in captured.err and f"{n_batches}/{n_batches}" in captured.err
    assert "<" in captured.err and "batch/s" in captured.err
    # skorch's per-epoch table on stdout, one row per epoch.
    assert "train_loss" in captured.out and "valid_loss" in captured.out
    rows = [line for line in captured.out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == len(featurizer.cae_[0].history)

    featurizer.transform(X[:20])
    captured = capsys.readouterr()
    assert "backbone" in captured.err and captured.out == ""
