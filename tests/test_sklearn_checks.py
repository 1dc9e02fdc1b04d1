"""scikit-learn's own estimator checks.

The checks feed tabular 2-D data, so the estimators are configured to read each row
as a 1-pixel-high image (``image_shape=(1, -1)``) with per-image intensity scaling.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer

ROWS_AS_IMAGES = {"image_shape": (1, -1), "intensity": "minmax", "image_size": 32}

EXPECTED_FAILED_CHECKS = {}


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
