"""Loaders: ImageFolder trees, .npz files and MedMNIST, one by one and through load_dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sklearn_cae import BackboneFeaturizer
from sklearn_cae.cli._io import image_files
from sklearn_cae.datasets import (
    DatasetError,
    find_image_files,
    load_dataset,
    load_image_folder,
    load_medmnist,
    stratified_subset,
    take_rows,
)
from sklearn_cae.feature_files import list_inputs
from sklearn_cae.semi_supervised import load_unlabelled

from .helpers import FAST


def test_load_image_folder_on_covid_xrays(covid_root):
    paths, labels, classes = load_image_folder(covid_root / "images" / "train")
    assert classes == ["Covid", "Normal", "Viral_Pneumonia"]
    assert np.bincount(labels).tolist() == [111, 70, 70]
    assert labels.dtype == np.int64 and len(paths) == len(labels) == 251
    assert all(
        Path(p).parent.name == classes[label] for p, label in zip(paths, labels, strict=True)
    )
    assert list(paths) == sorted(paths), "files in sorted order, class by class"

    # The same labels as the curated array copy of the data set.
    curated = np.load(covid_root / "covid19_xray.npz")
    relative = [str(Path(p).relative_to(covid_root)) for p in paths]
    by_file = dict(zip(curated["filenames"].tolist(), curated["labels"].tolist(), strict=True))
    assert [by_file[name] for name in relative] == labels.tolist()


def test_featurize_paths_from_an_image_folder(covid_root):
    paths, labels, _ = load_image_folder(covid_root / "images" / "val")
    subset = np.concatenate([np.flatnonzero(labels == k)[:2] for k in range(3)])
    features = BackboneFeaturizer(**FAST, layer="blocks.1").fit_transform(paths[subset])
    assert features.shape == (6, 24) and np.isfinite(features).all()
    assert not np.allclose(features[0], features[-1])


def test_load_image_folder_follows_the_imagefolder_convention(tmp_path):
    for cls, names in {"b_class": ["2.png", "1.PNG", "deep/3.png"], "a_class": ["x.jpg"]}.items():
        for name in names:
            path = tmp_path / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
    (tmp_path / "b_class" / "readme.txt").write_text("skipped")
    (tmp_path / "stray_file.png").write_bytes(b"")  # not in a class folder: ignored
    paths, labels, classes = load_image_folder(tmp_path)
    assert classes == ["a_class", "b_class"]
    names = [str(Path(p).relative_to(tmp_path)) for p in paths]
    assert names == ["a_class/x.jpg", "b_class/1.PNG", "b_class/2.png", "b_class/deep/3.png"]
    assert labels.tolist() == [0, 1, 1, 1]


def test_class_folders_named_like_splits_warn(covid_root, tmp_path):
    """A data set's root (train/, val/) silently gave two classes named after splits."""
    import warnings

    with pytest.warns(UserWarning, match=r"\['train', 'val'\].*named like data splits.*train'"):
        _, _, classes = load_image_folder(covid_root / "images")
    assert classes == ["train", "val"]
    for name in ("Validation", "test"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name / "x.png")
    with pytest.warns(UserWarning, match=r"\['Validation', 'test'\].*Validation'"):
        load_image_folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image_folder(covid_root / "images" / "train")  # real classes: no warning


@pytest.mark.parametrize(
    "find",
    [
        find_image_files,
        load_unlabelled,  # fit --unlabelled
        lambda folder: list_inputs(folder)[0],  # featurize
        lambda folder: image_files([str(folder)]),  # predict
        lambda folder: load_image_folder(folder)[0].tolist(),  # fit, evaluate DATA
    ],
    ids=["find_image_files", "load_unlabelled", "list_inputs", "cli image_files", "ImageFolder"],
)
def test_every_folder_search_leaves_hidden_files_out(tmp_path, find):
    for name in ["b/2.PNG", "a/1.png", "a/._1.png", ".trash/3.png", "a/notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find(tmp_path) == [str(tmp_path / "a/1.png"), str(tmp_path / "b/2.PNG")]


def test_find_image_files_refuses_what_is_not_a_folder(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    for path in (tmp_path / "x.png", tmp_path / "missing"):
        with pytest.raises(NotADirectoryError, match="is not a folder"):
            find_image_files(path)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="folder of class sub-folders"):
        load_image_folder(tmp_path / "file.png")
    with pytest.raises(FileNotFoundError, match="class folder"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_class"):
        load_image_folder(tmp_path)


def test_empty_paths_are_refused(tmp_path, monkeypatch):
    """ "" meant the working directory: the wrong folder, silently."""
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a" / "x.png")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="empty path"):
        load_image_folder("")
    with pytest.raises(ValueError, match="root is an empty path"):
        load_medmnist("breastmnist", root="")


def test_load_medmnist_reads_a_local_root(medmnist_root):
    X, y = load_medmnist("BreastMNIST", split="val", root=medmnist_root)
    assert X.shape == (78, 28, 28) and X.dtype == np.uint8
    assert y.shape == (78,) and set(np.unique(y)) == {0, 1}


def test_load_medmnist_reads_medmnist_root_from_the_environment(medmnist_root, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    X, _ = load_medmnist("breastmnist", split="test")
    assert X.shape == (156, 28, 28)


def test_load_medmnist_says_what_to_do_offline(tmp_path, monkeypatch):
    pytest.importorskip("medmnist")
    monkeypatch.setenv("SKLEARN_CAE_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"breastmnist_64\.npz.*MEDMNIST_ROOT"):
        load_medmnist("breastmnist", size=64, root=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "nosuchmnist"}, "Unknown MedMNIST"),
        ({"name": "breastmnist", "split": "training"}, "split"),
        ({"name": "breastmnist", "size": 32}, "size"),
    ],
)
def test_load_medmnist_bad_arguments(kwargs, match):
    pytest.importorskip("medmnist")
    with pytest.raises(ValueError, match=match):
        load_medmnist(**kwargs)


def test_stratified_subset_keeps_each_class_and_is_reproducible():
    y = np.array([0] * 90 + [1] * 10 + [2] * 3)
    index = stratified_subset(y, 0.1, random_state=0)
    assert np.bincount(y[index]).tolist() == [9, 2, 2]  # at least 2 per class
    assert np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(index, stratified_subset(y, 0.1, random_state=0))
    assert not np.array_equal(index, stratified_subset(y, 0.1, random_state=1))
    np.testing.assert_array_equal(stratified_subset(y, 1.0), np.arange(len(y)))


# ------------------------------------------------------------------ load_dataset
def test_load_dataset_from_each_source(covid_root, medmnist_root, monkeypatch):
    paths, names = load_dataset(covid_root / "images" / "train")
    assert isinstance(paths, list) and len(paths) == len(names) == 251
    assert set(names) == {"Covid", "Normal", "Viral_Pneumonia"}
    assert all(Path(p).parent.name == name for p, name in zip(paths, names, strict=True))

    images, names = load_dataset(str(covid_root / "covid19_xray.npz"))
    assert images.ndim == 3 and len(images) == len(names)
    assert set(names) == {"Covid", "Normal", "Viral_Pneumonia"}

    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    images, names = load_dataset("breastmnist", split="val")
    assert images.shape == (78, 28, 28) and len(names) == 78
    assert set(names) == {"malignant", "normal, benign"}
    _, labels = load_medmnist("breastmnist", split="val")
    assert (names == "malignant").sum() == (labels == 0).sum()


def _npz(tmp_path, name="data.npz", **arrays) -> Path:
    defaults = {"images": np.zeros((8, 4, 4), np.uint8), "labels": np.arange(8) % 2}
    np.savez(tmp_path / name, **{**defaults, **arrays})
    return tmp_path / name


def test_load_dataset_npz_labels_that_are_whole_floats_or_a_column(tmp_path):
    _, y = load_dataset(_npz(tmp_path, labels=(np.arange(8) % 2).astype(float)))
    assert y.tolist() == ["0", "1"] * 4
    names = np.array(["benign", "malignant"])
    _, y = load_dataset(
        _npz(tmp_path, "col.npz", labels=(np.arange(8) % 2)[:, None], class_names=names)
    )
    assert y.tolist() == ["benign", "malignant"] * 4
    _, y = load_dataset(_npz(tmp_path, "names.npz", labels=np.array(list("abababab"))))
    assert y.tolist() == list("abababab")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda tmp: "", "DATA is an empty string"),
        (lambda tmp: str(tmp / "missing.npz"), "no such file"),
        (lambda tmp: str(tmp / "nowhere" / "x"), "is not a folder of class sub-folders"),
        (
            lambda tmp: _npz(tmp, labels=np.arange(8) % 3, class_names=["a", "b"]),
            "label 2 of image 2",
        ),
        (lambda tmp: _npz(tmp, labels=np.zeros((8, 2))), "1-D with one label per image"),
        (lambda tmp: _npz(tmp, class_names=["a", "a"]), "distinct names"),
        (lambda tmp: _npz(tmp, images=np.uint8(3)), "scalar"),
    ],
    ids=["empty", "missing npz", "not data", "beyond class_names", "2-D", "duplicates", "scalar"],
)
def test_load_dataset_errors_say_what_is_wrong(make, match, tmp_path):
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset(make(tmp_path))
    assert isinstance(info.value, ValueError)  # callers catching ValueError still work


def test_load_dataset_unreadable_npz_and_missing_arrays(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(DatasetError, match=r"cannot read .*broken\.npz as an \.npz file"):
        load_dataset(tmp_path / "broken.npz")
    np.savez(tmp_path / "pixels.npz", pixels=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"lacks the array\(s\) \['images', 'labels'\]"):
        load_dataset(tmp_path / "pixels.npz")
    (tmp_path / "empty_classes" / "a").mkdir(parents=True)
    (tmp_path / "empty_classes" / "a" / "notes.txt").write_text("no image")
    with pytest.raises(FileNotFoundError, match="Found no valid file"):
        load_dataset(tmp_path / "empty_classes")


def test_load_dataset_unknown_medmnist_name(medmnist_root, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(medmnist_root))
    with pytest.raises(ValueError, match="Unknown MedMNIST data set 'nosuchmnist'"):
        load_dataset("nosuchmnist")


# ----------------------------------------------------- declarative validation
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: load_medmnist(28), "'name' parameter of load_medmnist"),
        (lambda: load_medmnist("breastmnist", size="28"), "'size' parameter"),
        (lambda: load_medmnist("breastmnist", root=3), "'root' parameter"),
        (lambda: load_image_folder(None), "'path' parameter of load_image_folder"),
        (lambda: load_dataset(["a", "b"]), "'path_or_name' parameter of load_dataset"),
        (lambda: load_dataset("breastmnist", split="holdout"), "'split' parameter"),
        (lambda: stratified_subset([0, 1], 0), "'fraction' parameter"),
        (lambda: stratified_subset([0, 1], 0.5, random_state=-1), "'random_state' parameter"),
    ],
)
def test_public_loaders_validate_their_parameters(call, match):
    from sklearn_cae._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=match):
        call()


def test_take_rows_keeps_the_kind_of_collection():
    assert take_rows(["a", "b", "c"], np.array([2, 0])) == ["c", "a"]
    np.testing.assert_array_equal(take_rows(np.arange(6).reshape(3, 2), [1]), [[2, 3]])
