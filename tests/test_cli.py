"""The ``sklearn-cae`` command line: each command, its help, and bad arguments."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sklearn_cae.cli import main
from sklearn_cae.datasets import load_dataset

# Tiny model settings, so each command runs in seconds on a CPU.
TINY = ["--image-size", "32", "--max-epochs", "1", "--batch-size", "16"]
TINY_CAE = [*TINY, "--layer-sizes", "16", "--bottleneck", "8"]


def _one_error_line(capsys, prog="sklearn-cae") -> str:
    """The error: one line, the last on stderr (progress lines may come before it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert errors[0].startswith(f"{prog}")
    return errors[0]


@pytest.fixture
def covid_folder(covid_root):
    return covid_root / "images"


# ------------------------------------------------------------------------- help
def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("evaluate", "fit", "predict", "featurize", "export", "cache", "demo"):
        assert re.search(rf"^    {command} +\S", out, re.MULTILINE), command  # help beside it


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "evaluate",
            [
                *("DATA", "--folds", "--max-images", "--image-size", "MedMNIST", ".npz"),
                *("--intensity", "dicom_window", "--device", "--cache", "--quiet", "--verbose"),
                *("--resample", "smote", "undersample", "oversample"),
            ],
        ),
        (
            "fit",
            [
                *("DATA", "--output", "--backbone", "--layer-sizes", "--bottleneck"),
                *("--intensity", "--device", "--cache", "--quiet", "probabilities"),
                "--resample",
            ],
        ),
        (
            "predict",
            [
                *("MODEL", "IMAGES", "--output", "CSV", "proba_<class>", "score_<class>"),
                *("--device", "--cache", "--quiet", "--verbose"),
            ],
        ),
        ("demo", ["--dataset", "--folds", "--n-jobs"]),
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
        ["evaluate", "breastmnist", "--intensity", "400,-1000"],
        ["evaluate", "breastmnist", "--intensity", "hounsfield"],
        ["evaluate", "breastmnist", "--intensity", "-1000"],
        ["evaluate", "breastmnist", "-q", "-v"],
        ["predict", "model.joblib", "x.png", "--intensity", "auto"],  # the model's own
        ["evaluate", "breastmnist", "--resample", "adasyn"],
        ["fit", "breastmnist", "-o", "m.joblib", "--resample", "SMOTE"],
        ["predict", "model.joblib", "x.png", "--resample", "smote"],  # the model's own
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
    captured = capsys.readouterr()
    out = captured.out
    assert "24 images, 2 classes, 2-fold CV" in out and "ROC AUC" in out
    assert "classes: 'malignant' (6), 'normal, benign' (18)" in out
    rows = _table_rows(out)
    assert set(rows) == {"CAETransferFeaturizer", "BackboneFeaturizer"}
    for bacc, auc, seconds in rows.values():
        assert 0 <= bacc <= 1 and 0 <= auc <= 1 and seconds > 0
    # Progress by default: a line per method and fold on stderr; no bar, no colour codes
    # and no carriage returns when stderr is not a terminal.
    lines = captured.err.strip().splitlines()
    for name in ("CAETransferFeaturizer", "BackboneFeaturizer"):
        for fold in (1, 2):
            assert any(line.startswith(f"{name}: fold {fold}/2: balanced acc.") for line in lines)
    assert "\x1b[" not in captured.err and "\r" not in captured.err


def test_evaluate_multiclass_npz_reports_macro_f1(capsys, covid_root):
    npz = covid_root / "covid19_xray.npz"
    argv = ["evaluate", str(npz), "--max-images", "24", "--folds", "2", "-q", *TINY_CAE]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "3 classes" in captured.out and "macro F1" in captured.out
    assert len(_table_rows(captured.out)) == 2
    assert captured.err == ""  # -q: results only


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
    classes = ["Covid", "Normal", "Viral_Pneumonia"]
    assert {row["prediction"] for row in rows} <= set(classes)
    # Class probabilities, one column per class, summing to one.
    for row in rows:
        probabilities = [float(row[f"proba_{c}"]) for c in classes]
        assert all(0 <= p <= 1 for p in probabilities)
        assert sum(probabilities) == pytest.approx(1, abs=1e-4)

    # A folder expands to the image files under it; without -o the CSV goes to stdout.
    capsys.readouterr()
    assert main(["predict", str(model), str(covid_folder / "val" / "Covid")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    n_files = len(list((covid_folder / "val" / "Covid").glob("*")))
    assert lines[0] == "path,prediction,proba_Covid,proba_Normal,proba_Viral_Pneumonia"
    assert len(lines) == 1 + n_files

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

    def refuse(*args, **kwargs):
        pytest.fail("the output should have been refused before fitting")

    monkeypatch.setattr("sklearn_cae.pipelines.featurizer_pipelines", refuse)


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
    from sklearn_cae.cli._data import subsample

    folder, _ = _class_folder(tmp_path, corrupt=False)  # corrupt one the subset keeps
    data, labels = load_dataset(str(folder))
    subset, _ = subsample(data, labels, 10, 0)
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
    assert "a .skops model loads without running code" in out
    assert "sklearn_cae.persistence.TRUSTED_TYPES and scikit-learn types are trusted" in out


# ------------------------------------------------------------ issue 13: real work
def _mixed_class_folder(root: Path) -> Path:
    """Two classes of grey, RGB, RGBA, grey + alpha, palette and CMYK files."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for c, name in enumerate(("a", "b")):
        folder = root / "mixed" / name
        folder.mkdir(parents=True)
        for i in range(6):
            grey = rng.integers(0, 256, (30 + 2 * i, 34), dtype=np.uint8) // (1 + 2 * c)
            rgb = np.dstack([grey, grey // 2, 255 - grey])
            images = {
                "grey.png": Image.fromarray(grey),
                "rgb.png": Image.fromarray(rgb),
                "rgba.png": Image.fromarray(np.dstack([rgb, grey]), "RGBA"),
                "grey_alpha.png": Image.merge("LA", [Image.fromarray(grey)] * 2),
                "palette.png": Image.fromarray(rgb).convert("P"),
                "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
            }
            kind = list(images)[i]
            images[kind].save(folder / f"{i}_{kind}")
    return root / "mixed"


def test_mixed_image_folder_through_evaluate_fit_and_predict(tmp_path, capsys):
    """One RGB PNG among grey images was refused ("mixed channel counts")."""
    folder = _mixed_class_folder(tmp_path)
    assert main(["evaluate", str(folder), "--folds", "2", *TINY_CAE]) == 0
    out = capsys.readouterr().out
    assert "12 images, 2 classes" in out and "classes: 'a' (6), 'b' (6)" in out
    assert len(_table_rows(out)) == 2

    model = tmp_path / "model.joblib"
    assert main(["fit", str(folder), "-o", str(model), *TINY_CAE]) == 0
    import joblib

    assert joblib.load(model)[0].n_input_channels_ == 3
    table = tmp_path / "all.csv"
    assert main(["predict", str(model), str(folder), "-o", str(table)]) == 0
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and set(rows[0]) == {"path", "prediction", "proba_a", "proba_b"}

    # Grey only, or colour only, with a model fitted on the mix (needs channels="convert"
    # in the featurizers: transform accepts another channel count than fit's).
    capsys.readouterr()
    for pattern in ("*grey*.png", "*rgb.png"):
        files = [str(p) for p in sorted(folder.rglob(pattern))]
        assert main(["predict", str(model), *files]) == 0, capsys.readouterr().err
        assert len(capsys.readouterr().out.strip().splitlines()) == 1 + len(files)


def _small_model(tmp_path, classifier, n_classes=2) -> Path:
    """A saved featurizer + classifier pipeline (not from 'fit'), and its images."""
    import joblib
    from PIL import Image
    from sklearn.pipeline import make_pipeline

    from sklearn_cae import BackboneFeaturizer

    rng = np.random.default_rng(2)
    X = rng.integers(0, 256, (6 * n_classes, 16, 16), dtype=np.uint8)
    y = np.repeat([f"c{k}" for k in range(n_classes)], 6)
    X[y == "c1"] //= 3
    pipe = make_pipeline(BackboneFeaturizer(image_size=32, layer="blocks.1"), classifier)
    joblib.dump(pipe.fit(X, y), tmp_path / "own.joblib")
    for i in range(3):
        Image.fromarray(X[i]).save(tmp_path / f"x{i}.png")
    return tmp_path / "own.joblib"


@pytest.mark.parametrize(
    ("n_classes", "columns"),
    [(2, ["score_c1"]), (3, ["score_c0", "score_c1", "score_c2"])],
    ids=["two classes", "three classes"],
)
def test_predict_writes_decision_scores_without_probabilities(n_classes, columns, tmp_path, capsys):
    from sklearn.svm import SVC

    model = _small_model(tmp_path, SVC(), n_classes)
    images = [str(tmp_path / f"x{i}.png") for i in range(3)]
    assert main(["predict", str(model), *images, "-q"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert list(rows[0]) == ["path", "prediction", *columns]
    import joblib

    expected = joblib.load(model).decision_function(images).reshape(3, -1)
    got = np.array([[float(row[c]) for c in columns] for row in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert captured.err == ""


def test_intensity_option_reaches_the_model(tmp_path):
    """--intensity -1000,400 (a CT window) must not be taken for an option."""
    from sklearn_cae.cli import build_parser
    from sklearn_cae.cli._options import join_option_values

    parser = build_parser()
    for given, expected in [
        (["--intensity", "-1000,400"], (-1000.0, 400.0)),
        (["--intensity=-160,240"], (-160.0, 240.0)),
        (["--intensity", "dicom_window"], "dicom_window"),
        (["--intensity", "minmax"], "minmax"),
    ]:
        argv = join_option_values(["evaluate", "breastmnist", *given])
        assert parser.parse_args(argv).intensity == expected
    model = tmp_path / "model.joblib"
    data = _npz_data(tmp_path, images=np.random.default_rng(0).integers(-2000, 2000, (8, 16, 16)))
    argv = ["fit", str(data), "-o", str(model), "--intensity", "-1000,400", "-q", *TINY_CAE]
    assert main(argv) == 0
    import joblib

    assert joblib.load(model)[0].intensity == (-1000.0, 400.0)


def test_run_options_apply_to_the_run_not_the_saved_model(tmp_path, capsys):
    """--device, --cache and -v on every command; a saved model keeps none of them."""
    import joblib

    data, model = _npz_data(tmp_path), tmp_path / "model.joblib"
    fit_cache, predict_cache = tmp_path / "fit_cache", tmp_path / "predict_cache"
    argv = ["fit", str(data), "-o", str(model), "--device", "cpu", "--cache", str(fit_cache)]
    assert main([*argv, "-v", *TINY_CAE]) == 0
    out = capsys.readouterr().out
    assert "train_loss" in out  # -v: the auto-encoder's epoch table ...
    assert "\x1b[" not in out  # ... without colour codes, stdout not being a terminal
    assert any(p.is_file() for p in fit_cache.rglob("*"))
    featurizer = joblib.load(model)[0]
    assert (featurizer.device, featurizer.cache, featurizer.verbose) == ("auto", None, 0)
    assert featurizer.cae_params is None

    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    argv = ["predict", str(model), str(image), "--device", "cpu", "--cache", str(predict_cache)]
    assert main(argv) == 0
    assert any(p.is_file() for p in predict_cache.rglob("*"))
    assert "predicting 1 images" in capsys.readouterr().err
    assert main(["predict", str(model), str(image), "--device", "tpu"]) == 1
    assert "device" in _one_error_line(capsys)
    assert main(["predict", str(model), str(image), "--cache", str(data / "sub")]) == 1
    _one_error_line(capsys)


def test_progress_is_silenced_by_quiet(tmp_path, capsys):
    data, model = _npz_data(tmp_path), tmp_path / "model.joblib"
    assert main(["fit", str(data), "-o", str(model), "-q", *TINY_CAE]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "saved to" in captured.out
    assert main(["fit", str(data), "-o", str(model), *TINY_CAE]) == 0
    err = capsys.readouterr().err
    assert "fitting CAETransferFeaturizer" in err and "'0' (4), '1' (4)" in err


def test_class_folders_named_like_splits_are_warned_about(tmp_path, capsys):
    """evaluate on a data set's root took train/ and val/ for classes without a word."""
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "root" / split / "benign").mkdir(parents=True)
        for i in range(3):
            image = np.full((8, 8), 40 * i, np.uint8)
            Image.fromarray(image).save(tmp_path / "root" / split / "benign" / f"{i}.png")
    assert main(["evaluate", str(tmp_path / "root"), "--folds", "5"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    warning = [line for line in lines if "warning:" in line]
    assert len(warning) == 1 and "['train', 'val']" in warning[0]
    assert "named like data splits" in warning[0] and str(tmp_path / "root" / "train") in warning[0]
    assert "error:" in lines[-1]  # 3 images per class, fewer than 5 folds


def test_a_class_of_one_image_gives_scores_and_a_warning(tmp_path, capsys):
    data = _npz_data(tmp_path, labels=np.array([0] * 7 + [1]))
    model = tmp_path / "model.joblib"
    assert main(["fit", str(data), "-o", str(model), *TINY_CAE]) == 0
    assert "too few to calibrate" in capsys.readouterr().err
    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    assert main(["predict", str(model), str(image)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "path,prediction,score_1"


# ---------------------------------------------------------- --resample (imblearn)
def _imbalanced_npz(tmp_path) -> Path:
    """16 images: 12 of class 'common', 4 of class 'rare' (darker)."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (16, 16, 16), dtype=np.uint8)
    images[12:] //= 3
    names = np.array(["common", "rare"])
    return _npz_data(tmp_path, images=images, labels=np.repeat([0, 1], [12, 4]), class_names=names)


@pytest.mark.parametrize(
    ("resample", "sampler", "n_fitted"),
    [
        ("none", None, 16),
        ("undersample", "randomundersampler", 8),
        ("oversample", "randomoversampler", 24),
        ("smote", "smote", 24),
    ],
)
def test_fit_resample_balances_what_the_classifier_sees(
    resample, sampler, n_fitted, tmp_path, capsys
):
    import joblib

    model_path = tmp_path / "model.joblib"
    argv = ["fit", str(_imbalanced_npz(tmp_path)), "-o", str(model_path), "--resample", resample]
    assert main([*argv, *TINY_CAE]) == 0
    described = "CAETransferFeaturizer + SVC" if sampler is None else "CAETransferFeaturizer + "
    assert described in capsys.readouterr().err
    model = joblib.load(model_path)
    names = list(model.named_steps)
    if sampler is None:  # the default is the plain scikit-learn pipeline, unchanged
        assert type(model).__module__.startswith("sklearn.") and len(names) == 2
    else:
        assert type(model).__module__.startswith("imblearn.")
        assert names[1] == sampler and model[1].random_state == 0
    # The SVC (refitted on all the data after calibration) saw the resampled features:
    # balanced classes, so class_weight="balanced" gives each class the weight 1.
    svc = model[-1].calibrated_classifiers_[0].estimator
    assert svc.shape_fit_[0] == n_fitted
    if sampler is not None:
        np.testing.assert_allclose(svc.class_weight_, [1.0, 1.0])

    # The saved model predicts (no resampling at prediction time).
    from PIL import Image

    images = []
    for i in range(3):
        images.append(tmp_path / f"x{i}.png")
        Image.fromarray(np.full((16, 16), 60 * i, np.uint8)).save(images[-1])
    assert main(["predict", str(model_path), *map(str, images)]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [row["path"] for row in rows] == [str(p) for p in images]
    assert {row["prediction"] for row in rows} <= {"common", "rare"}
    assert list(rows[0]) == ["path", "prediction", "proba_common", "proba_rare"]
    assert len(model.predict([str(p) for p in images])) == 3


def test_evaluate_resample_scores_untouched_test_folds(tmp_path, capsys, monkeypatch):
    """The sampler resamples each training fold; the held-out fold is scored as it is."""
    from imblearn.under_sampling import RandomUnderSampler

    resampled_sizes = []
    fit_resample = RandomUnderSampler.fit_resample

    def recording(self, X, y, **params):
        resampled_sizes.append(len(y))
        return fit_resample(self, X, y, **params)

    monkeypatch.setattr(RandomUnderSampler, "fit_resample", recording)
    argv = ["evaluate", str(_imbalanced_npz(tmp_path)), "--folds", "2", "--resample"]
    assert main([*argv, "undersample", *TINY_CAE]) == 0
    out = capsys.readouterr().out
    assert "features + RandomUnderSampler + SVC" in out
    assert len(_table_rows(out)) == 2
    # Two methods x two folds, each fit on a training fold of 6 + 2 images.
    assert resampled_sizes == [8, 8, 8, 8]


def test_smote_needs_two_images_of_each_class(tmp_path, capsys):
    data = _npz_data(tmp_path, labels=np.array([0] * 7 + [1]))
    argv = ["fit", str(data), "-o", str(tmp_path / "m.joblib"), "--resample", "smote"]
    assert main([*argv, *TINY_CAE]) == 1
    assert "--resample oversample" in _one_error_line(capsys)


def test_option_choices_match_the_package():
    """The CLI spells these out (so that --help imports no torch); they must not drift."""
    from sklearn_cae.cli import _options
    from sklearn_cae.datasets import MEDMNIST_SPLITS
    from sklearn_cae.images import INTENSITY_POLICIES
    from sklearn_cae.pipelines import SAMPLERS

    assert _options.INTENSITY_NAMES == INTENSITY_POLICIES
    assert _options.SPLIT_NAMES == MEDMNIST_SPLITS
    assert _options.SAMPLER_NAMES == tuple(SAMPLERS)


# ------------------------------------------------------------ the command pattern
def test_a_command_is_one_module_and_one_line(monkeypatch, capsys):
    """A module with NAME, add_parser and run, listed in _COMMANDS, is a command."""
    import types

    from sklearn_cae import cli

    ran = []
    hello = types.SimpleNamespace(
        NAME="hello",
        add_parser=lambda subparsers: subparsers.add_parser("hello", help="say hello"),
        run=ran.append,
    )
    monkeypatch.setattr(cli, "_COMMANDS", (*cli._COMMANDS, hello))
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "say hello" in capsys.readouterr().out
    assert main(["hello"]) == 0 and [args.command for args in ran] == ["hello"]
    names = [command.NAME for command in cli._COMMANDS]
    assert names == [
        *("evaluate", "fit", "predict", "featurize", "export", "cache", "demo", "hello")
    ]
    for command in cli._COMMANDS:
        assert callable(command.add_parser) and callable(command.run)


def test_max_images_is_the_package_s_stratified_subset():
    from sklearn_cae.cli._data import subsample
    from sklearn_cae.datasets import stratified_subset

    X = [f"{i}.png" for i in range(40)]
    y = np.repeat(["a", "b"], [10, 30])
    subset, labels = subsample(X, y, 8, 3)
    keep = stratified_subset(y, 8 / 40, random_state=3)
    assert subset == [X[i] for i in keep] and labels.tolist() == y[keep].tolist()
    assert sorted(labels.tolist()) == ["a"] * 2 + ["b"] * 6
    assert subsample(X, y, 40, 3) == (X, y)


# ------------------------------------------------------------------- pipelines
def test_featurizer_pipelines_give_each_featurizer_the_options_it_takes():
    from sklearn.calibration import CalibratedClassifierCV

    from sklearn_cae.pipelines import featurizer_pipelines

    params = {"bottleneck": 8, "image_size": None, "callbacks": [], "verbose": 0}
    y = np.repeat([0, 1], [12, 4])
    built = featurizer_pipelines(
        params, resample="undersample", random_state=5, y=y, smallest_class=4
    )
    assert list(built) == ["CAETransferFeaturizer", "BackboneFeaturizer"]
    cae, backbone = built["CAETransferFeaturizer"][0], built["BackboneFeaturizer"][0]
    assert (cae.bottleneck, cae.callbacks, cae.random_state) == (8, [], 5)
    assert cae.image_size == type(cae)().image_size  # None: the featurizer's default
    assert "bottleneck" not in backbone.get_params()  # taken only where it is a parameter
    for pipe in built.values():
        assert type(pipe[1]).__name__ == "RandomUnderSampler" and len(pipe) == 3
        assert pipe[1].random_state == 5
        assert isinstance(pipe[-1], CalibratedClassifierCV) and pipe[-1].cv == 4
    plain = featurizer_pipelines({})["BackboneFeaturizer"]
    assert type(plain).__module__.startswith("sklearn.") and type(plain[-1]).__name__ == "SVC"


@pytest.mark.parametrize("resample", ["none", "smote"])
def test_featurizer_pipelines_for_unlabelled_images_fit_the_classifier_on_labelled_rows(
    resample,
):
    from sklearn.pipeline import Pipeline

    from sklearn_cae.pipelines import featurizer_pipelines
    from sklearn_cae.semi_supervised import LabelledOnly

    built = featurizer_pipelines({}, resample=resample, random_state=2, unlabelled=True)
    for name, pipe in built.items():
        assert type(pipe) is Pipeline and len(pipe) == 2 and type(pipe[0]).__name__ == name
        final = pipe[-1]
        assert isinstance(final, LabelledOnly)  # the sampler and the SVC never see -1
        if resample == "none":
            assert type(final.estimator).__name__ == "SVC"
        else:
            sampler, svc = (step for _, step in final.estimator.steps)
            assert (type(sampler).__name__, sampler.random_state) == ("SMOTE", 2)
            assert type(svc).__name__ == "SVC"


def test_find_featurizers_through_pipelines_searches_wrappers_and_samplers():
    from itertools import islice

    from imblearn.over_sampling import RandomOverSampler
    from imblearn.pipeline import make_pipeline as make_resampling_pipeline
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.svm import SVC

    from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
    from sklearn_cae.pipelines import find_featurizers

    first, second = BackboneFeaturizer(), CAETransferFeaturizer()
    model = make_resampling_pipeline(
        FunctionTransformer(lambda X: X + 1),
        RandomOverSampler(),
        FunctionTransformer(lambda X: X * 10),
        FrozenEstimator(first),
        make_pipeline(second),
        SVC(),
    )
    assert [f for f, _ in find_featurizers(model)] == [first, second]
    # X as it reaches the first: +1, the sampler passed over, x10; lazily, since going
    # on to the second would need the (unfitted) first featurizer's transform.
    [(featurizer, Xt)] = islice(find_featurizers(model, np.ones(2)), 1)
    assert featurizer is first and Xt.tolist() == [20.0, 20.0]
    assert [f for f, _ in find_featurizers(model, types=(CAETransferFeaturizer,))] == [second]
    # A fitted search: its best estimator, not the template it was given.
    search = GridSearchCV(make_pipeline(BackboneFeaturizer(), SVC()), {})
    search.best_estimator_ = make_pipeline(first, SVC())
    assert [f for f, _ in find_featurizers(search)] == [first]
    assert list(find_featurizers(make_pipeline(SVC()))) == []


# ------------------------------------- issue 19: the rest of the command line
@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if the command gets as far as loading DATA."""

    def refuse(*args, **kwargs):
        pytest.fail("the options should have been refused before loading the data")

    monkeypatch.setattr("sklearn_cae.datasets.load_dataset", refuse)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (["--layer", "blocks.9"], r"Unknown layer 'blocks.9' for backbone 'efficientnet_lite0'"),
        (["--layer", "blocks.1", "--layer", "blocks.1"], r"names a layer twice"),
        (["--backbone", "no_such_net", "--layer", "blocks.1"], r"no_such_net"),
        (["--device", "tpu"], r"device"),
        (["--cache-max-size", "1G"], r"--cache-max-size caps the --cache folder"),
    ],
    ids=["unknown layer", "layer twice", "unknown backbone", "device", "cap without cache"],
)
@pytest.mark.parametrize("command", ["evaluate", "fit"])
def test_options_are_checked_before_the_data_loads(options, match, command, capsys, no_data):
    """--layer blocks.9 was refused only after the data had loaded and the header printed."""
    argv = [command, "breastmnist", *options, *(["-o", "m.joblib"] if command == "fit" else [])]
    assert main(argv) == 1
    assert re.search(match, _one_error_line(capsys))
    assert capsys.readouterr().out == ""  # no header


def test_split_is_refused_for_a_folder_or_an_npz_file(tmp_path, capsys, no_data):
    """--split test on an ImageFolder was silently ignored: the command used all of it."""
    folder = _class_folder(tmp_path, corrupt=False)[0]
    assert main(["evaluate", str(folder), "--split", "test"]) == 1
    assert "leave out --split" in (err := _one_error_line(capsys)) and "folder" in err
    npz = _npz_data(tmp_path)
    assert main(["fit", str(npz), "--split", "val", "-o", str(tmp_path / "m.joblib")]) == 1
    assert "leave out --split" in _one_error_line(capsys)
    (tmp_path / "root" / "test" / "a").mkdir(parents=True)  # a data set's root: a hint
    assert main(["evaluate", str(tmp_path / "root"), "--split", "test"]) == 1
    assert f"give {tmp_path / 'root' / 'test'}" in _one_error_line(capsys)


def test_split_picks_the_medmnist_split(monkeypatch):
    seen = []

    def record(data, split):
        seen.append((data, split))
        raise ValueError("stop here")

    monkeypatch.setattr("sklearn_cae.datasets.load_dataset", record)
    main(["evaluate", "breastmnist", "--split", "test"])
    main(["evaluate", "breastmnist"])
    assert seen == [("breastmnist", "test"), ("breastmnist", "train")]


@pytest.mark.parametrize(
    ("labels", "folds", "expected"),
    [
        ([0] * 7 + [1], 5, "class '1' has 1 image, fewer than --folds=5"),
        ([0] * 6 + [1] * 2, 5, "class '1' has 2 images, fewer than --folds=5"),
    ],
)
def test_too_few_images_for_the_folds_says_how_to_fix_it(labels, folds, expected, tmp_path, capsys):
    """'class 'a' has 1 images, fewer than --folds=5': grammar, and no hint."""
    data = _npz_data(tmp_path, labels=np.array(labels))
    assert main(["evaluate", str(data), "--folds", str(folds)]) == 1
    err = _one_error_line(capsys)
    assert expected in err
    n = labels.count(1)
    assert ("use --folds 2 or fewer" if n == 2 else "give it more images") in err


@pytest.mark.parametrize(
    "output",
    ["data/b/model.joblib", "data/model.joblib", "link/b/model.joblib"],
    ids=["in a class folder", "in DATA", "through a link"],
)
def test_fit_refuses_an_output_inside_the_data_folder(output, tmp_path, capsys, no_fit):
    """fit good -o good/c1x/model.png wrote into the data, and the next fit failed on it."""
    folder = _class_folder(tmp_path, corrupt=False)[0]
    (tmp_path / "link").symlink_to(folder)
    assert main(["fit", str(folder), "-o", str(tmp_path / output), *TINY_CAE]) == 1
    assert "inside the input folder" in _one_error_line(capsys)
    assert not list(folder.rglob("model*"))


def test_predict_refuses_a_csv_inside_an_image_folder(tmp_path, capsys):
    model = tmp_path / "model.joblib"
    assert main(["fit", str(_npz_data(tmp_path)), "-o", str(model), "-q", *TINY_CAE]) == 0
    folder = _class_folder(tmp_path, corrupt=False)[0]
    assert main(["predict", str(model), str(folder), "-o", str(folder / "a" / "p.csv")]) == 1
    assert "inside the input folder" in _one_error_line(capsys)


def test_model_output_names_its_format(tmp_path, capsys, no_fit):
    assert main(["fit", str(_npz_data(tmp_path)), "-o", str(tmp_path / "m.pkl")]) == 1
    assert "must end in .skops" in _one_error_line(capsys)


def test_csv_lines_end_in_a_newline_on_every_os(tmp_path, capsys):
    """The csv module writes \\r\\n by default, on Linux too."""
    model = tmp_path / "model.joblib"
    assert main(["fit", str(_npz_data(tmp_path)), "-o", str(model), "-q", *TINY_CAE]) == 0
    from PIL import Image

    images = []
    for i in range(2):
        images.append(str(tmp_path / f"x{i}.png"))
        Image.fromarray(np.full((16, 16), 90 * i, np.uint8)).save(images[-1])
    table = tmp_path / "p.csv"
    capsys.readouterr()
    assert main(["predict", str(model), *images, "-o", str(table), "-q"]) == 0
    content = table.read_bytes()
    assert b"\r" not in content and content.count(b"\n") == 3
    assert main(["predict", str(model), *images, "-q"]) == 0
    assert "\r" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "command", ["evaluate", "fit", "predict", "featurize", "export", "cache", "demo"]
)
def test_help_never_cuts_an_option_or_example_across_lines(command, capsys, monkeypatch):
    """--help printed "e.g. '--" at the end of a line and "intensity -1000,400'" below."""

    def help_lines(columns: int) -> list[str]:
        monkeypatch.setenv("COLUMNS", str(columns))
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return capsys.readouterr().out.splitlines()

    options = {w.strip("'\",.;:()[]") for w in " ".join(help_lines(1000)).split()}
    options = {w for w in options if w.startswith("--") and len(w) > 2}
    if command in ("evaluate", "fit"):
        assert {"--intensity=-1000,400", "--cache-max-size"} <= options
    for columns in range(50, 161, 3):
        words = {w.strip("'\",.;:()[]") for w in " ".join(help_lines(columns)).split()}
        assert options <= words, (columns, options - words)


def test_extras_table_lists_every_extra():
    """docs/getting_started.rst left out dask (which the README tells users to install)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    table = (root / "docs" / "getting_started.rst").read_text().split("``sklearn-cae`` needs")[1]
    listed = set(re.findall(r"^``([a-z0-9-]+)``\s{2,}", table, re.MULTILINE))
    assert listed == set(extras)


# ------------------------------------------------------ issue 19: the cache cap
def test_cache_max_size_caps_the_cache_of_every_command(tmp_path, capsys):
    from sklearn_cae.cache import FeatureCache

    data, model = _npz_data(tmp_path), tmp_path / "model.joblib"
    uncapped, capped = tmp_path / "uncapped", tmp_path / "capped"
    argv = ["fit", str(data), "-o", str(model), "-q", *TINY_CAE, "--cache"]
    assert main([*argv, str(uncapped)]) == 0
    assert main([*argv, str(capped), "--cache-max-size", "0"]) == 0
    assert FeatureCache(uncapped).info().entries == 8
    assert FeatureCache(capped).info().entries == 0  # each write evicted at once
    import joblib

    assert joblib.load(model)[0].cache is None  # a run setting, never saved
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    predict = ["predict", str(model), str(image), "-q", "--cache", str(capped)]
    assert main([*predict, "--cache-max-size", "0"]) == 0
    assert FeatureCache(capped).info().entries == 0
    assert main(predict) == 0
    assert FeatureCache(capped).info().entries == 1


def test_cache_max_size_takes_sizes(capsys):
    from sklearn_cae.cli import build_parser

    args = build_parser().parse_args(["evaluate", "x", "--cache", "c", "--cache-max-size", "2G"])
    assert args.cache_max_size == 2 << 30
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "x", "--cache", "c", "--cache-max-size", "lots"])
    assert exit_info.value.code == 2 and "500M" in _one_error_line(capsys)


# ------------------------------------- issue 18: few labels, many unlabelled images
def test_supervision_and_corrupted_views_reach_the_featurizer(tmp_path, capsys):
    """The docs call them the setting for few labels; the CLI had neither option."""
    import joblib

    from sklearn_cae import CAETransferFeaturizer

    data, model = _npz_data(tmp_path), tmp_path / "model.joblib"
    argv = ["fit", str(data), "-o", str(model), "-q", *TINY_CAE]
    assert main([*argv, "--supervision", "0.5", "--corrupted-views", "1"]) == 0
    featurizer = joblib.load(model)[0]
    assert (featurizer.supervision, featurizer.corrupted_views) == (0.5, 1)
    assert main(argv) == 0  # unset: the featurizer's own defaults, whatever they are
    featurizer, default = joblib.load(model)[0], CAETransferFeaturizer()
    assert featurizer.supervision == default.supervision
    assert featurizer.corrupted_views == default.corrupted_views
    assert main([*argv, "--supervision", "auto"]) == 0
    assert joblib.load(model)[0].supervision == "auto"
    for bad in (["--supervision", "-1"], ["--corrupted-views", "-1"], ["--supervision", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", "breastmnist", *bad])
        assert exit_info.value.code == 2
        _one_error_line(capsys)


@pytest.fixture
def classifier_fits(monkeypatch):
    """The labels each LabelledOnly classifier is fitted on, and the sizes SMOTE resamples."""
    from imblearn.over_sampling import RandomOverSampler

    from sklearn_cae.semi_supervised import LabelledOnly

    seen = {"labelled": [], "resampled": []}
    fit, fit_resample = LabelledOnly.fit, RandomOverSampler.fit_resample

    def recording_fit(self, X, y, **kwargs):
        seen["labelled"].append(int(np.sum(np.asarray(y, dtype=object) != -1)))
        return fit(self, X, y, **kwargs)

    def recording_resample(self, X, y, **kwargs):
        assert -1 not in set(np.asarray(y, dtype=object).tolist())  # never a class
        seen["resampled"].append(len(y))
        return fit_resample(self, X, y, **kwargs)

    monkeypatch.setattr(LabelledOnly, "fit", recording_fit)
    monkeypatch.setattr(RandomOverSampler, "fit_resample", recording_resample)
    return seen


def test_evaluate_labelled_fraction_runs_the_few_label_protocol(tmp_path, capsys, classifier_fits):
    data = _npz_data(
        tmp_path,
        images=np.random.default_rng(4).integers(0, 256, (24, 16, 16), dtype=np.uint8),
        labels=np.arange(24) % 2,
    )
    argv = ["evaluate", str(data), "--folds", "2", "--labelled-fraction", "0.25", *TINY_CAE]
    assert main([*argv, "--resample", "oversample"]) == 0
    out = capsys.readouterr().out
    assert "25% of each training fold labelled" in out and "25% labels" not in out
    rows = _table_rows(out)
    assert set(rows) == {"CAETransferFeaturizer", "BackboneFeaturizer"}
    # Each training fold: 12 images, 6 a class; 25% labelled, at least 2 a class: 4.
    assert classifier_fits["labelled"] == [4] * 4
    assert classifier_fits["resampled"] == [4] * 4  # the labelled rows, balanced already
    for bad in ("0", "1.5", "none"):
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", str(data), "--labelled-fraction", bad])
        assert exit_info.value.code == 2
        assert "fraction in (0, 1]" in _one_error_line(capsys)


def _unlabelled_pngs(folder: Path, n: int = 4) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((40, 40), 30 * i, np.uint8)).save(folder / f"u{i}.png")
    return folder


@pytest.mark.parametrize("resample", ["none", "oversample"])
def test_fit_with_unlabelled_images(resample, tmp_path, capsys, monkeypatch, classifier_fits):
    """fit --unlabelled: the featurizer gets every image, the SVC (and sampler) the labelled."""
    import joblib

    from sklearn_cae import CAETransferFeaturizer
    from sklearn_cae.semi_supervised import LabelledOnly

    fitted_on = []
    fit = CAETransferFeaturizer.fit_transform

    def recording(self, X, y=None, **kwargs):
        fitted_on.append((len(X), list(np.asarray(y, dtype=object))))
        return fit(self, X, y, **kwargs)

    monkeypatch.setattr(CAETransferFeaturizer, "fit_transform", recording)
    folder = _class_folder(tmp_path, corrupt=False)[0]  # 6 'a', 6 'b'
    folder_b = _unlabelled_pngs(tmp_path / "more")
    model = tmp_path / "model.joblib"
    argv = ["fit", str(folder), "-o", str(model), "--unlabelled", str(folder_b), *TINY_CAE]
    assert main([*argv, "--resample", resample]) == 0
    captured = capsys.readouterr()
    assert "on 12 images of classes 'a' (6), 'b' (6) and 4 unlabelled images" in captured.err
    assert "fitted on 12 images and 4 unlabelled images, classes ['a', 'b']" in captured.out
    [(n, y)] = fitted_on
    assert n == 16 and y == ["a"] * 6 + ["b"] * 6 + [-1] * 4
    saved = joblib.load(model)
    assert isinstance(saved[-1], LabelledOnly) and saved.classes_.tolist() == ["a", "b"]
    assert classifier_fits["labelled"] == [12]
    assert classifier_fits["resampled"] == ([12] if resample == "oversample" else [])
    if resample == "oversample":  # the sampler sits inside the wrapper
        assert type(saved[-1].estimator_).__module__.startswith("imblearn.")


def test_fit_unlabelled_errors_are_one_line(tmp_path, capsys, no_fit):
    folder = _class_folder(tmp_path, corrupt=False)[0]
    model = str(tmp_path / "model.joblib")
    assert main(["fit", str(folder), "-o", model, "--unlabelled", str(tmp_path / "no")]) == 1
    assert "no such folder or file" in _one_error_line(capsys)
    npz = _npz_data(tmp_path, name="more.npz")
    assert main(["fit", str(folder), "-o", model, "--unlabelled", str(npz), *TINY_CAE]) == 1
    assert "both as image files" in _one_error_line(capsys)


# ------------------------------------------------------ issue 21: deploy without pickle
def test_fit_skops_model_then_predict_loads_it_without_pickle(tmp_path, capsys):
    import zipfile

    data = _npz_data(tmp_path)
    skops_model, joblib_model = tmp_path / "model.skops", tmp_path / "model.joblib"
    for model in (skops_model, joblib_model):
        assert main(["fit", str(data), "-o", str(model), "-q", *TINY_CAE]) == 0
    assert zipfile.is_zipfile(skops_model) and not zipfile.is_zipfile(joblib_model)
    from PIL import Image

    images = []
    for i in range(3):
        images.append(str(tmp_path / f"x{i}.png"))
        Image.fromarray(np.full((16, 16), 70 * i, np.uint8)).save(images[-1])
    capsys.readouterr()
    tables = []
    for model in (skops_model, joblib_model):
        assert main(["predict", str(model), *images, "-q"]) == 0, capsys.readouterr().err
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1] and tables[0].startswith("path,prediction,proba_0,proba_1")
    # With unlabelled images: the classifier is wrapped (LabelledOnly), a type of the package.
    more = _npz_data(tmp_path, name="more.npz")
    argv = ["fit", str(data), "-o", str(skops_model), "--unlabelled", str(more), "-q"]
    assert main([*argv, *TINY_CAE]) == 0
    assert main(["predict", str(skops_model), *images, "-q"]) == 0, capsys.readouterr().err


def test_predict_refuses_a_skops_file_asking_for_an_untrusted_type(tmp_path, capsys):
    import collections

    import skops.io

    model = tmp_path / "model.skops"
    skops.io.dump(collections.Counter(a=1), model)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert main(["predict", str(model), str(image)]) == 1
    err = _one_error_line(capsys)
    assert "refused to load" in err and "collections.Counter" in err
    model.write_bytes(model.read_bytes()[:50])  # truncated
    assert main(["predict", str(model), str(image)]) == 1
    assert "is not a model" in _one_error_line(capsys)


def test_fit_card_writes_a_model_card_with_cv_scores(tmp_path, capsys):
    data, model, card = _npz_data(tmp_path), tmp_path / "model.skops", tmp_path / "README.md"
    argv = ["fit", str(data), "-o", str(model), "--card", str(card), "--cv", "2", *TINY_CAE]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "| CAETransferFeaturizer |" in captured.out  # the CV table, as evaluate prints it
    assert "card to" in captured.out and model.is_file()
    text = card.read_text()
    for expected in (
        "model.skops",
        "efficientnet_lite0",
        "Training set",
        "'0' (4), '1' (4)",
        "balanced acc. (2-fold CV, mean)",
        "ROC AUC (2-fold CV, std)",
        "scikit-learn",
        "skorch",
    ):
        assert expected in text, expected
    # --cv 0: a card without scores (with --card, --cv is 5 by default).
    argv = ["fit", str(data), "-o", str(model), "--card", str(card), "--cv", "0", "-q"]
    assert main([*argv, *TINY_CAE]) == 0
    assert "fold CV" not in card.read_text()


def test_fit_card_is_checked_before_fitting(tmp_path, capsys, no_fit):
    data, model = _npz_data(tmp_path), tmp_path / "model.skops"
    assert main(["fit", str(data), "-o", str(model), "--resample", "smote"]) == 1
    assert "save it as .joblib" in _one_error_line(capsys)
    assert main(["fit", str(data), "-o", str(model), "--card", str(model)]) == 1
    assert "is the model file" in _one_error_line(capsys)
    assert main(["fit", str(data), "-o", str(model), "--card", str(tmp_path)]) == 1
    assert "is a folder" in _one_error_line(capsys)
