"""The ``sklearn-cae`` command line: each command, its help, and bad arguments."""

from __future__ import annotations

import csv
import subprocess
import sys

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
