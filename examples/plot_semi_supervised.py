"""
Learning from unlabelled images
===============================

The auto-encoder needs no labels, so it can learn from every image available while the
classifier learns from the few labelled ones. We fit one featurizer on all of
BreastMNIST's training images (labels unused), freeze it with
:class:`sklearn.frozen.FrozenEstimator`, and train an SVC on growing labelled subsets.
For comparison, a featurizer fitted on the labelled subset alone, and a semi-supervised
one (``supervision=1``, ``corrupted_views=1``) fitted on all images with the labels it
has and ``-1`` for the others.
"""

# %%
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_cae import CAETransferFeaturizer
from sklearn_cae.datasets import load_medmnist

X_all, y_all = load_medmnist("breastmnist", split="train")
X_test, y_test = load_medmnist("breastmnist", split="test")
# All featurizers below share the backbone settings, so a cache of backbone maps lets the
# backbone run once per image; only the auto-encoders are trained again.
cache = tempfile.mkdtemp(prefix="sklearn_cae_")
settings = {"image_size": 48, "batch_size": 128, "max_epochs": 10, "random_state": 0}
settings["cache"] = cache

# Fitted once on every training image; y is not passed (and would be ignored).
unlabelled = CAETransferFeaturizer(**settings).fit(X_all)

# %%
# For each number of labels, the frozen featurizer only needs the SVC to be trained;
# the "labelled only" featurizer is fitted again on the labelled images.
n_labels = [20, 50, 150]
scores = {
    "fitted on all images": [],
    "fitted on the labelled ones": [],
    "semi-supervised, all images": [],
}
for n in n_labels:
    labelled, _ = train_test_split(
        np.arange(len(y_all)), train_size=n, stratify=y_all, random_state=0
    )
    X_lab, y_lab = X_all[labelled], y_all[labelled]
    y_partial = np.full_like(y_all, -1)  # sklearn.semi_supervised's unlabelled marker
    y_partial[labelled] = y_lab
    semi = CAETransferFeaturizer(supervision=1.0, corrupted_views=1, **settings)
    for name, featurizer in [
        ("fitted on all images", FrozenEstimator(unlabelled)),
        ("fitted on the labelled ones", CAETransferFeaturizer(**settings)),
        ("semi-supervised, all images", FrozenEstimator(semi.fit(X_all, y_partial))),
    ]:
        pipe = make_pipeline(featurizer, StandardScaler(), SVC(class_weight="balanced"))
        pipe.fit(X_lab, y_lab)
        scores[name].append(roc_auc_score(y_test, pipe.decision_function(X_test)))

# %%
fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
for name, values in scores.items():
    ax.plot(n_labels, values, "o-", label=f"featurizer {name}")
ax.set_xscale("log")
ax.set_xticks(n_labels, [str(n) for n in n_labels])
ax.minorticks_off()
ax.set_xlabel("labelled training images")
ax.set_ylabel("test ROC AUC")
ax.legend()
ax.set_title("BreastMNIST: labels for the SVC only")
plt.show()
print({name: np.round(values, 3).tolist() for name, values in scores.items()})

# %%
# At these deliberately small settings (48-pixel images, 10 epochs) the curves are
# close and noisy: extra unlabelled images are not guaranteed to help. The method note
# measures the settings at full size, by cross-validation and on the test splits; measure
# it on your data before relying on it.
