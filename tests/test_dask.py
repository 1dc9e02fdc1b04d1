"""Dask support: model selection and featurization on a 2-process LocalCluster.

Every result computed on the cluster is compared with the same computation in this
process. One cluster serves the whole module, because starting worker processes and
loading torch in them is the expensive part; the tests on it are marked slow.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

if os.environ.get("CI", "").lower() != "true":  # in CI, a missing extra is a failure
    pytest.importorskip("distributed")

import cloudpickle
import dask.array as da
import joblib
from distributed import Client, LocalCluster, get_task_stream
from numpy.testing import assert_array_equal
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline

from sklearn_cae import CAETransferFeaturizer
from sklearn_cae.dask_cluster import TorchWorkerPlugin, featurize

from .helpers import FAST_CAE

N_WORKERS = 2


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run the single-process references with one torch thread, as the workers do.

    torch's CPU reductions depend on the thread count, and the CAE training amplifies
    last-bit differences; with equal thread counts the results must be identical.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        # Torch threads pinned, Lite0 weights loaded once per worker before any task.
        dask_client.register_plugin(TorchWorkerPlugin(num_threads=1))
        yield dask_client


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(
        [
            ("feat", CAETransferFeaturizer(**FAST_CAE, device="cpu")),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )


@pytest.fixture(scope="module")
def fitted(small_breast):
    X, _ = small_breast
    return CAETransferFeaturizer(**FAST_CAE, device="cpu").fit(X)


def test_import_sklearn_cae_does_not_import_dask():
    code = (
        "import sys, sklearn_cae, sklearn_cae.featurizer; "
        "assert not {'dask', 'distributed'} & set(sys.modules), 'dask imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow  # starts the module's LocalCluster (about 25 s)
def test_grid_search_on_cluster_matches_single_process(client, pipe, small_breast):
    X, y = small_breast
    grid = {"feat__bottleneck": [4, 8], "feat__pooling": ["avg", "max"]}
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    local = GridSearchCV(pipe, grid, cv=cv, refit=False).fit(X, y)
    with get_task_stream(client) as tasks, joblib.parallel_config(backend="dask"):
        distributed = GridSearchCV(pipe, grid, cv=cv, refit=False, n_jobs=-1).fit(X, y)
    # The 8 fits really ran on the cluster, on both workers.
    assert len({task["worker"] for task in tasks.data}) == N_WORKERS
    assert distributed.best_params_ == local.best_params_
    for key in ("split0_test_score", "split1_test_score"):
        assert_array_equal(distributed.cv_results_[key], local.cv_results_[key])


@pytest.mark.slow
def test_cross_validate_estimators_come_back_intact(client, pipe, small_breast):
    X, y = small_breast
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    local = cross_validate(pipe, X, y, cv=cv, return_estimator=True)
    with joblib.parallel_config(backend="dask"):
        remote = cross_validate(pipe, X, y, cv=cv, return_estimator=True, n_jobs=-1)
    assert_array_equal(remote["test_score"], local["test_score"])
    # Pipelines fitted in worker processes (torch modules, skorch nets) were pickled
    # back here; they must transform and predict like the ones fitted here.
    for est_remote, est_local in zip(remote["estimator"], local["estimator"], strict=True):
        assert_array_equal(est_remote[:-1].transform(X), est_local[:-1].transform(X))
        assert_array_equal(est_remote.predict(X), est_local.predict(X))


@pytest.mark.slow
def test_featurize_dask_array_matches_transform(client, fitted, small_breast):
    X, _ = small_breast
    features = featurize(fitted, da.from_array(X, chunks=20), chunk_size=16)
    assert isinstance(features, da.Array)
    assert features.chunks == ((16, 16, 16), (fitted.transform(X[:1]).shape[1],))
    computed = features.compute()
    assert computed.dtype == np.float32
    assert_array_equal(computed, fitted.transform(X))


class _CountingFeaturizer(CAETransferFeaturizer):
    """Appends a line to a log file each time an instance is unpickled."""

    def __setstate__(self, state):
        with open(state["_unpickle_log"], "a") as log:
            log.write("unpickled\n")
        super().__setstate__(state)


@pytest.mark.slow
def test_featurize_sends_the_featurizer_once(client, fitted, small_breast, tmp_path):
    X, _ = small_breast
    log = tmp_path / "unpickle.log"
    log.touch()
    counting = _CountingFeaturizer(**fitted.get_params())
    counting.__dict__.update(vars(fitted), _unpickle_log=str(log))

    chunk_size = 4
    features = featurize(counting, X, chunk_size=chunk_size, client=client)
    # No task of the graph embeds the model: each refers to the scattered copy by key.
    model_bytes = len(pickle.dumps(fitted))
    tasks = {
        key: task
        for key, task in dict(features.__dask_graph__()).items()
        if str(key).find("sklearn-cae-featurize") >= 0
    }
    assert len(tasks) == len(X) // chunk_size
    assert max(len(cloudpickle.dumps(task)) for task in tasks.values()) < model_bytes / 100

    # Same chunks here: batches of 4 give other last bits than batches of 16.
    expected = [fitted.transform(X[i : i + chunk_size]) for i in range(0, len(X), chunk_size)]
    assert_array_equal(features.compute(), np.concatenate(expected))
    # 12 chunks, but the model was deserialised about once per worker (scatter, then
    # replication; a loaded machine was seen to cost one extra copy), never per chunk.
    assert 1 <= len(log.read_text().splitlines()) < len(tasks) // 2


@pytest.fixture(scope="module")
def image_files(small_breast, tmp_path_factory):
    """20 PNG files of BreastMNIST images, every third one resized to 40 x 36."""
    X, _ = small_breast
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i, image in enumerate(X[:20]):
        picture = Image.fromarray(image)
        if i % 3 == 0:
            picture = picture.resize((40, 36))
        paths.append(folder / f"{i:02d}.png")
        picture.save(paths[-1])
    return paths


@pytest.mark.slow
def test_featurize_image_files(client, fitted, image_files):
    features = featurize(fitted, image_files, chunk_size=10, client=client)
    assert features.chunks == ((10, 10), (fitted.transform(image_files[:1]).shape[1],))
    expected = [fitted.transform(image_files[i : i + 10]) for i in (0, 10)]
    assert_array_equal(features.compute(), np.concatenate(expected))


@pytest.mark.slow
def test_plugin_lets_workers_decode_files(client, fitted, image_files):
    # 20 files in batches of 16: two batches would start DataLoader worker processes,
    # which Dask's daemonic worker processes may not have; the plugin turns them off.
    assert set(client.run(os.getenv, "SKLEARN_CAE_NUM_WORKERS").values()) == {"0"}
    remote = client.submit(fitted.transform, image_files, pure=False).result()
    assert_array_equal(remote, fitted.transform(image_files))


def test_featurize_checks_its_input(fitted):
    with pytest.raises(ValueError, match="chunk_size"):
        featurize(fitted, np.zeros((4, 28, 28), np.uint8), chunk_size=0)
    with pytest.raises(TypeError, match="single path"):
        featurize(fitted, "images/a.png")
    with pytest.raises(ValueError, match="images"):
        featurize(fitted, np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="chunk_size"):
        featurize(fitted, np.zeros((4, 28, 28), np.uint8), chunk_size=True)
    with pytest.raises(TypeError, match="'featurizer' parameter of featurize"):
        featurize(np.zeros((4, 28, 28), np.uint8), np.zeros((4, 28, 28), np.uint8))


def test_featurize_needs_a_fitted_featurizer():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        featurize(CAETransferFeaturizer(), np.zeros((4, 28, 28), np.uint8))


@pytest.mark.parametrize("chunk_size", [True, 0, 2.0])
def test_chunk_size_must_be_a_positive_int_not_a_bool(chunk_size):
    from sklearn_cae import BackboneFeaturizer

    with pytest.raises(ValueError, match="chunk_size"):
        featurize(BackboneFeaturizer(), np.zeros((2, 8, 8), np.uint8), chunk_size=chunk_size)
