"""The one offline switch and download timeout, shared by backbones and datasets."""

from __future__ import annotations

import socket

import pytest

from sklearn_cae import downloads
from sklearn_cae.datasets import load_medmnist
from sklearn_cae.downloads import OFFLINE_ENVIRONMENT_VARIABLES, download_timeout, offline


@pytest.fixture
def online(monkeypatch):
    """No offline variable set (the suite itself runs with SKLEARN_CAE_OFFLINE=1)."""
    for name in OFFLINE_ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_offline_reads_each_variable(online):
    assert not offline()
    for name in OFFLINE_ENVIRONMENT_VARIABLES:
        for value, expected in [
            ("1", True),
            ("TRUE", True),
            ("yes", True),
            ("0", False),
            ("", False),
        ]:
            online.setenv(name, value)
            assert offline() is expected, (name, value)
        online.delenv(name)
    assert OFFLINE_ENVIRONMENT_VARIABLES[0] == "SKLEARN_CAE_OFFLINE"


def test_download_timeout_is_restored_even_after_a_failure():
    before = socket.getdefaulttimeout()
    with download_timeout(7):
        assert socket.getdefaulttimeout() == 7
    assert socket.getdefaulttimeout() == before
    with pytest.raises(RuntimeError), download_timeout():
        assert socket.getdefaulttimeout() == downloads.DOWNLOAD_TIMEOUT_S
        raise RuntimeError("the server went away")
    assert socket.getdefaulttimeout() == before


@pytest.mark.parametrize("variable", OFFLINE_ENVIRONMENT_VARIABLES)
def test_datasets_and_backbones_obey_the_same_switch(variable, online, tmp_path):
    """datasets.py read SKLEARN_CAE_OFFLINE only, backbones.py three variables."""
    pytest.importorskip("medmnist")
    online.setenv(variable, "1")
    with pytest.raises(FileNotFoundError, match="downloads are off"):
        load_medmnist("breastmnist", size=64, root=tmp_path)

    from sklearn_cae.backbones import BackboneWeightsUnavailable, load_backbone

    online.setenv("TORCH_HOME", str(tmp_path))  # nothing cached
    with pytest.raises(BackboneWeightsUnavailable, match="offline mode is set"):
        load_backbone("resnet18")
