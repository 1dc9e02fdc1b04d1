"""Faults: hostile files, interrupted runs, full disks, failed writes.

A hostile file must fail fast and by name; Ctrl-C must stop a fit and leave nothing
fitted or saved; a write that fails (full disk, file-size limit, Ctrl-C) must leave
what was there before. Disk-full conditions are simulated with ``RLIMIT_FSIZE`` in a
subprocess (Python ignores SIGXFSZ, so writes past the limit fail with EFBIG).
"""

from __future__ import annotations

import builtins
import os
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image
from skorch.callbacks import Callback

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer, cli
from sklearn_cae.images import as_image_source, check_intensity, read_image

from .helpers import FAST, FAST_CAE, run_with_file_size_limit, write_dicom

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file semantics")

RNG = np.random.default_rng(0)
GOOD = RNG.integers(0, 256, size=(8, 16, 16), dtype=np.uint8)
TINY_CAE = [
    *("--image-size", "32", "--max-epochs", "2", "--batch-size", "4"),
    *("--layer-sizes", "8", "--bottleneck", "4", "--layer", "blocks.1"),
]


def _fitted_attributes(estimator) -> list[str]:
    return [key for key in vars(estimator) if key.endswith("_") and not key.startswith("_")]


def _npz(tmp_path: Path) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, images=GOOD, labels=np.arange(len(GOOD)) % 2)
    return path


# ------------------------------------------------------------------- hostile files
class _ReadCounter:
    """Count the bytes read through ``open`` in binary mode (ours and pydicom's)."""

    def __init__(self, monkeypatch):
        self.total = 0
        real_open = builtins.open

        def counting_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            return _Counted(handle, self) if "b" in mode and "r" in mode else handle

        monkeypatch.setattr(builtins, "open", counting_open)


class _Counted:
    def __init__(self, handle, counter):
        self._handle, self._counter = handle, counter

    def read(self, size=-1):
        data = self._handle.read(size)
        self._counter.total += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


def _zero_filled(tmp_path):
    path = tmp_path / "zeros.dcm"
    with open(path, "wb") as file:
        file.truncate(8 << 20)  # sparse: no disk used
    return path


def _magic_then_zeros(tmp_path):
    path = tmp_path / "magic.dcm"
    with open(path, "wb") as file:
        file.write(b"\0" * 128 + b"DICM")
        file.truncate(8 << 20)
    return path


def _magic_without_suffix(tmp_path):
    path = _magic_then_zeros(tmp_path)
    return path.rename(tmp_path / "magic_no_suffix")


@pytest.mark.parametrize("make", [_zero_filled, _magic_then_zeros, _magic_without_suffix])
def test_hostile_dicom_headers_are_read_with_a_bound(make, tmp_path, monkeypatch):
    """An 8 MiB file of zeros took 7.5 s to be refused: parsed in full, 8 bytes at a time."""
    pytest.importorskip("pydicom")
    path = make(tmp_path)
    counter = _ReadCounter(monkeypatch)
    with pytest.raises(ValueError, match=rf"Image 0: '.*{path.name}'.*not a readable DICOM"):
        as_image_source([str(path)])
    with pytest.raises(ValueError, match="DICOM"):
        read_image(path)
    assert counter.total < 3 << 20


def test_dicom_with_junk_after_its_pixels_is_decoded_with_a_bound(tmp_path, monkeypatch):
    path = Path(write_dicom(tmp_path / "junk.dcm", np.zeros((4, 4), np.uint16).tobytes()))
    with open(path, "ab") as file:
        file.truncate(path.stat().st_size + (16 << 20))  # 16 MiB of zero "elements"
    counter = _ReadCounter(monkeypatch)
    with pytest.raises(ValueError):
        read_image(path)
    assert counter.total < 6 << 20


def _good_png(tmp_path, name="good.png"):
    path = tmp_path / name
    Image.fromarray(GOOD[0]).save(path)
    return str(path)


def _decode_all(paths, num_workers=0):
    source = as_image_source(paths, num_workers=num_workers)
    return list(source.batches(2, image_size=(8, 8)))


@pytest.mark.parametrize(
    ("pixels", "match"),
    [
        (np.zeros((2, 4), np.uint16).tobytes(), r"less than expected"),  # short pixel data
        (np.zeros((3, 4, 4), np.uint16).tobytes(), r"shape \(3, 4, 4\).*one frame"),  # frames
    ],
    ids=["pixel data too short", "more frames than declared"],
)
def test_dicom_decoding_errors_name_the_file_and_index(pixels, match, tmp_path):
    bad = write_dicom(tmp_path / "bad.dcm", pixels)
    paths = [_good_png(tmp_path), _good_png(tmp_path, "second.png"), bad]
    with pytest.raises(ValueError, match=rf"image 2 \('.*bad\.dcm'\).*{match}") as excinfo:
        _decode_all(paths)
    assert (excinfo.value.image_index, excinfo.value.image_path) == (2, bad)


def test_decoding_errors_from_worker_processes_name_the_file(tmp_path):
    bad = write_dicom(tmp_path / "short.dcm", np.zeros((2, 4), np.uint16).tobytes())
    with pytest.raises(ValueError, match=r"image 1 \('.*short\.dcm'\).*less than expected"):
        _decode_all([_good_png(tmp_path), bad], num_workers=1)


def _to_colour(path):
    Image.fromarray(np.stack([GOOD[1]] * 3, axis=-1)).save(path, format="PNG")


def _to_text(path):
    Path(path).write_text("no longer an image")


def _to_nothing(path):
    os.unlink(path)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (_to_colour, ValueError, r"image 1 \('.*changed\.png'\).*did the file change"),
        (_to_text, ValueError, r"Cannot decode image 1 \('.*changed\.png'\)"),
        (_to_nothing, FileNotFoundError, r"image 1 \('.*changed\.png'\)"),
    ],
    ids=["grey to colour", "image to text", "deleted"],
)
def test_file_changed_after_its_header_was_read(change, error, match, tmp_path):
    """Once a raw torch RuntimeError from stacking 1- and 3-channel images."""
    paths = [_good_png(tmp_path), _good_png(tmp_path, "changed.png")]
    source = as_image_source(paths, num_workers=0)
    change(paths[1])
    with pytest.raises(error, match=match):
        list(source.batches(2, image_size=(8, 8)))


def test_featurizer_reports_the_file_that_fails_to_decode(tmp_path):
    bad = write_dicom(tmp_path / "short.dcm", np.zeros((2, 4), np.uint16).tobytes())
    paths = [_good_png(tmp_path), bad]
    feat = CAETransferFeaturizer(**FAST_CAE, layer="blocks.1")
    with pytest.raises(ValueError, match=r"image 1 \('.*short\.dcm'\)"):
        feat.fit(paths)
    assert not _fitted_attributes(feat)


# ---------------------------------------------------------------------- silent NaN
@pytest.mark.parametrize(
    "window",
    [(-1e308, 1e308), (0.0, 1e39), (1.0, 1.0 + 1e-12), (0.0, 1e-45), (0.0, float("inf"))],
)
def test_windows_that_float32_cannot_represent_are_refused(window):
    with pytest.raises(ValueError, match=r"intensity must be.*float32"):
        check_intensity(window)
    with pytest.raises(ValueError, match=r"intensity must be"):
        BackboneFeaturizer(**FAST, layer="blocks.1", intensity=window).fit(GOOD)


def test_widest_representable_window_gives_finite_features():
    X = np.concatenate([GOOD, np.full((1, 16, 16), 255, np.uint8)]).astype(np.float32) * 1e36
    feat = BackboneFeaturizer(**FAST, layer="blocks.1", intensity=(-3.4e38, 3.4e38))
    assert np.isfinite(feat.fit_transform(X)).all()


# ----------------------------------------------------------------------- interrupts
class _InterruptAtEpochEnd(Callback):
    def on_epoch_end(self, net, **kwargs):
        raise KeyboardInterrupt


class _InterruptAtBatchEnd(Callback):
    def on_batch_end(self, net, **kwargs):
        raise KeyboardInterrupt


@pytest.mark.parametrize("callback", [_InterruptAtEpochEnd, _InterruptAtBatchEnd])
def test_ctrl_c_during_cae_training_propagates_and_leaves_nothing_fitted(callback):
    """skorch swallows KeyboardInterrupt: fit returned a 'fitted' featurizer after 1 epoch."""
    feat = CAETransferFeaturizer(**{**FAST_CAE, "max_epochs": 5}, layer="blocks.1")
    feat.set_params(callbacks=[callback()])
    with pytest.raises(KeyboardInterrupt):
        feat.fit(GOOD)
    assert not _fitted_attributes(feat)
    with pytest.raises(KeyboardInterrupt):
        feat.fit_transform(GOOD)
    assert not _fitted_attributes(feat)


def _interrupting_cli(monkeypatch):
    """Make the CLI's featurizer raise KeyboardInterrupt at the end of its first epoch."""
    from sklearn_cae import pipelines

    build = pipelines.featurizer_pipelines

    def with_interrupt(params, **kwargs):  # callbacks reach the CAE featurizer only
        return build({**params, "callbacks": [_InterruptAtEpochEnd()]}, **kwargs)

    monkeypatch.setattr(pipelines, "featurizer_pipelines", with_interrupt)


@pytest.mark.parametrize("existing", [False, True], ids=["new model", "existing model"])
def test_ctrl_c_during_cli_fit_saves_no_model(existing, tmp_path, monkeypatch, capsys):
    model = tmp_path / "model.joblib"
    if existing:
        model.write_bytes(b"the previous, good model")
    _interrupting_cli(monkeypatch)
    assert cli.main(["fit", str(_npz(tmp_path)), "-o", str(model), *TINY_CAE]) == 130
    assert "interrupted" in capsys.readouterr().err
    if existing:
        assert model.read_bytes() == b"the previous, good model"
    else:
        assert not model.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["data.npz", *(["model.joblib"] if existing else [])]
    )


def test_ctrl_c_while_the_model_is_written_keeps_the_old_one(tmp_path, monkeypatch, capsys):
    model = tmp_path / "model.joblib"
    model.write_bytes(b"the previous, good model")

    def interrupted_dump(value, file, *args, **kwargs):
        file.write(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(joblib, "dump", interrupted_dump)
    assert cli.main(["fit", str(_npz(tmp_path)), "-o", str(model), *TINY_CAE]) == 130
    assert model.read_bytes() == b"the previous, good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "model.joblib"]


# ------------------------------------------------------- full disks, failed writes
def test_fit_output_on_a_full_disk_keeps_the_previous_model(tmp_path):
    """fit -o wrote in place: a failed write left a truncated file where a model was."""
    model = tmp_path / "model.joblib"
    previous = b"the previous, good model" * 100
    model.write_bytes(previous)
    code = f"""
        import sys
        from sklearn_cae.cli import main
        sys.exit(main(["fit", {str(_npz(tmp_path))!r}, "-o", {str(model)!r}, *{TINY_CAE!r}]))
    """
    result = run_with_file_size_limit(code, 16 << 10, tmp_path)  # the model is far larger
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()  # progress lines, then the error
    errors = [line for line in lines if "error:" in line]
    assert errors == lines[-1:] and "File too large" in errors[0], result.stderr
    assert model.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "model.joblib"]


def test_predict_output_on_a_full_disk_keeps_the_previous_csv(tmp_path):
    images = [_good_png(tmp_path, f"img{i}.png") for i in range(3)]
    model = tmp_path / "model.joblib"
    assert cli.main(["fit", str(_npz(tmp_path)), "-o", str(model), *TINY_CAE]) == 0
    table = tmp_path / "predictions.csv"
    table.write_text("previous predictions\n")
    code = f"""
        import sys
        from sklearn_cae.cli import main
        sys.exit(main(["predict", {str(model)!r}, *{images!r}, "-o", {str(table)!r}]))
    """
    result = run_with_file_size_limit(code, 16, tmp_path)
    assert result.returncode == 1, result.stderr
    assert table.read_text() == "previous predictions\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_full_disk_while_caching_degrades_to_no_cache(tmp_path):
    """Cache writes are an optimisation: failing ones warn, and the fit goes on."""
    cache = tmp_path / "cache"
    code = f"""
        import warnings
        import numpy as np
        from sklearn_cae import CAETransferFeaturizer
        from sklearn_cae.cache import CacheWriteWarning
        X = np.random.default_rng(0).integers(0, 256, (8, 16, 16), dtype=np.uint8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            codes = CAETransferFeaturizer(
                cache={str(cache)!r}, image_size=32, batch_size=4, max_epochs=1,
                layer="blocks.1", layer_sizes=(8,), bottleneck=4, random_state=0,
            ).fit_transform(X)
        assert np.isfinite(codes).all()
        kinds = {{type(w.message) for w in caught}}
        assert CacheWriteWarning in kinds, [str(w.message) for w in caught]
        print("fitted")
    """
    result = run_with_file_size_limit(code, 0, tmp_path)
    assert result.returncode == 0 and "fitted" in result.stdout, result.stderr
    assert not list(cache.rglob("*.tmp"))
    # Nothing corrupt was left: the same cache, now writable, gives the uncached features.
    X = np.random.default_rng(0).integers(0, 256, (8, 16, 16), dtype=np.uint8)
    params = {
        "image_size": 32,
        "batch_size": 4,
        "max_epochs": 1,
        "layer": "blocks.1",
        "layer_sizes": (8,),
        "bottleneck": 4,
        "random_state": 0,
    }
    expected = CAETransferFeaturizer(**params).fit_transform(X)
    for _ in range(2):  # the first run fills the cache, the second reads it
        np.testing.assert_array_equal(
            CAETransferFeaturizer(**params, cache=str(cache)).fit_transform(X), expected
        )


def test_full_cache_folder_keeps_training_maps_elsewhere(tmp_path):
    """A full (or read-only) cache folder made the CAE's training maps fail to allocate."""
    cache = tmp_path / "cache"
    X = GOOD
    params = {**FAST_CAE, "layer": "blocks.1", "cache": str(cache)}
    expected = CAETransferFeaturizer(**params).fit_transform(X)  # populates the cache
    code = f"""
        import warnings
        import numpy as np
        from sklearn_cae import CAETransferFeaturizer
        X = np.load({str(tmp_path / "X.npy")!r})
        warnings.simplefilter("ignore")
        codes = CAETransferFeaturizer(**{params!r}).fit_transform(X)
        np.save({str(tmp_path / "codes.npy")!r}, codes)
    """
    np.save(tmp_path / "X.npy", X)
    limit = (tmp_path / "X.npy").stat().st_size + 4096  # codes fit; the training maps do not
    result = run_with_file_size_limit(code, limit, tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "codes.npy"), expected, atol=1e-5)
