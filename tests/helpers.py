"""Constants shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

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
    "random_state": 0,
}
