"""Constants shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Small settings that keep every fit in the suite to a fraction of a second.
FAST = {"image_size": 32, "batch_size": 16}
# Code-only avg+max features, so tests see the CAE's output alone.
FAST_CAE = {
    **FAST,
    "max_epochs": 2,
    "layer_sizes": (16,),
    "bottleneck": 8,
    "pooling": "avgmax",
    "include_backbone": False,
    "corrupted_views": 0,  # the default's corrupted view costs a backbone pass per fit
    "random_state": 0,
}

# Secondary Capture Image Storage: the SOP class of files made by software.
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def write_dicom(path, pixel_data: bytes, *, sop_class: str = SECONDARY_CAPTURE, **attributes):
    """Write a small DICOM file and return its path as a str.

    A 4 x 4 unsigned 16-bit ``MONOCHROME2`` image unless ``attributes`` (DICOM keywords,
    e.g. ``Rows=8, RescaleSlope=0.5``) say otherwise; ``pixel_data`` is written as is,
    so it may disagree with the header on purpose.
    """
    import pytest

    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    header = {
        "SOPClassUID": sop_class,
        "SOPInstanceUID": meta.MediaStorageSOPInstanceUID,
        "Rows": 4,
        "Columns": 4,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 0,
    }
    for keyword, value in {**header, **attributes}.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixel_data
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return str(path)


def run_with_file_size_limit(code: str, limit_bytes: int, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose files may not grow past ``limit_bytes``."""
    prelude = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))
        """
    )
    env = {**os.environ, "SKLEARN_CAE_OFFLINE": "1", "SKLEARN_CAE_NUM_WORKERS": "0"}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
