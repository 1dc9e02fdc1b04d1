"""
CAE features against transfer-learned features
==============================================

The paper's comparison in a few lines: the same frozen ImageNet backbone and the same
classifier, with and without the convolutional auto-encoder (CAE) between them, on
BreastMNIST (ultrasound, malignant vs normal/benign). We fit on the official training
split and draw ROC curves on the test split.
"""

# %%
# Load the data
# -------------
# :func:`~sklearn_cae.datasets.load_medmnist` returns uint8 images and integer labels; it
# reads ``$MEDMNIST_ROOT`` when that is set, so this runs offline.
import tempfile

import matplotlib.pyplot as plt
from sklearn.metrics import RocCurveDisplay, balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.datasets import load_medmnist

X_train, y_train = load_medmnist("breastmnist", split="train")
X_test, y_test = load_medmnist("breastmnist", split="test")
print(X_train.shape, X_train.dtype, "benign share:", y_train.mean().round(2))

# %%
# Two pipelines
# -------------
# Small images and few epochs keep this example fast on a CPU. The featurizer's
# ``fit`` ignores the labels: only the SVC sees them. Both featurizers run the same
# backbone, so a shared ``cache`` of its feature maps saves the second pass.
settings = {"image_size": 48, "batch_size": 128, "cache": tempfile.mkdtemp()}
pipelines = {
    "CAE features": make_pipeline(
        CAETransferFeaturizer(**settings, max_epochs=10, random_state=0),
        StandardScaler(),
        SVC(class_weight="balanced"),
    ),
    "transfer-learned features": make_pipeline(
        BackboneFeaturizer(**settings), StandardScaler(), SVC(class_weight="balanced")
    ),
}

fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
for name, pipe in pipelines.items():
    pipe.fit(X_train, y_train)
    score = balanced_accuracy_score(y_test, pipe.predict(X_test))
    RocCurveDisplay.from_estimator(
        pipe, X_test, y_test, ax=ax, name=f"{name}\n(balanced accuracy {score:.2f})"
    )
ax.plot([0, 1], [0, 1], ":", color="grey")
ax.legend(loc="lower right", fontsize="small")
ax.set_title("BreastMNIST test split")
plt.show()

# %%
# The featurizer is a scikit-learn transformer like any other: it has feature names and
# fitted attributes, such as the tapped layer and the skorch net that was trained.
feat = pipelines["CAE features"][0]
print(feat.layers_, feat.map_shapes_, feat.get_feature_names_out()[:3])
