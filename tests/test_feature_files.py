"""Writing features of many images to a file: formats, resuming, unreadable images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.feature_files import (
    UnreadableImageError,
    fit_write_features,
    list_inputs,
    progress_folder,
    write_features,
)

from .helpers import FAST, FAST_CAE

# A progress folder removed and made again must not leave the cache unwritable.
pytestmark = pytest.mark.filterwarnings("error::sklearn_cae.cache.CacheWriteWarning")


def png_folder(root, n: int = 10):
    """``root`` with ``n`` random 20 x 20 PNG files in class sub-folders "a" and "b"."""
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(sub / f"{i}.png")
    return root


@pytest.fixture
def folder(tmp_path):
    return png_folder(tmp_path / "images")


@pytest.fixture
def fitted(folder):
    X, _ = list_inputs(folder)
    return BackboneFeaturizer(**FAST).fit(X)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_list_inputs_folder_text_file_and_npz(folder, tmp_path):
    (folder / ".hidden").mkdir()
    Image.new("L", (8, 8)).save(folder / ".hidden" / "x.png")
    (folder / "notes.txt").write_text("not an image")
    X, names = list_inputs(folder)
    assert len(X) == 10 and X == sorted(X) and names == X
    listing = tmp_path / "list.txt"
    listing.write_text("# two images\nimages/a/1.png\n\nimages/b/0.png\n")
    X, _ = list_inputs(listing)
    assert X == [str(tmp_path / "images/a/1.png"), str(tmp_path / "images/b/0.png")]
    np.savez(tmp_path / "x.npz", images=np.zeros((3, 8, 8), np.uint8))
    X, names = list_inputs(tmp_path / "x.npz")
    assert X.shape == (3, 8, 8) and names[2] == f"{tmp_path / 'x.npz'}[2]"


@pytest.mark.parametrize("suffix", [".parquet", ".npz", ".csv"])
def test_formats_hold_paths_then_named_features(fitted, folder, tmp_path, suffix):
    X, names = list_inputs(folder)
    output = tmp_path / f"features{suffix}"
    report = write_features(fitted, X, output, chunk_size=4, progress=False)
    expected = fitted.transform(X)
    columns = ["path", *fitted.get_feature_names_out()]
    if suffix == ".parquet":
        table = pd.read_parquet(output)
    elif suffix == ".csv":
        assert b"\r\n" not in output.read_bytes()
        table = pd.read_csv(output)
    else:
        with np.load(output) as archive:
            table = pd.DataFrame(archive["features"], columns=archive["feature_names"])
            table.insert(0, "path", archive["paths"])
    assert list(table.columns) == columns and table["path"].tolist() == names
    np.testing.assert_array_equal(table.iloc[:, 1:].to_numpy(np.float32), expected)
    assert (report.rows, report.features, report.reused_rows) == (10, expected.shape[1], 0)
    assert _leftovers(tmp_path) == []


def _interrupt_at(monkeypatch, cls, n: int) -> None:
    """Make ``cls.transform`` raise KeyboardInterrupt (Ctrl-C) at its n-th call only."""
    real, calls = cls.transform, []

    def transform(self, X):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(self, X)

    monkeypatch.setattr(cls, "transform", transform)


def test_interrupted_run_resumes_to_the_same_output(fitted, folder, tmp_path, monkeypatch):
    X, _ = list_inputs(folder)
    whole = tmp_path / "whole.npz"
    write_features(fitted, X, whole, chunk_size=3, progress=False)
    output = tmp_path / "out.npz"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, BackboneFeaturizer, 3)
        with pytest.raises(KeyboardInterrupt):
            write_features(fitted, X, output, chunk_size=3, progress=False)
    assert not output.exists() and progress_folder(output).is_dir()
    chunks = sorted(progress_folder(output).glob("rows-*.npz"))
    assert len(chunks) == 2
    chunks[1].write_bytes(chunks[1].read_bytes()[:50])  # torn by a power cut
    (tmp_path / f".{output.name}.x1y2.tmp").write_bytes(b"partial")  # a killed final write
    report = write_features(fitted, X, output, chunk_size=3, progress=False)
    assert report.reused_rows == 3  # the intact chunk; the torn one was recomputed
    assert output.read_bytes() == whole.read_bytes()
    assert _leftovers(tmp_path) == []


def test_progress_of_other_arguments_is_not_reused(fitted, folder, tmp_path, monkeypatch):
    X, _ = list_inputs(folder)
    output = tmp_path / "out.csv"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, BackboneFeaturizer, 2)
        with pytest.raises(KeyboardInterrupt):
            write_features(fitted, X, output, chunk_size=5, progress=False)
    other = BackboneFeaturizer(**{**FAST, "pooling": "max"}).fit(X)
    report = write_features(other, X, output, chunk_size=5, progress=False)
    assert report.reused_rows == 0
    np.testing.assert_allclose(pd.read_csv(output).iloc[:, 1:], other.transform(X), rtol=1e-6)


def test_fit_then_write_resumes_and_reuses_the_fit(folder, tmp_path, monkeypatch):
    X, _ = list_inputs(folder)
    featurizer = CAETransferFeaturizer(**FAST_CAE)
    whole = tmp_path / "whole.parquet"
    model, report = fit_write_features(featurizer, X, whole, progress=False)
    assert not hasattr(featurizer, "cae_") and model.cache is None and not report.reused_fit
    np.testing.assert_array_equal(
        pd.read_parquet(whole).iloc[:, 1:].to_numpy(np.float32),
        CAETransferFeaturizer(**FAST_CAE).fit(X).transform(X),
    )
    # Interrupted while writing: the run again reuses the kept fit and maps.
    output = tmp_path / "out.parquet"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, CAETransferFeaturizer, 2)
        with pytest.raises(KeyboardInterrupt):
            fit_write_features(featurizer, X, output, chunk_size=5, progress=False)
    _, report = fit_write_features(featurizer, X, output, chunk_size=5, progress=False)
    assert report.reused_fit and report.reused_rows == 5
    pd.testing.assert_frame_equal(pd.read_parquet(output), pd.read_parquet(whole))
    assert _leftovers(tmp_path) == []
    # With a cache, a second run over the same images reuses the fit kept there.
    cached = CAETransferFeaturizer(**{**FAST_CAE, "cache": tmp_path / "cache"})
    fit_write_features(cached, X, tmp_path / "a.parquet", progress=False)
    _, report = fit_write_features(cached, X, tmp_path / "b.parquet", progress=False)
    assert report.reused_fit
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    # A reused fit runs with this run's options (device, cache, verbosity), not the saved.
    rerun = cached.set_params(**{"verbose": 1, "cache": str(tmp_path / "cache")})
    model, report = fit_write_features(rerun, X, tmp_path / "c.parquet", progress=False)
    assert report.reused_fit and model.verbose == 1 and model.cache == str(tmp_path / "cache")


def _break(folder):
    """A file whose header reads but whose pixels do not, and a file that is no image."""
    truncated = folder / "a" / "1.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    (folder / "b" / "junk.png").write_bytes(b"not a png at all")
    return str(truncated), str(folder / "b" / "junk.png")


@pytest.mark.parametrize("fit", [False, True], ids=["write", "fit and write"])
def test_unreadable_images_fail_by_name_or_are_skipped(fitted, folder, tmp_path, fit):
    X, _ = list_inputs(folder)
    truncated, junk = _break(folder)
    X, _ = list_inputs(folder)
    output = tmp_path / "out.csv"

    def run(**kwargs):
        if fit:
            return fit_write_features(CAETransferFeaturizer(**FAST_CAE), X, output, **kwargs)[1]
        return write_features(fitted, X, output, chunk_size=4, progress=False, **kwargs)

    with pytest.raises(UnreadableImageError, match=r"junk\.png.*--skip-bad") as error:
        run()
    assert error.value.path == junk
    (folder / "b" / "junk.png").unlink()
    X, _ = list_inputs(folder)
    with pytest.raises(UnreadableImageError, match=r"1\.png") as error:
        run()  # found only when its pixels are decoded
    assert error.value.path == truncated
    (folder / "b" / "junk.png").write_bytes(b"not a png at all")
    X, _ = list_inputs(folder)
    report = run(skip_bad=True)
    assert sorted(path for path, _ in report.skipped) == sorted([truncated, junk])
    table = pd.read_csv(output)
    assert report.rows == len(table) == 9 and truncated not in set(table["path"])
    assert "junk.png\t" in report.skipped_text()
    # A listed file that is gone is skipped like an unreadable one.
    X = [*X, str(folder / "b" / "gone.png")]
    report = run(skip_bad=True)
    assert sorted(path for path, _ in report.skipped) == sorted([truncated, junk, X[-1]])
    assert report.rows == len(pd.read_csv(output)) == 9


def test_fit_and_write_read_each_header_once_beyond_the_fit_and_transform(
    folder, tmp_path, monkeypatch
):
    """One probe before any work, then only those the featurizer's own fit and transform make."""
    from sklearn_cae.images import _source

    probed = []
    probe = _source.probe_file
    monkeypatch.setattr(
        _source, "probe_file", lambda index, path: probed.append(path) or probe(index, path)
    )
    X, _ = list_inputs(folder)
    featurizer = BackboneFeaturizer(**FAST)
    fit_write_features(featurizer, X, tmp_path / "a.csv", chunk_size=4, progress=False)
    # Each header: the probe, the fit's own check of X, the transform's of its chunk.
    assert sorted(probed) == sorted(X * 3)
