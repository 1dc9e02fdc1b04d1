"""``sklearn-cae featurize`` and ``sklearn-cae cache``: feature files, resuming, the cache."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer, persistence
from sklearn_cae.cli import main
from sklearn_cae.feature_files import fit_write_features, list_inputs, progress_folder

from .helpers import FAST
from .test_feature_files import png_folder

# The model options of tests/helpers.py's FAST_CAE, as the command line spells them.
TINY_CAE = [
    *("--image-size", "32", "--batch-size", "16", "--max-epochs", "2"),
    *("--layer-sizes", "16", "--bottleneck", "8", "-q"),
]


@pytest.fixture
def folder(tmp_path):
    return png_folder(tmp_path / "images")


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sklearn-cae"), lines
    return lines[0]


def _table(path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    with np.load(path) as archive:
        table = pd.DataFrame(archive["features"], columns=archive["feature_names"])
        table.insert(0, "path", archive["paths"])
    return table


def test_fit_then_apply_the_saved_featurizer_in_each_format(folder, tmp_path, capsys):
    parquet, model = tmp_path / "features.parquet", tmp_path / "featurizer.joblib"
    argv = ["featurize", str(folder), "-o", str(parquet), *TINY_CAE]
    assert main([*argv, "--save-model", str(model)]) == 0
    featurizer = persistence.load(model)
    n_features = len(featurizer.get_feature_names_out())
    assert f"wrote 10 rows of {n_features} features to {parquet}" in capsys.readouterr().out
    files, _ = list_inputs(folder)
    expected = featurizer.transform(files)
    table = pd.read_parquet(parquet)
    assert list(table.columns) == ["path", *featurizer.get_feature_names_out()]
    assert table["path"].tolist() == files
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(np.float32), expected, rtol=1e-5)
    for suffix in (".csv", ".npz"):
        out = tmp_path / f"features{suffix}"
        assert main(["featurize", str(folder), "-o", str(out), "--model", str(model), "-q"]) == 0
        pd.testing.assert_frame_equal(_table(out), table, check_dtype=False, rtol=1e-6)
    assert b"\r\n" not in (tmp_path / "features.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_run_again_after_an_interruption_gives_the_same_output(
    folder, tmp_path, capsys, monkeypatch
):
    # Chunks of 4 images, so that an interruption falls between two of them.
    monkeypatch.setitem(fit_write_features.__kwdefaults__, "chunk_size", 4)
    whole, out = tmp_path / "whole.csv", tmp_path / "out.csv"
    assert main(["featurize", str(folder), "-o", str(whole), *TINY_CAE]) == 0
    real, calls = CAETransferFeaturizer.transform, []

    def interrupted(self, X):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second chunk
        return real(self, X)

    with monkeypatch.context() as patch:
        patch.setattr(CAETransferFeaturizer, "transform", interrupted)
        assert main(["featurize", str(folder), "-o", str(out), *TINY_CAE]) == 130
    err = capsys.readouterr().err
    assert "run the same command again to continue" in err and "interrupted" in err
    assert not out.exists() and progress_folder(out).is_dir()
    assert main(["featurize", str(folder), "-o", str(out), *TINY_CAE]) == 0
    assert "reused from an earlier run: the fitted featurizer and 4 rows" in capsys.readouterr().out
    assert out.read_bytes() == whole.read_bytes()
    assert not progress_folder(out).exists()


def test_help_says_how_to_resume(capsys):
    with pytest.raises(SystemExit):
        main(["featurize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("run the same command again", ".<OUT>.progress", "--cache", "--skip-bad"):
        assert words in text
    for option in ("--backbone", "--layer", "--image-size", "--device", "--batch-size", "-q"):
        assert option in text


def _save_pipeline(folder, path):
    """A BackboneFeaturizer + StandardScaler + SVC fitted on ``folder``, saved to ``path``."""
    files, _ = list_inputs(folder)
    y = np.arange(len(files)) % 2
    pipe = Pipeline(
        [("feat", BackboneFeaturizer(**FAST)), ("scale", StandardScaler()), ("svc", SVC())]
    ).fit(files, y)
    persistence.dump(pipe, path)
    return pipe, path, files


@pytest.fixture
def saved_pipeline(folder, tmp_path):
    return _save_pipeline(folder, tmp_path / "pipe.joblib")


@pytest.mark.parametrize("suffix", [".skops", ".joblib"])
def test_model_may_be_a_saved_pipeline(suffix, folder, tmp_path):
    pipe, path, files = _save_pipeline(folder, tmp_path / f"pipe{suffix}")
    out = tmp_path / "features.npz"
    assert main(["featurize", str(folder), "-o", str(out), "--model", str(path), "-q"]) == 0
    table = _table(out)
    assert list(table.columns) == ["path", *pipe[0].get_feature_names_out()]
    np.testing.assert_allclose(table.iloc[:, 1:], pipe[0].transform(files), rtol=1e-6)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["-o", "{folder}/features.csv"], "inside the input folder"),
        (["-o", "{tmp}/features.txt"], "must end in .parquet, .npz, .csv"),
        (["-o", "{tmp}/f.csv", "--model", "{model}", "--image-size", "64"], "--image-size set"),
        (["-o", "{tmp}/f.csv", "--model", "{model}", "--save-model", "{tmp}/m.skops"], "none is"),
        (["-o", "{tmp}/f.csv", "--save-model", "{tmp}/m.pkl"], r"\.skops .*or \.joblib"),
        (["-o", "{tmp}/f.csv", "--supervision", "1"], "needs labels"),
        (["-o", "{tmp}/f.csv", "--resample", "smote"], "featurize fits none"),
        (["-o", "{tmp}/f.csv", "--model", "{tmp}/missing.skops"], "no such model file"),
    ],
)
def test_bad_arguments_are_one_line_before_any_work(
    extra, match, saved_pipeline, folder, tmp_path, capsys, monkeypatch
):
    def no_work(*args, **kwargs):
        raise AssertionError("the arguments were not checked before the work")

    monkeypatch.setattr(BackboneFeaturizer, "transform", no_work)
    monkeypatch.setattr(CAETransferFeaturizer, "fit", no_work)
    names = {"folder": folder, "tmp": tmp_path, "model": saved_pipeline[1]}
    argv = ["featurize", str(folder), *(word.format(**names) for word in extra)]
    assert main(argv) == 1
    assert re.search(match, _one_error_line(capsys))
    assert not (folder / "features.csv").exists()


def test_unreadable_image_is_named_or_skipped_and_listed(saved_pipeline, folder, tmp_path, capsys):
    _, model, _ = saved_pipeline
    (folder / "b" / "junk.png").write_bytes(b"not a png at all")
    out = tmp_path / "features.csv"
    argv = ["featurize", str(folder), "-o", str(out), "--model", str(model), "-q"]
    assert main(argv) == 1
    error = _one_error_line(capsys)
    assert "junk.png" in error and "--skip-bad" in error and not out.exists()
    assert main([*argv, "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 10 rows" in printed and "skipped 1 unreadable images" in printed
    assert f"{folder / 'b' / 'junk.png'}\t" in printed
    assert len(pd.read_csv(out)) == 10


# ------------------------------------------------------------------------------ cache
def test_cache_info_and_prune(saved_pipeline, folder, tmp_path, capsys):
    _, model, _ = saved_pipeline
    cache = tmp_path / "cache"
    argv = ["featurize", str(folder), "-o", str(tmp_path / "f.npz"), "--model", str(model)]
    assert main([*argv, "--cache", str(cache), "-q"]) == 0
    capsys.readouterr()
    assert main(["cache", "info", str(cache)]) == 0
    assert "entries:  10 images' maps, for 1 backbone setting(s)" in capsys.readouterr().out
    assert main(["cache", "prune", str(cache), "--max-size", "0"]) == 0
    assert capsys.readouterr().out.startswith("evicted 10 entries")
    assert main(["cache", "info", str(cache)]) == 0
    assert "entries:  0 images' maps" in capsys.readouterr().out


def test_cache_commands_refuse_what_is_not_a_cache(tmp_path, capsys):
    assert main(["cache", "info", str(tmp_path / "none")]) == 1
    assert "is not a feature cache" in _one_error_line(capsys)
    assert not (tmp_path / "none").exists()  # not created by asking
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "prune", str(tmp_path), "--max-size", "lots"])
    assert exit_info.value.code == 2
    assert "expected a size such as 500M" in _one_error_line(capsys)
