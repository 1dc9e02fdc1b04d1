"""The ``sklearn-cae`` command line: each command, its help, and bad arguments."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sklearn_cae.cli import load_data, main

# Tiny model settings, so each command runs in seconds on a CPU.
TINY = ["--image-size", "32", "--max-epochs", "1", "--batch-size", "16"]
TINY_CAE = [*TINY, "--layer-sizes", "16", "--bottleneck", "8"]


def _one_error_line(capsys, prog="sklearn-cae") -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{prog}") and "error:" in err
    return err


@pytest.fixture
def covid_folder(covid_root):
    return covid_root / "images"


# ------------------------------------------------------------------------- help
def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("evaluate", "fit", "predict", "demo"):
        assert command in out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("evaluate", ["DATA", "--folds", "--max-images", "--image-size", "MedMNIST", ".npz"]),
        ("fit", ["DATA", "--output", "--backbone", "--layer-sizes", "--bottleneck"]),
        ("predict", ["MODEL", "IMAGES", "--output", "CSV"]),
        ("demo", ["--dataset", "--folds"]),
    ],
)
def test_command_help_is_complete(capsys, command, expected):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in expected:
        assert word in out, word


def test_module_and_console_script_entry_points():
    module = subprocess.run(
        [sys.executable, "-m", "sklearn_cae", "--help"], capture_output=True, text=True
    )
    assert module.returncode == 0, module.stderr
    assert "python -m sklearn_cae" in module.stdout and "demo" in module.stdout
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("sklearn-cae") == "sklearn_cae.cli:main"


# -------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["train"],
        ["evaluate"],
        ["evaluate", "breastmnist", "--folds", "1"],
        ["evaluate", "breastmnist", "--folds", "two"],
        ["evaluate", "breastmnist", "--image-size", "0"],
        ["evaluate", "breastmnist", "--split", "holdout"],
        ["fit", "breastmnist"],
        ["fit", "breastmnist", "-o", "m.joblib", "--layer-sizes", "16,-2"],
        ["predict", "model.joblib"],
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    _one_error_line(capsys)


def test_missing_data_folder(capsys, tmp_path):
    assert main(["evaluate", str(tmp_path / "no_such_folder" / "x")]) == 1
    assert "is not a folder" in _one_error_line(capsys)


def test_unknown_medmnist_name(capsys, medmnist_root, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    assert main(["evaluate", "nosuchmnist"]) == 1
    assert "nosuchmnist" in _one_error_line(capsys)


def test_npz_without_the_right_keys(capsys, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, pixels=np.zeros((4, 8, 8), np.uint8))
    assert main(["fit", str(path), "-o", str(tmp_path / "m.joblib")]) == 1
    assert "'images'" in _one_error_line(capsys)


def test_folder_without_classes(capsys, tmp_path):
    assert main(["evaluate", str(tmp_path)]) == 1
    _one_error_line(capsys)


def test_single_class_is_refused(capsys, tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, images=np.zeros((6, 8, 8), np.uint8), labels=np.zeros(6, int))
    assert main(["evaluate", str(path), "--folds", "2"]) == 1
    assert "single class" in _one_error_line(capsys)


def test_too_few_images_per_fold(capsys, tmp_path):
    path = tmp_path / "few.npz"
    np.savez(path, images=np.zeros((6, 8, 8), np.uint8), labels=np.array([0, 0, 0, 0, 0, 1]))
    assert main(["evaluate", str(path), "--folds", "3"]) == 1
    assert "fewer than --folds=3" in _one_error_line(capsys)


def test_fit_output_folder_must_exist(capsys, covid_folder, tmp_path):
    out = tmp_path / "missing" / "model.joblib"
    assert main(["fit", str(covid_folder / "train"), "-o", str(out)]) == 1
    assert "does not exist" in _one_error_line(capsys)


def test_predict_with_missing_model(capsys, tmp_path, covid_folder):
    image = next((covid_folder / "val").rglob("*.jpg"))
    assert main(["predict", str(tmp_path / "none.joblib"), str(image)]) == 1
    assert "no such model file" in _one_error_line(capsys)


def test_predict_with_a_file_that_is_not_a_model(capsys, tmp_path, covid_folder):
    model = tmp_path / "model.joblib"
    model.write_text("not a pickle")
    image = next((covid_folder / "val").rglob("*.jpg"))
    assert main(["predict", str(model), str(image)]) == 1
    assert "is not a model" in _one_error_line(capsys)


def test_bad_featurizer_parameter_is_one_line(capsys, tmp_path):
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(8) % 2)
    argv = ["fit", str(path), "-o", str(tmp_path / "m.joblib"), *TINY, "--layer", "nope"]
    assert main(argv) == 1
    assert "Unknown layer 'nope'" in _one_error_line(capsys)


# ------------------------------------------------------------------- commands
def test_load_data_from_each_source(covid_folder, covid_root, medmnist_root, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    paths, names = load_data(str(covid_folder / "train"))
    assert len(paths) == len(names) > 0 and set(names) == {"Covid", "Normal", "Viral_Pneumonia"}
    images, names = load_data(str(covid_root / "covid19_xray.npz"))
    assert images.ndim == 3 and len(images) == len(names)
    assert set(names) == {"Covid", "Normal", "Viral_Pneumonia"}
    images, names = load_data("breastmnist", split="val")
    assert len(images) == len(names) and set(names) == {"malignant", "normal, benign"}


def _table_rows(out: str) -> dict[str, list[float]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("CAETransferFeaturizer", "BackboneFeaturizer"):
            rows[cells[0]] = [float(c.split("±")[0]) for c in cells[1:]]
    return rows


def test_evaluate_medmnist_prints_a_table(capsys, medmnist_root, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    argv = ["evaluate", "breastmnist", "--max-images", "24", "--folds", "2", *TINY_CAE]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "24 images, 2 classes, 2-fold CV" in out and "ROC AUC" in out
    rows = _table_rows(out)
    assert set(rows) == {"CAETransferFeaturizer", "BackboneFeaturizer"}
    for bacc, auc, seconds in rows.values():
        assert 0 <= bacc <= 1 and 0 <= auc <= 1 and seconds > 0


def test_evaluate_multiclass_npz_reports_macro_f1(capsys, covid_root):
    npz = covid_root / "covid19_xray.npz"
    argv = ["evaluate", str(npz), "--max-images", "24", "--folds", "2", *TINY_CAE]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 classes" in out and "macro F1" in out
    assert len(_table_rows(out)) == 2


def test_fit_then_predict_on_an_image_folder(capsys, covid_folder, tmp_path):
    model = tmp_path / "model.joblib"
    argv = ["fit", str(covid_folder / "train"), "-o", str(model), "--max-images", "24"]
    assert main([*argv, *TINY_CAE, "--sparsity", "0.05"]) == 0
    assert model.is_file() and "saved to" in capsys.readouterr().out
    import joblib

    featurizer = joblib.load(model)[0]
    assert (featurizer.bottleneck, featurizer.sparsity) == (8, 0.05)

    images = sorted((covid_folder / "val" / "Normal").glob("*"))[:3]
    table = tmp_path / "predictions.csv"
    assert main(["predict", str(model), *map(str, images), "-o", str(table)]) == 0
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == [str(p) for p in images]
    assert {row["prediction"] for row in rows} <= {"Covid", "Normal", "Viral_Pneumonia"}

    # A folder expands to the image files under it; without -o the CSV goes to stdout.
    capsys.readouterr()
    assert main(["predict", str(model), str(covid_folder / "val" / "Covid")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    n_files = len(list((covid_folder / "val" / "Covid").glob("*")))
    assert lines[0] == "path,prediction" and len(lines) == 1 + n_files

    assert main(["predict", str(model), str(tmp_path / "missing.png")]) == 1
    assert "no such image file" in _one_error_line(capsys)


# --------------------------------------------------------- outputs and inputs
def _npz_data(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    rng = np.random.default_rng(0)
    defaults = {
        "images": rng.integers(0, 256, (8, 16, 16), dtype=np.uint8),
        "labels": np.arange(8) % 2,
    }
    np.savez(path, **{**defaults, **arrays})
    return path


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if the command gets as far as building (and fitting) a pipeline."""

    def refuse(args):
        pytest.fail("the output should have been refused before fitting")

    monkeypatch.setattr("sklearn_cae.cli._pipelines", refuse)


def _unwritable_folder(tmp_path) -> Path:
    """A folder no one can create files in (root ignores permission bits, so /proc)."""
    import os

    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc to find a folder that root cannot write to")
    return Path("/proc")


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (lambda tmp: tmp, "is a folder"),
        (lambda tmp: _unwritable_folder(tmp) / "model.joblib", "cannot write to folder"),
        (lambda tmp: tmp / "data.npz", "also an input"),
        (lambda tmp: tmp / "data.npz" / "model.joblib", "cannot write the model"),
        (lambda tmp: "", "empty string"),
    ],
    ids=["a folder", "unwritable folder", "the input", "under a file", "empty"],
)
def test_fit_output_is_checked_before_fitting(output, match, tmp_path, capsys, no_fit):
    """An -o that could not be written failed only after the whole fit."""
    data = _npz_data(tmp_path)
    before = data.read_bytes()
    assert main(["fit", str(data), "-o", str(output(tmp_path)), *TINY_CAE]) == 1
    assert match in _one_error_line(capsys)
    assert data.read_bytes() == before


def test_predict_refuses_to_write_over_its_inputs(tmp_path, capsys):
    model = tmp_path / "model.joblib"
    assert main(["fit", str(_npz_data(tmp_path)), "-o", str(model), *TINY_CAE]) == 0
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    link = tmp_path / "link.joblib"
    link.symlink_to(model)
    saved = model.read_bytes()
    for output in (model, image, link):
        capsys.readouterr()
        assert main(["predict", str(model), str(image), "-o", str(output)]) == 1
        assert "also an input" in _one_error_line(capsys)
    assert model.read_bytes() == saved
    assert main(["predict", str(model), str(image), "-o", str(tmp_path)]) == 1
    assert "is a folder" in _one_error_line(capsys)


def test_outputs_keep_permissions_and_follow_links(tmp_path, capsys):
    """Written through a temporary file, the model still gets normal permissions."""
    target = tmp_path / "models" / "model.joblib"
    target.parent.mkdir()
    link = tmp_path / "latest.joblib"
    link.symlink_to(target)
    assert main(["fit", str(_npz_data(tmp_path)), "-o", str(link), *TINY_CAE]) == 0
    assert link.is_symlink() and target.is_file()
    assert target.stat().st_mode & 0o044  # not mkstemp's 0600
    assert not list(target.parent.glob(".*.tmp"))


# ----------------------------------------------------------------- npz labels
@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"class_names": np.array(["a", "b"]), "labels": np.arange(8) % 3}, r"label 2 of image 2"),
        ({"class_names": np.array(["a", "b"]), "labels": np.arange(8) % 2 - 1}, r"label -1"),
        ({"labels": np.array([0, 1, 0.5, 1, 0, 1, 0, 1])}, r"whole numbers.*label 2 is 0.5"),
        ({"labels": np.array([0, 1, np.nan, 1, 0, 1, 0, 1])}, r"label 2 is nan"),
        ({"class_names": np.array(["a", "a"])}, r"distinct names"),
        (
            {"class_names": np.array(["a", "b"]), "labels": np.array(list("abababab"))},
            r"holds names",
        ),
        ({"labels": np.zeros((8, 2), int)}, r"1-D with one label per image"),
        ({"labels": np.array([1j] * 8)}, r"integers or strings"),
    ],
    ids=[
        "beyond class_names",
        "negative",
        "fractional",
        "NaN",
        "duplicate names",
        "names with class_names",
        "2-D",
        "complex",
    ],
)
def test_malformed_npz_labels_are_refused(arrays, match, tmp_path, capsys, no_fit):
    """Labels beyond class_names were a raw IndexError; negatives became the last name."""
    data = _npz_data(tmp_path, **arrays)
    assert main(["fit", str(data), "-o", str(tmp_path / "m.joblib"), *TINY_CAE]) == 1
    assert "data.npz" in (err := _one_error_line(capsys)) and re.search(match, err), err


def test_npz_labels_that_are_whole_floats_or_a_column_are_accepted(tmp_path):
    _, y = load_data(str(_npz_data(tmp_path, labels=(np.arange(8) % 2).astype(float))))
    assert sorted(set(y)) == ["0", "1"]
    names = np.array(["benign", "malignant"])
    _, y = load_data(
        str(_npz_data(tmp_path, "col.npz", labels=(np.arange(8) % 2)[:, None], class_names=names))
    )
    assert y.tolist() == ["benign", "malignant"] * 4


@pytest.mark.parametrize(
    "content",
    [b"not a zip at all", b"PK\x03\x04 truncated zip"],
    ids=["not an npz", "truncated"],
)
def test_unreadable_npz_is_one_line(content, tmp_path, capsys):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    assert main(["evaluate", str(path)]) == 1
    assert "broken.npz" in _one_error_line(capsys)


def test_empty_data_and_image_arguments_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" once meant the working directory
    assert main(["evaluate", ""]) == 1
    assert "empty" in _one_error_line(capsys)
    assert main(["predict", "model.joblib", ""]) == 1
    assert "empty" in _one_error_line(capsys)


# -------------------------------------------------------------------- messages
def test_messages_show_plain_names_and_no_empty_parentheses(tmp_path, capsys):
    data = _npz_data(tmp_path, labels=np.array(["a"] * 8))
    assert main(["evaluate", str(data), "--folds", "2"]) == 1
    err = _one_error_line(capsys)
    assert "('a')" in err and "np.str_" not in err
    empty = tmp_path / "empty.joblib"
    empty.write_bytes(b"")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert main(["predict", str(empty), str(image)]) == 1
    assert "()" not in _one_error_line(capsys)


def _class_folder(tmp_path, corrupt=True) -> tuple[Path, Path]:
    """Two classes of 6 PNGs; the last image of class b (index 11 of 12) is truncated."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 256, (40, 40), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "data" / name / f"{i}.png")
    bad = tmp_path / "data" / "b" / "5.png"
    if corrupt:
        bad.write_bytes(bad.read_bytes()[:200])
    return tmp_path / "data", bad


def test_evaluate_names_images_by_their_index_in_data(tmp_path, capsys):
    """Errors inside a CV fold gave the image's index within the fold."""
    folder, bad = _class_folder(tmp_path)
    assert main(["evaluate", str(folder), "--folds", "2", *TINY_CAE]) == 1
    err = _one_error_line(capsys)
    assert f"image 11 ({str(bad)!r})" in err, err


def test_fit_names_images_by_their_index_in_data(tmp_path, capsys):
    """With --max-images, indices were those within the random subset."""
    from sklearn_cae.cli import _subsample

    folder, _ = _class_folder(tmp_path, corrupt=False)  # corrupt one the subset keeps
    data, labels = load_data(str(folder))
    subset, _ = _subsample(data, labels, 10, 0)
    index = data.index(subset[-1])
    assert index != len(subset) - 1
    Path(subset[-1]).write_bytes(Path(subset[-1]).read_bytes()[:200])
    argv = ["fit", str(folder), "-o", str(tmp_path / "m.joblib"), "--max-images", "10"]
    assert main([*argv, *TINY_CAE]) == 1
    err = _one_error_line(capsys)
    assert f"image {index} ({subset[-1]!r})" in err, err


def test_predict_help_warns_that_models_are_pickles(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "pickle" in out and "runs code" in out and "trust" in out
