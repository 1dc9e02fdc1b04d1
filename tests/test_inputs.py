"""Every accepted kind of input: layouts, dtypes, intensity policy, files, PIL, DICOM."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.images import _dicom, _loader, as_image_source, check_image_size, read_image

from .helpers import FAST, FAST_CAE, write_dicom

FEAT = {**FAST, "layer": "blocks.1"}  # a shallow tap keeps every call cheap


@pytest.fixture(scope="module")
def gray():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 40, 36), dtype=np.uint8)


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(4, 24, 30, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def gray_feat(gray):
    return BackboneFeaturizer(**FEAT).fit(gray)


@pytest.fixture(scope="module")
def rgb_feat(rgb):
    return BackboneFeaturizer(**FEAT).fit(rgb)


def _save(images, folder: Path, suffix: str = ".png", **kwargs) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"img{i}{suffix}"
        Image.fromarray(np.squeeze(image)).save(path, **kwargs)
        paths.append(str(path))
    return paths


def _unit(X, intensity="auto") -> np.ndarray:
    """The [0, 1] images an intensity policy makes, at their own size (no resizing)."""
    source = as_image_source(X)
    size = source.shape[1:3]
    units = [u for _, u in source.batches(64, image_size=size, intensity=intensity)]
    return torch.cat(units).numpy()


# ----------------------------------------------------------------------- array layouts
def test_grey_layouts_and_containers_give_the_same_features(gray, gray_feat, tmp_path):
    expected = gray_feat.transform(gray)
    paths = _save(gray, tmp_path)
    variants = {
        "(n, H, W, 1)": gray[..., np.newaxis],
        "(n, 1, H, W)": gray[:, np.newaxis],
        "list of arrays": list(gray),
        "nested lists": gray.tolist(),
        "torch tensor": torch.from_numpy(gray),
        "PIL images": [Image.fromarray(g) for g in gray],
        "str paths": paths,
        "pathlib paths": [Path(p) for p in paths],
        "array of paths": np.asarray(paths),
        "column of paths": np.asarray(paths, dtype=object)[:, np.newaxis],
    }
    for name, X in variants.items():
        np.testing.assert_allclose(gray_feat.transform(X), expected, atol=1e-6, err_msg=name)
    assert expected.shape == (5, gray_feat.n_channels_[0]) and np.isfinite(expected).all()


def test_flattened_rows_with_image_shape(gray, gray_feat):
    expected = gray_feat.transform(gray)
    flat = gray.reshape(len(gray), -1)
    for shape in [(40, 36), (40, 36, 1), (40, -1)]:
        feat = BackboneFeaturizer(**FEAT, image_shape=shape).fit(flat)
        assert feat.n_features_in_ == 40 * 36
        np.testing.assert_allclose(feat.transform(flat), expected, atol=1e-6)
    pandas = pytest.importorskip("pandas")
    for container in (torch.from_numpy(flat), pandas.DataFrame(flat)):
        np.testing.assert_allclose(feat.transform(container), expected, atol=1e-6)


def test_colour_layouts_alpha_and_palette(rgb, rgb_feat, tmp_path):
    expected = rgb_feat.transform(rgb)
    alpha = np.random.default_rng(2).integers(0, 256, size=(*rgb.shape[:3], 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=-1)
    variants = {
        "(n, 3, H, W)": rgb.transpose(0, 3, 1, 2),
        "RGBA, alpha dropped": rgba,
        "(n, 4, H, W)": rgba.transpose(0, 3, 1, 2),
        "RGBA PNG files": _save(rgba, tmp_path / "rgba"),
        "RGBA PIL images": [Image.fromarray(x, "RGBA") for x in rgba],
        "BMP files": _save(rgb, tmp_path / "bmp", ".bmp"),
    }
    for name, X in variants.items():
        np.testing.assert_allclose(rgb_feat.transform(X), expected, atol=1e-6, err_msg=name)
    palette = [Image.fromarray(x).convert("P") for x in rgb]
    as_rgb = np.stack([np.asarray(p.convert("RGB")) for p in palette])
    np.testing.assert_allclose(rgb_feat.transform(palette), rgb_feat.transform(as_rgb), atol=1e-6)


def test_jpeg_files_are_decoded_by_pillow(gray, tmp_path):
    paths = _save(gray, tmp_path, ".jpg", quality=95)
    decoded = np.stack([read_image(p)[..., 0] for p in paths])
    assert decoded.shape == gray.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - gray).mean() < 20  # lossy, but the same image


# ------------------------------------------------------------------- intensity policy
def test_intensity_policies_map_values_as_documented():
    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, size=(3, 6, 7), dtype=np.uint8)
    np.testing.assert_allclose(_unit(u8)[:, 0], u8 / 255, atol=1e-6)

    u16 = rng.integers(100, 4096, size=(3, 6, 7)).astype(np.uint16)  # 12-bit data
    lo = u16.min(axis=(1, 2), keepdims=True)
    hi = u16.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(_unit(u16)[:, 0], (u16 - lo) / (hi - lo), atol=1e-6)
    np.testing.assert_allclose(_unit(u16, "dtype")[:, 0], u16 / 65535, atol=1e-6)

    ct = rng.integers(-2000, 3000, size=(3, 6, 7)).astype(np.int16)
    window = np.clip((ct + 1000) / 1400, 0, 1)
    np.testing.assert_allclose(_unit(ct, (-1000, 400))[:, 0], window, atol=1e-6)
    np.testing.assert_allclose(
        _unit(ct, "dtype")[:, 0], (ct.astype(np.int64) + 32768) / 65535, atol=1e-6
    )

    floats = rng.random((2, 5, 5))
    np.testing.assert_allclose(_unit(floats)[:, 0], floats, atol=1e-6)
    outside = floats * 3 - 1  # [-1, 2]: min-max, never clipped
    lo, hi = outside.min(axis=(1, 2), keepdims=True), outside.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(_unit(outside)[:, 0], (outside - lo) / (hi - lo), atol=1e-6)
    np.testing.assert_allclose(_unit(outside, "minmax"), _unit(outside), atol=1e-6)

    booleans = rng.random((2, 4, 4)) > 0.5
    np.testing.assert_array_equal(_unit(booleans)[:, 0], booleans.astype(np.float32))


def test_extreme_values_never_wrap_or_overflow():
    extremes = np.array([[[-32768, 32767], [0, 1]]], dtype=np.int16)
    np.testing.assert_allclose(_unit(extremes)[0, 0], [[0, 1], [32768 / 65535, 32769 / 65535]])
    huge = np.array([[[-1.7e308, 1.7e308], [0.0, 1e300]]])
    unit = _unit(huge)
    assert np.isfinite(unit).all() and unit.min() == 0 and unit.max() == 1
    u32 = np.array([[[0, 2**32 - 1]]], dtype=np.uint32)
    np.testing.assert_allclose(_unit(u32, "dtype")[0, 0], [[0, 1]])
    constant = np.full((1, 3, 3), 7, dtype=np.uint16)
    np.testing.assert_array_equal(_unit(constant), 0)


def test_sixteen_bit_auto_is_per_image_minmax(gray):
    wide = gray.astype(np.uint16) * 257
    auto = BackboneFeaturizer(**FEAT).fit(wide).transform(wide)
    minmax = BackboneFeaturizer(**FEAT, intensity="minmax").fit(gray).transform(gray)
    np.testing.assert_allclose(auto, minmax, atol=1e-5)
    by_dtype = BackboneFeaturizer(**FEAT, intensity="dtype").fit(wide).transform(wide)
    plain = BackboneFeaturizer(**FEAT).fit(gray).transform(gray)
    np.testing.assert_allclose(by_dtype, plain, atol=1e-5)


def test_ct_window_equals_manual_windowing(gray):
    ct = gray.astype(np.int16) * 12 - 1024
    windowed = BackboneFeaturizer(**FEAT, intensity=(-1000, 400)).fit(ct).transform(ct)
    manual = np.clip((ct.astype(np.float64) + 1000) / 1400, 0, 1)
    np.testing.assert_allclose(
        windowed, BackboneFeaturizer(**FEAT).fit(manual).transform(manual), atol=1e-5
    )


# --------------------------------------------------------------------- 16-bit & DICOM
@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_sixteen_bit_files_keep_their_values(suffix, tmp_path):
    rng = np.random.default_rng(4)
    wide = rng.integers(0, 65536, size=(3, 20, 18)).astype(np.uint16)
    paths = [str(tmp_path / f"x{i}{suffix}") for i in range(len(wide))]
    for image, path in zip(wide, paths, strict=True):
        Image.fromarray(image).save(path)
    decoded = np.stack([read_image(p)[..., 0] for p in paths]).astype(np.int64)
    np.testing.assert_array_equal(decoded, wide)
    feat = BackboneFeaturizer(**FEAT, intensity="minmax").fit(wide)
    np.testing.assert_allclose(feat.transform(paths), feat.transform(wide), atol=1e-5)


def _write_dicom(
    path: Path, stored: np.ndarray, *, slope=1.0, intercept=-1024.0, mono="2", **attributes
):
    """A CT slice holding ``stored``, with its rescale and photometric interpretation."""
    return write_dicom(
        path,
        stored.tobytes(),
        sop_class="1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        Modality="CT",
        Rows=stored.shape[0],
        Columns=stored.shape[1],
        PhotometricInterpretation=f"MONOCHROME{mono}",
        PixelRepresentation=1 if stored.dtype == np.int16 else 0,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        **attributes,
    )


def test_dicom_applies_rescale_slope_and_intercept(tmp_path):
    rng = np.random.default_rng(5)
    stored = rng.integers(0, 3000, size=(3, 16, 20)).astype(np.uint16)
    hu = stored.astype(np.float64) * 0.5 - 1024
    paths = [_write_dicom(tmp_path / f"slice{i}.dcm", s, slope=0.5) for i, s in enumerate(stored)]
    np.testing.assert_allclose(read_image(paths[0])[..., 0], hu[0])
    feat = BackboneFeaturizer(**FEAT, intensity=(-1000, 400)).fit(paths)
    np.testing.assert_allclose(feat.transform(paths), feat.transform(hu), atol=1e-5)
    no_suffix = tmp_path / "slice_without_suffix"
    no_suffix.write_bytes(Path(paths[0]).read_bytes())  # found by its DICM magic
    np.testing.assert_allclose(read_image(no_suffix), read_image(paths[0]))


def test_a_dicom_file_is_parsed_once_per_decode(tmp_path, monkeypatch):
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4)
    path = _write_dicom(tmp_path / "once.dcm", stored, intercept=0)
    parses = []
    dcmread = _dicom._dcmread
    monkeypatch.setattr(_dicom, "_dcmread", lambda *a, **k: parses.append(k) or dcmread(*a, **k))
    np.testing.assert_array_equal(read_image(path)[..., 0], stored)
    assert len(parses) == 1, "the header checks reuse the parse that reads the pixels"


def test_dicom_monochrome1_is_flipped(tmp_path):
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    flipped = read_image(_write_dicom(tmp_path / "m1.dcm", stored, intercept=0, mono="1"))
    np.testing.assert_allclose(flipped[..., 0], stored.max() - stored + stored.min())


# ---------------------------------------------------- mixed sizes, laziness, workers
def test_images_of_different_sizes_in_one_call(tmp_path, gray_feat):
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, size=(20 + 7 * i, 48 - 5 * i), dtype=np.uint8) for i in range(4)]
    paths = _save(images, tmp_path)
    source = as_image_source(paths)
    assert source.shape == (4, None, None, 1)
    together = gray_feat.transform(paths)
    one_by_one = np.concatenate([gray_feat.transform([p]) for p in paths])
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)
    np.testing.assert_allclose(gray_feat.transform(images), together, atol=1e-6)
    np.testing.assert_allclose(together[1:2], gray_feat.transform(images[1][np.newaxis]), atol=1e-6)


def test_tiny_images_are_resized_up(gray_feat):
    tiny = np.random.default_rng(7).integers(0, 256, size=(3, 1, 2), dtype=np.uint8)
    features = gray_feat.transform(tiny)
    assert features.shape == (3, gray_feat.n_channels_[0]) and np.isfinite(features).all()


def test_paths_are_decoded_lazily_batch_by_batch(tmp_path, monkeypatch, gray):
    paths = _save(gray, tmp_path) * 4  # 20 paths
    decoded = []
    real = _loader.read_image  # the name the DataLoader workers decode files with
    monkeypatch.setattr(_loader, "read_image", lambda p, **kw: decoded.append(p) or real(p, **kw))
    source = as_image_source(paths, num_workers=0)
    batches = source.batches(3, image_size=(8, 8))
    raw, unit = next(batches)
    assert raw is None and unit.shape == (3, 1, 8, 8)
    assert len(decoded) == 3, "only the first batch may be decoded"
    assert sum(len(u) for _, u in batches) == 17 and len(decoded) == 20


def test_worker_processes_give_the_same_features(tmp_path, gray, gray_feat, monkeypatch):
    paths = _save(gray, tmp_path) * 8  # 40 paths, 3 batches of 16
    monkeypatch.setenv("SKLEARN_CAE_NUM_WORKERS", "0")
    in_process = gray_feat.transform(paths)
    monkeypatch.setenv("SKLEARN_CAE_NUM_WORKERS", "2")
    with_workers = gray_feat.transform(paths)
    np.testing.assert_array_equal(with_workers, in_process)
    explicit = gray_feat.transform(as_image_source(paths, num_workers=2))
    np.testing.assert_array_equal(explicit, in_process)


def test_raw_batches_are_available_for_caching(tmp_path, gray, gray_feat):
    paths = _save(gray, tmp_path)
    for X in (gray, paths):
        source = as_image_source(X)
        batches = source.batches(
            gray_feat.batch_size,
            image_size=check_image_size(gray_feat.image_size),
            intensity=gray_feat.intensity,
            device=torch.device("cpu"),
            with_raw=True,
        )
        raws = [raw for raw, _ in batches]
        got = np.concatenate([np.stack(list(r)) for r in raws])
        np.testing.assert_array_equal(got[..., 0], gray)


# ------------------------------------------------------ both featurizers, fit & pickle
def test_cae_featurizer_fits_and_transforms_file_paths(tmp_path, gray):
    paths = _save(gray, tmp_path)
    feat = CAETransferFeaturizer(**FAST_CAE, layer="blocks.1")
    from_paths = feat.fit_transform(paths)
    np.testing.assert_allclose(feat.transform(gray), from_paths, atol=1e-5)
    assert from_paths.shape == (5, len(feat.get_feature_names_out()))
    restored = pickle.loads(pickle.dumps(feat))
    np.testing.assert_allclose(restored.transform(paths), from_paths, atol=1e-6)


# ------------------------------------------------------ colour depth, EXIF, palettes
def _png16(path: Path, image: np.ndarray) -> str:
    """A 16-bit RGB PNG (Pillow cannot write one); rows cycle through all five filters."""
    import struct
    import zlib

    h, w, c = image.shape
    raw = image.astype(">u2").view(np.uint8).reshape(h, w * c * 2).astype(np.int64)
    bpp, rows, prev = 2 * c, [], np.zeros(w * c * 2, np.int64)
    for y in range(h):
        kind, cur = y % 5, raw[y]
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        p = left + prev - upleft
        pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        predictor = [0, left, prev, (left + prev) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((cur - predictor) % 256).astype(np.uint8).tobytes())
        prev = cur

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
    return str(path)


@pytest.mark.parametrize("kind", ["png-rgb", "png-rgba", "tiff", "tiff-deflate"])
def test_sixteen_bit_colour_files_keep_sixteen_bits(kind, tmp_path):
    """16-bit colour was cut to its high byte: 12-bit data became 16 grey levels."""
    rng = np.random.default_rng(6)
    channels = 4 if kind == "png-rgba" else 3
    wide = rng.integers(0, 65536, size=(13, 11, channels)).astype(np.uint16)
    if kind.startswith("png"):
        path = _png16(tmp_path / "x.png", wide)
    else:
        tifffile = pytest.importorskip("tifffile")
        path = str(tmp_path / "x.tif")
        compression = "zlib" if kind == "tiff-deflate" else None
        tifffile.imwrite(path, wide, photometric="rgb", compression=compression)
    decoded = read_image(path)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, wide[..., :3])
    assert as_image_source([path]).shape == (1, 13, 11, 3)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation, tmp_path):
    rng = np.random.default_rng(7)
    stored = rng.integers(0, 256, size=(6, 10), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    Image.fromarray(stored).save(path, exif=exif)
    upright = {3: np.rot90(stored, 2), 6: np.rot90(stored, -1), 8: np.rot90(stored, 1)}
    np.testing.assert_array_equal(read_image(path)[..., 0], upright[orientation])
    height, width = upright[orientation].shape
    assert as_image_source([str(path)]).shape == (1, height, width, 1)
    with Image.open(path) as image:
        assert as_image_source([image]).shape == (1, height, width, 1)


def test_grey_palette_images_are_grey(tmp_path):
    """A grey (animated) GIF counted as colour, so it could not join grey images."""
    frames = [Image.fromarray(np.full((8, 8), 40 * i, np.uint8)) for i in range(3)]
    frames[1].putpixel((2, 3), 200)
    animated, single = tmp_path / "anim.gif", tmp_path / "one.gif"
    frames[1].save(animated, save_all=True, append_images=[frames[0], frames[2]])
    frames[1].save(single)
    paths = [str(animated), str(single), *_save([np.zeros((8, 8), np.uint8)], tmp_path / "png")]
    assert as_image_source(paths).n_channels == 1
    decoded = read_image(animated)
    assert decoded.shape == (8, 8, 1)
    np.testing.assert_array_equal(decoded[..., 0], np.asarray(frames[1]))
    with Image.open(single) as image:
        assert as_image_source([image]).n_channels == 1
    colour = tmp_path / "colour.gif"
    Image.fromarray(np.dstack([np.full((8, 8), v, np.uint8) for v in (10, 200, 90)])).save(colour)
    assert as_image_source([str(colour)]).n_channels == 3


def test_palette_colour_dicom_goes_through_its_lookup_table(tmp_path):
    rng = np.random.default_rng(8)
    indices = rng.integers(0, 4, size=(5, 6)).astype(np.uint8)
    lut = rng.integers(0, 65536, size=(3, 4)).astype(np.uint16)  # red, green, blue
    palette = {}
    for colour, table in zip(("Red", "Green", "Blue"), lut, strict=True):
        palette[f"{colour}PaletteColorLookupTableDescriptor"] = [4, 0, 16]
        palette[f"{colour}PaletteColorLookupTableData"] = table.tobytes()
    path = write_dicom(
        tmp_path / "palette.dcm",
        indices.tobytes(),
        Rows=5,
        Columns=6,
        PhotometricInterpretation="PALETTE COLOR",
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        **palette,
    )
    assert as_image_source([path]).n_channels == 3
    np.testing.assert_array_equal(read_image(path), lut.T[indices])


# ------------------------------------------------------------ grey and colour together
def _mixed_files(folder: Path) -> list[str]:
    """Grey, RGB, RGBA, grey + alpha, palette and CMYK files, of two sizes."""
    rng = np.random.default_rng(9)
    folder.mkdir(parents=True, exist_ok=True)
    grey = rng.integers(0, 256, size=(20, 22), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(20, 22, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, size=(18, 24, 4), dtype=np.uint8)
    images = {
        "grey.png": Image.fromarray(grey),
        "rgb.png": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(rgba, "RGBA"),
        "grey_alpha.png": Image.merge("LA", [Image.fromarray(grey)] * 2),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
    }
    paths = []
    for name, image in images.items():
        image.save(folder / name)
        paths.append(str(folder / name))
    return paths


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def test_grey_and_colour_files_are_converted_to_rgb(tmp_path):
    """One RGB PNG among grey X-rays was refused: "mixed channel counts"."""
    paths = _mixed_files(tmp_path)
    source = as_image_source(paths)
    assert source.n_channels == 3 and source.shape == (6, None, None, 3)
    assert source.channels == [1, 3, 3, 1, 3, 3]  # grey + alpha is grey
    feat = BackboneFeaturizer(**FEAT).fit(paths)
    assert feat.n_input_channels_ == 3
    # The same as the images decoded one by one, grey replicated by hand.
    by_hand = [_as_rgb(read_image(p)) for p in paths]
    np.testing.assert_allclose(feat.transform(paths), feat.transform(by_hand), atol=1e-5)
    # PIL images and lists of arrays mix too.
    pil = [Image.open(p) for p in paths]
    np.testing.assert_allclose(feat.transform(pil), feat.transform(by_hand), atol=1e-5)
    own = [read_image(p) for p in paths]
    assert as_image_source(own).n_channels == 3
    np.testing.assert_allclose(feat.transform(own), feat.transform(by_hand), atol=1e-5)


def test_a_grey_image_gets_the_same_features_alone_or_among_colour(tmp_path, gray):
    """Replicating grey to RGB is lossless: the backbone replicates grey anyway."""
    grey_paths = _save(gray, tmp_path / "grey")
    colour = _save(np.random.default_rng(10).integers(0, 256, (2, 16, 16, 3), np.uint8), tmp_path)
    mixed = [*grey_paths, *colour]
    feat = CAETransferFeaturizer(**FAST_CAE, layer="blocks.1").fit(mixed)
    features = feat.transform(mixed)
    replicated = np.repeat(gray[..., np.newaxis], 3, axis=-1)
    np.testing.assert_allclose(features[: len(gray)], feat.transform(replicated), atol=1e-5)
    # Raw pixels keep their own channels, so the cache key of a grey image never changes.
    raws = [
        r
        for raw, _ in as_image_source(mixed).batches(4, image_size=(8, 8), with_raw=True)
        for r in raw
    ]
    assert [r.shape[-1] for r in raws] == [1] * len(gray) + [3, 3]


def test_transform_accepts_the_other_channel_count_by_default(gray, rgb):
    """A model fitted on grey images refused an RGB image at predict (needs channels=)."""
    feat = BackboneFeaturizer(**FEAT).fit(gray)
    assert feat.channels == "convert" and feat.n_input_channels_ == 1
    assert feat.transform(rgb).shape == (len(rgb), feat.n_channels_[0])
    replicated = np.repeat(gray[..., np.newaxis], 3, axis=-1)
    np.testing.assert_allclose(feat.transform(replicated), feat.transform(gray), atol=1e-6)
    coloured = CAETransferFeaturizer(**FAST_CAE, layer="blocks.1").fit(rgb)
    assert coloured.transform(gray).shape[0] == len(gray)


def test_strict_channels_refuse_a_mix_and_another_channel_count(tmp_path, gray, rgb):
    paths = _mixed_files(tmp_path)
    with pytest.raises(ValueError, match=r"mixed channel counts.*rgb\.png.*'strict'"):
        as_image_source(paths, channels="strict")
    with pytest.raises(ValueError, match=r"'channels' parameter of as_image_source must be"):
        as_image_source(paths, channels="rgb")
    strict = BackboneFeaturizer(**FEAT, channels="strict")
    with pytest.raises(ValueError, match=r"mixed channel counts"):
        strict.fit(paths)
    strict.fit(gray)
    with pytest.raises(ValueError, match=r"3-channel images.*fitted on 1-channel.*'strict'"):
        strict.transform(rgb)
    with pytest.raises(ValueError, match=r"channels"):
        BackboneFeaturizer(**FEAT, channels="rgb").fit(gray)


# ---------------------------------------------------------------- DICOM's own window
def _windowed_dicom(path: Path, stored, *, center, width, mono="2", function=None):
    voi_function = {"VOILUTFunction": function} if function else {}
    return _write_dicom(
        path, stored, mono=mono, WindowCenter=center, WindowWidth=width, **voi_function
    )


def test_dicom_window_applies_the_files_own_window(tmp_path):
    """intensity="auto" min-max scaled each DICOM and ignored the window in its header."""
    rng = np.random.default_rng(11)
    stored = rng.integers(0, 3000, size=(3, 16, 20)).astype(np.uint16)
    hu = stored.astype(np.float64) - 1024  # intercept -1024
    center, width = 40.0, 400.0  # soft tissue
    paths = [
        _windowed_dicom(tmp_path / f"ct{i}.dcm", s, center=center, width=width)
        for i, s in enumerate(stored)
    ]
    # DICOM PS3.3 C.11.2.1.2.1 (LINEAR), to [0, 1].
    expected = np.clip((hu - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    windowed = read_image(paths[0], window=True)
    assert windowed.dtype == np.float32 and windowed.shape == (16, 20, 1)
    np.testing.assert_allclose(windowed[..., 0], expected[0], atol=1e-6)
    np.testing.assert_allclose(read_image(paths[0])[..., 0], hu[0])  # unchanged without it

    feat = BackboneFeaturizer(**FEAT, intensity="dicom_window").fit(paths)
    from_header = feat.transform(paths)
    np.testing.assert_allclose(from_header, feat.transform(expected), atol=1e-5)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    same_window = BackboneFeaturizer(**FEAT, intensity=(low, high)).fit(paths)
    np.testing.assert_allclose(same_window.transform(paths), from_header, atol=1e-5)
    auto = BackboneFeaturizer(**FEAT).fit(paths).transform(paths)
    assert not np.allclose(auto, from_header, atol=1e-3)


def test_dicom_window_monochrome1_sigmoid_and_several_windows(tmp_path):
    stored = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 60).astype(np.uint16)
    hu = stored.astype(np.float64) - 1024
    linear = np.clip((hu - (99.5)) / 799 + 0.5, 0, 1)
    inverted = read_image(
        _windowed_dicom(tmp_path / "m1.dcm", stored, center=100, width=800, mono="1"),
        window=True,
    )
    np.testing.assert_allclose(inverted[..., 0], 1 - linear, atol=1e-6)
    first = read_image(
        _windowed_dicom(tmp_path / "two.dcm", stored, center=[100, 900], width=[800, 50]),
        window=True,
    )
    np.testing.assert_allclose(first[..., 0], linear, atol=1e-6)
    sigmoid = read_image(
        _windowed_dicom(tmp_path / "s.dcm", stored, center=0, width=500, function="SIGMOID"),
        window=True,
    )
    np.testing.assert_allclose(sigmoid[..., 0], 1 / (1 + np.exp(-4 * hu / 500)), atol=1e-6)


def test_dicom_window_applies_a_voi_lut_sequence(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset

    stored = np.arange(40, dtype=np.uint16).reshape(5, 8) * 3  # 0 ... 117
    path = tmp_path / "lut.dcm"
    _write_dicom(path, stored, intercept=0)
    ds = pydicom.dcmread(path)
    lut = (np.linspace(0, 1, 64) ** 0.5 * 4095).astype(np.uint16)  # 12-bit gamma curve
    item = Dataset()
    item.add_new(0x00283002, "US", [64, 10, 12])  # LUTDescriptor: 64 entries from 10, 12 bits
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData
    ds.VOILUTSequence = [item]
    ds.WindowCenter, ds.WindowWidth = 0, 10  # a LUT wins over a window, as in pydicom
    ds.save_as(path)
    expected = lut[np.clip(stored.astype(int) - 10, 0, 63)] / 4095
    np.testing.assert_allclose(read_image(path, window=True)[..., 0], expected, atol=1e-6)


def test_dicom_window_falls_back_to_auto_without_a_window(tmp_path, gray):
    stored = np.random.default_rng(12).integers(0, 3000, size=(2, 12, 12)).astype(np.uint16)
    plain = [_write_dicom(tmp_path / f"p{i}.dcm", s) for i, s in enumerate(stored)]
    pngs = _save(gray, tmp_path / "png")
    for X in (plain, pngs, gray):
        by_header = BackboneFeaturizer(**FEAT, intensity="dicom_window").fit(X).transform(X)
        np.testing.assert_allclose(
            by_header, BackboneFeaturizer(**FEAT).fit(X).transform(X), atol=1e-6
        )


def test_image_source_take_keeps_kind_channels_and_order(tmp_path):
    grey, colour = np.zeros((6, 5), np.uint8), np.full((6, 5, 3), 200, np.uint8)
    paths = []
    for i, image in enumerate([grey, colour, grey]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    files = as_image_source(paths, channels="convert")
    subset = files.take([2, 0])
    assert (subset.kind, subset.shape, subset.n_channels) == ("files", (2, 6, 5, 3), 3)
    assert subset.items == subset.names == [paths[2], paths[0]]
    assert subset.channels == [1, 1]  # each image's own
    array = as_image_source(np.arange(4 * 3 * 2).reshape(4, 3, 2).astype(np.uint8))
    taken = array.take([3, 1])
    assert taken.kind == "array" and taken.shape == (2, 3, 2, 1)
    np.testing.assert_array_equal(np.asarray(taken.items), np.asarray(array.items)[[3, 1]])
    # Lists of arrays of different sizes, and PIL images: lists of items.
    mixed = [np.zeros((4, 4), np.uint8), np.ones((5, 3), np.uint8), np.full((2, 2), 7, np.uint8)]
    for source in (as_image_source(mixed), as_image_source([Image.fromarray(a) for a in mixed])):
        taken = source.take([2, 0])
        assert taken.kind == source.kind and len(taken) == 2
        assert taken.items == [source.items[2], source.items[0]]
