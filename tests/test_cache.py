"""The per-image backbone-feature cache: hits, misses, corruption, concurrency."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import threading
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.cache import (
    CacheWriteWarning,
    FeatureCache,
    check_cache,
    image_digests,
    model_digest,
)
from sklearn_cae.cae import fit_autoencoder

from .helpers import FAST, FAST_CAE


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(24, 28, 28), dtype=np.uint8)


def _n_entries(root: Path) -> int:
    return FeatureCache(root).info().entries


def _shard_bytes(root: Path) -> dict[str, int]:
    shards = root / "sklearn_cae_features" / "shards-v2" / "shards"
    return {p.name: p.stat().st_size for p in shards.glob("*.shard")}


def _records(root: Path) -> list[tuple[str, str, str, int, int]]:
    """(model, key, shard path, offset, size) of every indexed entry."""
    store = root / "sklearn_cae_features" / "shards-v2"
    with contextlib.closing(sqlite3.connect(store / "index.sqlite")) as index:
        rows = index.execute("SELECT model, key, shard, offset, size FROM entries").fetchall()
    return sorted((m, k, str(store / "shards" / s), o, n) for m, k, s, o, n in rows)


def _count_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_check_cache_follows_sklearn_memory_convention(tmp_path):
    assert check_cache(None) is None
    assert check_cache(joblib.Memory(location=None, verbose=0)) is None
    assert check_cache(str(tmp_path)).root == tmp_path / "sklearn_cae_features"
    assert check_cache(joblib.Memory(tmp_path, verbose=0)).root.parent == tmp_path
    with pytest.raises(ValueError, match="cache must be None, a directory path"):
        check_cache(3)
    cache = FeatureCache(tmp_path, max_size="1M", key="content")
    assert check_cache(cache) is cache and cache.max_size == 1 << 20


def test_bad_cache_fails_in_fit(images):
    with pytest.raises(ValueError, match="'cache' parameter of BackboneFeaturizer must be None"):
        BackboneFeaturizer(cache=1.5, **FAST).fit(images)


def test_cache_path_with_tilde_is_expanded(images, tmp_path, monkeypatch):
    """cache="~/.cache/sklearn_cae", the docs' example, made a literal ./~ folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert check_cache("~/.cache/sklearn_cae").root == (
        tmp_path / "home" / ".cache" / "sklearn_cae" / "sklearn_cae_features"
    )
    BackboneFeaturizer(cache="~/.cache/sklearn_cae", **FAST).fit_transform(images[:4])
    assert not list(work.iterdir())
    assert _n_entries(tmp_path / "home" / ".cache" / "sklearn_cae") == 4


def _regular_file(tmp_path):
    path = tmp_path / "cache.txt"
    path.write_text("not a folder")
    return str(path), "exists and is not a folder"


def _under_a_file(tmp_path):
    return _regular_file(tmp_path)[0] + "/cache", "cannot be used as a folder"


def _store_is_a_file(tmp_path):
    (tmp_path / "sklearn_cae_features").write_text("not a folder")
    return tmp_path, "sklearn_cae_features' exists and is not a folder"


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp_path: ("", "not a folder path"),
        lambda tmp_path: ("   ", "not a folder path"),
        _regular_file,
        _under_a_file,
        _store_is_a_file,
        lambda tmp_path: (joblib.Memory(tmp_path / "cache.txt", verbose=0), "not a folder"),
    ],
    ids=["empty", "blank", "a file", "under a file", "store is a file", "Memory on a file"],
)
@pytest.mark.parametrize("cls", [BackboneFeaturizer, CAETransferFeaturizer])
@pytest.mark.filterwarnings("ignore:Unable to write:UserWarning")  # joblib.Memory's own
def test_cache_paths_that_cannot_be_folders_fail_at_fit(cls, make, images, tmp_path, monkeypatch):
    """cache="" cached into the working directory; a file was accepted at fit."""
    monkeypatch.chdir(tmp_path)
    _regular_file(tmp_path)
    cache, match = make(tmp_path)
    feat = cls(cache=cache, **(FAST_CAE if cls is CAETransferFeaturizer else FAST))
    with pytest.raises(ValueError, match=match):
        feat.fit(images[:4])
    assert not hasattr(feat, "n_input_channels_")
    assert sorted(p.name for p in tmp_path.iterdir()) in (
        ["cache.txt"],
        ["cache.txt", "sklearn_cae_features"],
    )


def test_unwritable_cache_folder_still_fits_the_cae(images, tmp_path, monkeypatch):
    """A read-only, fully populated cache could not be used to fit the CAE."""
    expected = CAETransferFeaturizer(cache=tmp_path, **FAST_CAE).fit_transform(images)
    FeatureCache(tmp_path).close()  # no shard left open for appending
    real_temporary_file, real_mkstemp = tempfile.TemporaryFile, tempfile.mkstemp

    def refuse_in_cache(make):
        def make_file(*args, dir=None, **kwargs):
            if dir is not None and Path(tmp_path) in Path(dir).parents:
                raise PermissionError(13, "Permission denied", str(dir))
            return make(*args, dir=dir, **kwargs)

        return make_file

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse_in_cache(real_temporary_file))
    monkeypatch.setattr(tempfile, "mkstemp", refuse_in_cache(real_mkstemp))
    feat = CAETransferFeaturizer(cache=tmp_path, **FAST_CAE)
    np.testing.assert_allclose(feat.fit_transform(images), expected, atol=1e-6)
    more = np.random.default_rng(5).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    with pytest.warns(CacheWriteWarning, match="Cannot write to the feature cache"):
        feat.transform(more)  # new images cannot be stored: a warning, not a failure


def test_features_identical_with_and_without_cache(images, tmp_path):
    plain = CAETransferFeaturizer(**FAST_CAE)
    cached = CAETransferFeaturizer(cache=tmp_path, **FAST_CAE)
    np.testing.assert_array_equal(plain.fit_transform(images), cached.fit_transform(images))
    # The second transform reads every map from the cache.
    np.testing.assert_array_equal(plain.transform(images), cached.transform(images))
    np.testing.assert_array_equal(
        BackboneFeaturizer(**FAST).fit_transform(images),
        BackboneFeaturizer(cache=joblib.Memory(tmp_path, verbose=0), **FAST).fit_transform(images),
    )
    # One entry per image and backbone setting: the CAE's single tap, the baseline's two.
    assert _n_entries(tmp_path) == 2 * len(images)


def test_other_row_subsets_hit_the_cache(images, tmp_path):
    CAETransferFeaturizer(cache=tmp_path, **FAST_CAE).fit(images)
    written = _shard_bytes(tmp_path)
    fold = np.random.default_rng(1).permutation(len(images))[:15]
    featurizer = CAETransferFeaturizer(cache=tmp_path, **FAST_CAE).fit(images[fold])
    calls = _count_forwards(featurizer.backbone_)
    featurizer.transform(images[::-1])
    assert calls[0] == 0  # no backbone pass at all: every image was a hit
    assert _shard_bytes(tmp_path) == written and _n_entries(tmp_path) == len(images)


def test_new_images_miss_and_are_added(images, tmp_path):
    # Without block balancing, fit reads no image: the cache holds what transform adds.
    featurizer = BackboneFeaturizer(cache=tmp_path, balance_blocks=False, **FAST).fit(images)
    featurizer.transform(images[:8])
    calls = _count_forwards(featurizer.backbone_)
    out = featurizer.transform(images[4:16])
    assert calls[0] == 1  # one batch, holding only the 8 new images
    assert _n_entries(tmp_path) == 16
    np.testing.assert_array_equal(
        out, BackboneFeaturizer(balance_blocks=False, **FAST).fit(images).transform(images[4:16])
    )


@pytest.mark.parametrize(
    "change",
    [{"image_size": 48}, {"layer": "blocks.3"}, {"intensity": "minmax"}, {"layer": ["blocks.3"]}],
    ids=["image_size", "layer", "intensity", "layer_list"],
)
def test_changed_parameters_miss(images, tmp_path, change):
    params = {**FAST, "balance_blocks": False}  # so that fit reads no image
    BackboneFeaturizer(cache=tmp_path, **params).fit_transform(images[:8])
    featurizer = BackboneFeaturizer(cache=tmp_path, **{**params, **change}).fit(images[:8])
    calls = _count_forwards(featurizer.backbone_)
    featurizer.transform(images[:8])
    assert calls[0] == 1
    # "layer" and "layer_list" tap the same single layer: the same entries.
    assert FeatureCache(tmp_path).info().models == 2


def test_changed_weights_never_read_stale_entries(images, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU())
    params = dict(backbone=net, layer="1", pooling="avg", cache=tmp_path, **FAST)
    before = BackboneFeaturizer(**params).fit_transform(images[:6])
    with torch.no_grad():
        net[0].bias += 1.0
    after = BackboneFeaturizer(**params).fit_transform(images[:6])
    plain = BackboneFeaturizer(**{**params, "cache": None}).fit_transform(images[:6])
    np.testing.assert_array_equal(after, plain)
    assert not np.allclose(before, after)
    assert _n_entries(tmp_path) == 12


def test_model_digest_depends_on_weights_and_device_type():
    net = torch.nn.Conv2d(3, 2, 1)
    args = dict(layers=["x"], image_size=(8, 8), intensity="auto", mean=(0,) * 3, std=(1,) * 3)
    cpu = model_digest(net, device=torch.device("cpu"), **args)
    assert cpu == model_digest(net, device=torch.device("cpu"), **args)
    assert cpu != model_digest(net, device=torch.device("cuda"), **args)
    assert cpu != model_digest(torch.nn.Conv2d(3, 2, 1), device=torch.device("cpu"), **args)


def test_image_digests_hash_content_shape_and_dtype():
    a = np.zeros((2, 4, 4, 1), dtype=np.uint8)
    a[1, 0, 0, 0] = 1
    first, second = image_digests(a)
    assert first != second
    assert image_digests(a[:1]) == [first]
    assert image_digests(a[:1].astype(np.uint16)) != [first]
    assert image_digests(a[:1].reshape(1, 2, 8, 1)) != [first]
    # Row views of a non-contiguous array hash like their contiguous copies.
    assert image_digests(np.asfortranarray(a)) == [first, second]


def test_corrupt_entries_are_recomputed(images, tmp_path):
    featurizer = CAETransferFeaturizer(cache=tmp_path, **FAST_CAE)
    expected = featurizer.fit_transform(images)

    def flip(data):
        return data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:]

    def garbage(data):
        return b"\x00" * len(data)

    def header(data):
        return data[:3] + b"X" + data[4:]

    damages = [flip, garbage, header]
    records = _records(tmp_path)
    for i, (_, _, shard, offset, size) in enumerate(records[::3]):
        with open(shard, "r+b") as file:
            file.seek(offset)
            record = file.read(size)
            file.seek(offset)
            file.write(damages[i % len(damages)](record))
    calls = _count_forwards(featurizer.backbone_)
    # The damaged images are recomputed in smaller batches than at fit, and the CPU's
    # convolution kernels may then round differently (float16 maps, by about 3e-5 with
    # one torch thread): equal up to that, not bit for bit.
    np.testing.assert_allclose(featurizer.transform(images), expected, rtol=0, atol=1e-4)
    assert calls[0] > 0
    # The damaged entries were rewritten and now read back.
    cache = FeatureCache(tmp_path)
    n_values = sum(int(np.prod(s)) for s in featurizer.map_shapes_)
    model = records[0][0]
    assert all(v is not None for v in cache.load_many(model, [r[1] for r in records], n_values))
    assert cache.corrupt == 0 and cache.hits == len(images)


def test_concurrent_writers_never_expose_partial_entries(tmp_path):
    cache = FeatureCache(tmp_path)
    values = [np.full(50_000, v, dtype=np.float16) for v in range(4)]
    seen, stop = [], threading.Event()

    def write(v):
        for _ in range(20):
            cache.save("m", "k" * 40, values[v])

    def read():
        while not stop.is_set():
            got = cache.load("m", "k" * 40, 50_000)
            if got is not None:
                seen.append(float(got[0]) if np.all(got == got[0]) else None)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(v,)) for v in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert cache.corrupt == 0 and None not in seen
    assert not list((tmp_path / "sklearn_cae_features").rglob("*.new"))


def test_training_maps_are_memory_mapped(images, tmp_path, monkeypatch):
    import sklearn_cae.featurizer as featurizer

    trained_on = []

    def spy(views, **kwargs):
        trained_on.append(views.views[0])
        return fit_autoencoder(views, **kwargs)

    monkeypatch.setattr(featurizer, "fit_autoencoder", spy)
    CAETransferFeaturizer(cache=tmp_path, **FAST_CAE).fit(images)
    assert len(trained_on) == 1 and isinstance(trained_on[0], np.memmap)
    # The backing file is anonymous: nothing is left in the cache folder.
    assert not any((tmp_path / "sklearn_cae_features" / "tmp").iterdir())
    # Without a cache too (in the system's temporary folder): memory does not grow with N.
    CAETransferFeaturizer(**FAST_CAE).fit(images)
    assert len(trained_on) == 2 and isinstance(trained_on[1], np.memmap)


def test_fill_cache_stores_the_maps_of_x_and_fits_nothing(images, tmp_path, monkeypatch):
    settings = {**FAST_CAE, "batch_size": 8}
    featurizer = CAETransferFeaturizer(cache=tmp_path, **settings)
    assert featurizer.fill_cache(images) is featurizer
    with pytest.raises(NotFittedError):
        check_is_fitted(featurizer)
    assert _n_entries(tmp_path) == len(images)
    # A fold then computes no map: it reads each image's maps as batched in X, the
    # same whichever fold (or process) comes first.
    saved = []
    monkeypatch.setattr(
        FeatureCache, "save_many", lambda self, model, keys, values: saved.append(keys)
    )
    fold = np.random.default_rng(2).permutation(len(images))[:11]
    fitted = clone(featurizer).fit(images[fold])
    in_batches_of_x = CAETransferFeaturizer(**settings).fit(images[:2])
    for got, expected in zip(
        fitted.backbone_maps(images[fold], standardized=False),
        in_batches_of_x.backbone_maps(images, standardized=False),
        strict=True,
    ):
        np.testing.assert_array_equal(got, expected[fold])
    assert saved == []


def test_fill_cache_of_files_computes_only_the_missing_maps(images, tmp_path, monkeypatch):
    paths = []
    for i, image in enumerate(images[:10]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    cache = tmp_path / "cache"
    featurizer = BackboneFeaturizer(cache=cache, **FAST)
    featurizer.fill_cache(paths[:6])
    calls = {"load_many": 0, "save_many": []}
    load_many, save_many = FeatureCache.load_many, FeatureCache.save_many

    def counting_load(self, *args, **kwargs):
        calls["load_many"] += 1
        return load_many(self, *args, **kwargs)

    def recording_save(self, model, keys, values):
        calls["save_many"].extend(keys)
        return save_many(self, model, keys, values)

    monkeypatch.setattr(FeatureCache, "load_many", counting_load)
    monkeypatch.setattr(FeatureCache, "save_many", recording_save)
    featurizer.fill_cache(paths)
    # The 6 stored maps are neither read back nor computed again; the 4 new ones are.
    assert calls["load_many"] == 0 and len(calls["save_many"]) == 4
    assert _n_entries(cache) == 10


def test_fill_cache_needs_a_cache(images):
    with pytest.raises(
        ValueError, match=r"fill_cache needs a cache: set BackboneFeaturizer\(cache"
    ):
        BackboneFeaturizer(**FAST).fill_cache(images)


def test_grid_search_in_parallel_shares_the_cache(images, tmp_path):
    y = np.arange(len(images)) % 2
    grid = {"feat__bottleneck": [4, 8]}

    def search(cache, n_jobs):
        pipe = Pipeline(
            [
                ("feat", CAETransferFeaturizer(cache=cache, **FAST_CAE)),
                ("clf", LogisticRegression()),
            ]
        )
        return GridSearchCV(pipe, grid, cv=2, n_jobs=n_jobs).fit(images[:16], y[:16])

    parallel = search(str(tmp_path), n_jobs=2)
    serial = search(None, n_jobs=1)
    np.testing.assert_allclose(
        parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )
    assert _n_entries(tmp_path) == 16
