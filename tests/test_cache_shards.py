"""The cache for large collections: file keys, shards, damage, eviction, processes, faults."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sklearn_cae
import sklearn_cae.images
from sklearn_cae import BackboneFeaturizer
from sklearn_cae.cache import CacheWriteWarning, FeatureCache, _store, model_digest, parse_size

from .helpers import FAST as FAST_FEATURIZER
from .helpers import run_with_file_size_limit

# Raw pooled maps: these tests count decodes and backbone passes of transform, and a
# block-balanced fit would read (and cache) every image first.
FAST = {**FAST_FEATURIZER, "balance_blocks": False}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file semantics")
STORE = Path("sklearn_cae_features") / "shards-v2"


@pytest.fixture
def files(tmp_path) -> list[str]:
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(12):
        path = folder / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Paths decoded (in this process: no DataLoader workers)."""
    monkeypatch.setenv("SKLEARN_CAE_NUM_WORKERS", "0")
    from sklearn_cae.images import _loader  # where the DataLoader's items are decoded

    seen, real = [], _loader.read_image

    def counting(path, **kwargs):
        seen.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(_loader, "read_image", counting)
    return seen


@pytest.fixture
def fresh_stores(monkeypatch):
    """Forget this process's open shards and indexes, as a new process would."""
    monkeypatch.setattr(_store, "_STORES", {})


def _forwards(featurizer) -> list[int]:
    calls = [0]
    featurizer.backbone_.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _shards(root: Path) -> list[Path]:
    return sorted((root / STORE / "shards").glob("*.shard"))


def test_files_are_keyed_without_decoding(files, decodes, tmp_path):
    expected = BackboneFeaturizer(**FAST).fit(files).transform(files)
    cache = FeatureCache(tmp_path / "cache")
    featurizer = BackboneFeaturizer(cache=cache, **FAST).fit(files)
    np.testing.assert_array_equal(featurizer.transform(files), expected)  # cold
    decodes.clear()
    calls = _forwards(featurizer)
    np.testing.assert_array_equal(featurizer.transform(files[::-1]), expected[::-1])  # warm
    assert decodes == [] and calls[0] == 0
    assert len(_shards(tmp_path / "cache")) == 1  # one shard, not one file per image
    # key="content" decodes every file to hash its pixels, and reads the same maps.
    content = BackboneFeaturizer(cache=FeatureCache(tmp_path / "c2", key="content"), **FAST)
    np.testing.assert_array_equal(content.fit(files).transform(files), expected)
    decodes.clear()
    content.transform(files)
    assert len(decodes) == len(files)


def test_file_modified_after_caching_is_recomputed(files, tmp_path):
    featurizer = BackboneFeaturizer(cache=tmp_path / "cache", **FAST).fit(files)
    featurizer.transform(files)
    old = os.stat(files[3])
    Image.fromarray(np.full((20, 20), 7, np.uint8)).save(files[3])
    os.utime(files[3], ns=(old.st_atime_ns, old.st_mtime_ns + 1))
    calls = _forwards(featurizer)
    got = featurizer.transform(files)
    assert calls[0] == 1  # one batch, holding the modified file alone
    # A batch of one image: convolutions may round its float16 maps differently.
    expected = BackboneFeaturizer(**FAST).fit(files).transform(files)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)
    assert np.abs(got[3] - featurizer.transform(files[:3])[0]).max() > 0.01  # new pixels


def test_resumed_run_computes_bit_identical_maps(files, tmp_path):
    """Whole batches missing after a kill are batched as in an uninterrupted run."""
    params = {**FAST, "batch_size": 4}
    expected = BackboneFeaturizer(**params).fit(files).transform(files)
    featurizer = BackboneFeaturizer(cache=tmp_path, **params).fit(files)
    featurizer.transform(files[:4])  # the first batch, as a killed run left it
    featurizer.transform(files[8:12])  # and the third
    calls = _forwards(featurizer)
    np.testing.assert_array_equal(featurizer.transform(files), expected)
    assert calls[0] == 1


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 700)


@pytest.mark.parametrize("damage", [_flip_middle, _truncate], ids=["bit flip", "truncated"])
def test_damaged_shard_is_detected_and_recomputed(files, tmp_path, damage):
    expected = BackboneFeaturizer(**FAST).fit(files).transform(files)
    BackboneFeaturizer(cache=tmp_path, **FAST).fit(files).transform(files)
    FeatureCache(tmp_path).close()
    (shard,) = _shards(tmp_path)
    damage(shard)
    cache = FeatureCache(tmp_path)
    featurizer = BackboneFeaturizer(cache=cache, **FAST).fit(files)
    calls = _forwards(featurizer)
    recomputed = featurizer.transform(files)
    assert cache.corrupt >= 1 and calls[0] >= 1
    # Damaged entries are recomputed in a smaller batch: float16 rounding may differ.
    np.testing.assert_allclose(recomputed, expected, rtol=2e-3, atol=2e-3)
    again = FeatureCache(tmp_path)
    np.testing.assert_array_equal(
        BackboneFeaturizer(cache=again, **FAST).fit(files).transform(files), recomputed
    )
    assert again.corrupt == 0 and again.hits == len(files)


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_lost_or_damaged_index_is_rebuilt_from_the_shards(tmp_path, damage, monkeypatch):
    values = np.arange(30 * 8, dtype=np.float16).reshape(30, 8)
    keys = [f"{i:040d}" for i in range(30)]
    FeatureCache(tmp_path).save_many("m", keys, values)
    monkeypatch.setattr(_store, "_STORES", {})  # as a new process
    index = tmp_path / STORE / "index.sqlite"
    if damage == "deleted":
        index.unlink()
    else:
        index.write_bytes(b"not a database" * 100)
    cache = FeatureCache(tmp_path)
    loaded = cache.load_many("m", keys, 8)
    np.testing.assert_array_equal(np.stack(loaded), values)
    assert cache.info().entries == 30


def test_size_cap_evicts_least_recently_used(tmp_path, fresh_stores):
    cap = parse_size("1M")
    cache = FeatureCache(tmp_path, max_size=cap)
    row = np.zeros((1, 5000), np.float16)  # about 10 kB per entry
    for i in range(300):  # about 3 MB written in all
        cache.save_many("m", [f"{i:040d}"], row + i)
        if i % 10 == 0:
            cache.load_many("m", [f"{0:040d}"], 5000)  # entry 0 stays in use
    size = cache.info().size
    assert 0.8 * cap <= size <= 1.05 * cap, size
    assert cache.load("m", f"{0:040d}", 5000) is not None  # recently used: kept
    assert cache.load("m", f"{1:040d}", 5000) is None  # least recently used: evicted
    np.testing.assert_array_equal(cache.load("m", f"{299:040d}", 5000), row[0] + 299)
    assert cache.corrupt == 0


def test_info_and_prune(tmp_path, fresh_stores):
    legacy = tmp_path / "sklearn_cae_features" / ("a" * 32) / "ab"
    legacy.mkdir(parents=True)
    (legacy / "old.f16").write_bytes(b"x" * 1000)
    cache = FeatureCache(tmp_path)
    cache.save_many("m", [f"{i:040d}" for i in range(100)], np.ones((100, 1000), np.float16))
    info = cache.info()
    assert (info.entries, info.shards, info.models, info.legacy_size) == (100, 1, 1, 1000)
    assert "100 images' maps" in str(info) and "older format" in str(info)
    evicted = cache.prune("100K")
    info = cache.info()
    assert evicted == 100 - info.entries and info.size <= 100 << 10 and info.legacy_size == 0
    assert info.size == info.live_size + (tmp_path / STORE / "index.sqlite").stat().st_size
    with pytest.raises(ValueError, match="such as '500M'"):
        parse_size("ten gigs")


def test_processes_writing_one_cache_stay_safe(tmp_path):
    """Writers, each evicting to a cap, never expose a wrong or partial entry."""
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from sklearn_cae.cache import FeatureCache
        cache = FeatureCache({str(tmp_path)!r}, max_size=300_000)
        order = np.random.default_rng(int(sys.argv[1])).permutation(200)
        for i in order:
            cache.save_many("m", [f"{{i:040d}}"], np.full((1, 2000), i, np.float16))
            got = cache.load("m", f"{{(i * 7) % 200:040d}}", 2000)
            assert got is None or (got == (i * 7) % 200).all()
        assert cache.corrupt == 0
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(seed)], stderr=subprocess.PIPE)
        for seed in range(3)
    ]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read().decode()
    cache = FeatureCache(tmp_path)
    for i, got in enumerate(cache.load_many("m", [f"{i:040d}" for i in range(200)], 2000)):
        assert got is None or (got == i).all()
    assert cache.corrupt == 0 and cache.info().size <= 1.2 * 300_000
    assert not list((tmp_path / STORE / "shards").glob(".*"))


def test_other_release_or_format_is_never_read(monkeypatch):
    net = torch.nn.Conv2d(3, 2, 1)
    args = dict(layers=["x"], image_size=(8, 8), intensity="auto", mean=(0,) * 3, std=(1,) * 3)
    before = model_digest(net, device=torch.device("cpu"), **args)
    monkeypatch.setattr(sklearn_cae, "__version__", "99.0")
    assert model_digest(net, device=torch.device("cpu"), **args) != before
    monkeypatch.undo()
    monkeypatch.setattr(sklearn_cae.cache._keys, "FORMAT", 99)  # the store's format
    assert model_digest(net, device=torch.device("cpu"), **args) != before


def test_full_disk_while_writing_a_shard(tmp_path):
    """One warning, features as without a cache, and nothing corrupt left in the cache."""
    cache = tmp_path / "cache"
    X = np.random.default_rng(0).integers(0, 256, (64, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "X.npy", X)
    code = f"""
        import hashlib
        import warnings
        import numpy as np
        from sklearn_cae import BackboneFeaturizer
        from sklearn_cae.cache import CacheWriteWarning
        X = np.load({str(tmp_path / "X.npy")!r})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = BackboneFeaturizer(cache={str(cache)!r}, **{FAST!r}).fit(X).transform(X)
        warned = [w for w in caught if issubclass(w.category, CacheWriteWarning)]
        assert len(warned) == 1, [str(w.message) for w in caught]
        print(hashlib.sha256(got.tobytes()).hexdigest())  # no file: the disk is full
    """
    result = run_with_file_size_limit(code, 40_000, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = BackboneFeaturizer(**FAST).fit(X).transform(X)
    assert result.stdout.split()[-1] == hashlib.sha256(expected.tobytes()).hexdigest()
    assert sum(p.stat().st_size for p in _shards(cache)) <= 40_000
    assert not list((cache / STORE / "shards").glob(".*"))
    reader = FeatureCache(cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWriteWarning)
        again = BackboneFeaturizer(cache=reader, **FAST).fit(X)
        np.testing.assert_array_equal(again.transform(X), expected)
    assert reader.corrupt == 0 and 0 < reader.hits < len(X)


def test_non_ascii_keys_round_trip(tmp_path):
    cache = FeatureCache(tmp_path)
    values = np.arange(6, dtype=np.float16)
    cache.save("modèle", "clé-é", values)
    np.testing.assert_array_equal(cache.load("modèle", "clé-é", 6), values)
    assert cache.corrupt == 0


def test_prune_gives_back_dead_space_under_the_cap(tmp_path):
    cache = FeatureCache(tmp_path)
    for value in range(3):  # the same entry replaced: two dead records
        cache.save("m", "k", np.full(1000, value, dtype=np.float16))
    cache.close()
    before = cache.info()
    assert before.size - before.live_size >= 2 * 2000
    assert cache.prune("1G") == 0  # nothing evicted ...
    after = cache.info()  # ... but the two dead records' space is given back
    assert after.size <= before.size - 2 * 2000 and after.live_size == before.live_size
    np.testing.assert_array_equal(cache.load("m", "k", 1000), np.full(1000, 2, np.float16))
