"""
Imbalanced classes with imbalanced-learn
========================================

BreastMNIST has about three benign images for each malignant one. With the features
fixed, we compare a plain SVC, a class-weighted SVC and SMOTE oversampling of the
*features* in an imbalanced-learn pipeline (resampling happens in ``fit`` only, so the
test images are never resampled).
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import make_pipeline
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import ConfusionMatrixDisplay, balanced_accuracy_score
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_cae import CAETransferFeaturizer
from sklearn_cae.datasets import load_medmnist

X_train, y_train = load_medmnist("breastmnist", split="train")
X_test, y_test = load_medmnist("breastmnist", split="test")
print("training images (malignant, benign):", np.bincount(y_train))

# %%
# The featurizer is fitted once and frozen, so the three pipelines share its features.
featurizer = FrozenEstimator(
    CAETransferFeaturizer(image_size=48, max_epochs=10, batch_size=128, random_state=0).fit(X_train)
)
F_train, F_test = featurizer.transform(X_train), featurizer.transform(X_test)

pipelines = {
    "SVC": make_pipeline(StandardScaler(), SVC()),
    "SVC(class_weight='balanced')": make_pipeline(StandardScaler(), SVC(class_weight="balanced")),
    "SMOTE + SVC": make_pipeline(StandardScaler(), SMOTE(random_state=0), SVC()),
}

fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), layout="constrained")
for ax, (name, pipe) in zip(axes, pipelines.items(), strict=True):
    pipe.fit(F_train, y_train)
    predicted = pipe.predict(F_test)
    ConfusionMatrixDisplay.from_predictions(
        y_test,
        predicted,
        display_labels=["malignant", "benign"],
        ax=ax,
        colorbar=False,
    )
    ax.set_title(f"{name}\nbalanced acc. {balanced_accuracy_score(y_test, predicted):.2f}")
plt.show()
