"""scikit-learn's own estimator checks.

The checks feed tabular 2-D data, so the estimators are configured to read each row
as a 1-pixel-high image (``image_shape=(1, -1)``) with per-image intensity scaling.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer

ROWS_AS_IMAGES = {"image_shape": (1, -1), "intensity": "minmax", "image_size": 32}

_FLOAT16_MAPS = (
    "Backbone maps are rounded to float16 (as stored for CAE training and in the "
    "cache, so features are identical with and without it). Convolutions can differ "
    "in the last float32 bit with the batch's size, which flips an occasional float16 "
    "rounding: a transformed subset agrees with the full transform to ~1e-3 relative, "
    "not to the check's 1e-7."
)
EXPECTED_FAILED_CHECKS = {
    name: {"check_methods_subset_invariance": _FLOAT16_MAPS}
    for name in ("BackboneFeaturizer", "CAETransferFeaturizer")
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(
    [
        BackboneFeaturizer(**ROWS_AS_IMAGES),
        CAETransferFeaturizer(
            **ROWS_AS_IMAGES, layer_sizes=(8,), bottleneck=4, max_epochs=2, random_state=0
        ),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
