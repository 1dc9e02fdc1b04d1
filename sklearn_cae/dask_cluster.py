"""Run sklearn-cae on a Dask cluster: worker set-up and distributed featurization.

Optional: needs ``pip install sklearn-cae[dask]``; ``import sklearn_cae`` never imports
Dask. Model selection needs nothing from this module -- scikit-learn's search and
cross-validation run on a cluster through joblib's Dask backend::

    with joblib.parallel_config(backend="dask"):
        GridSearchCV(pipe, grid, n_jobs=-1).fit(X, y)

This module adds what joblib cannot do:

* :class:`TorchWorkerPlugin` pins torch's thread pool on every worker, loads the
  backbone weights once per worker process before the first task, and keeps file
  decoding inside Dask's (daemonic) worker processes;
* :func:`featurize` transforms a Dask array of images, or a list of image files, chunk
  by chunk on the workers with a fitted featurizer that is sent to each worker once.

See ``docs/cluster.md`` for a runnable example and the multi-GPU plan.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
from distributed import Client, WorkerPlugin, get_client
from sklearn.utils.validation import check_is_fitted

from ._param_validation import HasMethods, strict_int, validate_params

__all__ = ["TorchWorkerPlugin", "featurize"]


class TorchWorkerPlugin(WorkerPlugin):
    """Prepare each Dask worker for torch: threads, backbone weights, file decoding.

    Register it once per cluster with ``client.register_plugin(TorchWorkerPlugin())``;
    workers that join later run it too.

    Dask's worker processes are daemonic and so may not start the DataLoader worker
    processes that decode image files; on such workers the plugin sets
    ``SKLEARN_CAE_NUM_WORKERS=0`` (unless set), so ``fit``/``transform`` on paths decode
    in the task itself.

    Parameters
    ----------
    num_threads : int, default=1
        ``torch.set_num_threads`` on each worker. Keep ``threads_per_worker *
        num_threads`` at or below the cores each worker owns: torch's pool is per
        process, so several worker threads each running a multi-threaded torch op
        oversubscribe the CPU. (Dask's nanny already sets ``OMP_NUM_THREADS=1``; this
        makes the choice explicit and lets you raise it for one-thread workers that
        own several cores.)
    preload : sequence of str, default=("efficientnet_lite0",)
        Backbone names to load once at worker start-up, so that the per-process weight
        cache (and the imports of torch, timm and torchvision) is filled before the first
        task instead of inside a timed fit. Use ``()`` to skip.
    """

    name = "sklearn-cae-torch"

    def __init__(self, num_threads: int = 1, preload: Sequence[str] = ("efficientnet_lite0",)):
        self.num_threads = num_threads
        self.preload = tuple(preload)

    def setup(self, worker=None) -> None:
        import torch

        from .backbones import load_backbone
        from .images import NUM_WORKERS_ENV

        torch.set_num_threads(self.num_threads)
        if multiprocessing.current_process().daemon:
            # Dask's worker processes are daemonic and may not have children: decode
            # image files in the task instead of in DataLoader worker processes.
            os.environ.setdefault(NUM_WORKERS_ENV, "0")
        for backbone in self.preload:
            load_backbone(backbone)


def _transform_block(block: np.ndarray, featurizer) -> np.ndarray:
    return featurizer.transform(block)


def _transform_paths(paths: np.ndarray, featurizer) -> np.ndarray:
    from .images import as_image_source

    # Decode in this task: the Dask worker is the unit of parallelism, and a daemonic
    # worker process may not start DataLoader worker processes anyway.
    return featurizer.transform(as_image_source(list(paths), num_workers=0))


def _broadcast(featurizer, client: Client | None):
    """One graph node holding the featurizer, so that chunks do not each embed a copy."""
    if client is None:
        try:
            client = get_client()
        except ValueError:  # no distributed client: a local scheduler shares the object
            return dask.delayed(featurizer, pure=False)
    # hash=False: a fresh key, so refitting the same object never reuses a stale copy.
    return client.scatter(featurizer, broadcast=True, hash=False)


@validate_params(
    {
        "featurizer": [HasMethods(["transform", "get_feature_names_out"])],
        # X is a Dask array, an array or paths; the checks below say which went wrong.
        "X": "no_validation",
        "chunk_size": [strict_int(1, None, closed="left")],
        "client": [Client, None],
    },
    prefer_skip_nested_validation=True,
)
def featurize(
    featurizer,
    X,
    *,
    chunk_size: int = 256,
    client: Client | None = None,
) -> da.Array:
    """Transform images on a Dask cluster, chunk by chunk, with a fitted featurizer.

    The featurizer is scattered to every worker once (``client.scatter(...,
    broadcast=True)``); each chunk's task refers to it by key, so the model is neither
    re-pickled per chunk nor stored in the task graph.

    Parameters
    ----------
    featurizer : fitted CAETransferFeaturizer or BackboneFeaturizer
        Any fitted transformer with ``get_feature_names_out`` works, e.g. a Pipeline
        ending in one.
    X : dask array, ndarray or sequence of paths
        Images ``(n, H, W[, C])`` (anything ``featurizer.transform`` takes, split along
        the first axis), or image files, decoded on the workers as ``transform`` decodes
        paths (any size, 8/16-bit, DICOM; see ``docs/inputs.md``), in the task's own
        process. The paths must be readable from every worker (a shared filesystem).
    chunk_size : int, default=256
        Images per task. Each task holds one chunk of images and of maps in memory.
    client : distributed.Client or None, default=None
        Cluster to send the featurizer to; None uses the current client, or, when there
        is none, embeds the featurizer once in the graph for Dask's local schedulers.

    Returns
    -------
    dask array of shape (n_samples, n_features_out), float32
        Lazy: call ``.compute()``, ``.persist()``, or ``.to_dask_dataframe(columns=
        featurizer.get_feature_names_out())`` for a dataframe.

    Examples
    --------
    >>> import dask.array as da  # doctest: +SKIP
    >>> features = featurize(fitted, da.from_zarr("images.zarr"), chunk_size=512)  # doctest: +SKIP
    >>> features.to_zarr("features.zarr")  # doctest: +SKIP
    """
    check_is_fitted(featurizer)
    n_features = len(featurizer.get_feature_names_out())
    meta = np.empty((0, n_features), dtype=np.float32)
    if _is_path_list(X):
        paths = np.empty(len(X), dtype=object)
        paths[:] = [os.fspath(p) for p in X]
        X, func, drop_axis = da.from_array(paths, chunks=chunk_size), _transform_paths, []
        new_axis = [1]
    else:
        X = da.asarray(X)
        if X.ndim < 2:
            raise ValueError(f"X must hold images (n, H, W[, C]), got shape {X.shape}.")
        # Whole images per chunk: split along the sample axis only.
        X = X.rechunk({0: chunk_size, **{axis: -1 for axis in range(1, X.ndim)}})
        func, drop_axis, new_axis = _transform_block, list(range(2, X.ndim)), []
    return da.map_blocks(
        func,
        X,
        _broadcast(featurizer, client),
        chunks=(X.chunks[0], (n_features,)),
        drop_axis=drop_axis,
        new_axis=new_axis,
        dtype=np.float32,
        meta=meta,
        token="sklearn-cae-featurize",
    )


def _is_path_list(X) -> bool:
    if isinstance(X, str | os.PathLike):
        raise TypeError("X is a single path; pass a list of image paths.")
    return (
        isinstance(X, Sequence | np.ndarray)
        and not isinstance(X, da.Array)
        and len(X) > 0
        and all(isinstance(p, str | os.PathLike) for p in X)
    )
