"""
Embeddings of pixels, backbone features and CAE features
========================================================

A 2-D t-SNE embedding of PneumoniaMNIST chest X-rays (normal vs pneumonia), computed from
three representations and coloured by the label, which none of them saw.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.datasets import load_medmnist
from sklearn_cae.plotting import plot_embedding

X, y = load_medmnist("pneumoniamnist", split="val")
# A stratified sample keeps t-SNE quick.
X, _, y, _ = train_test_split(X, y, train_size=200, stratify=y, random_state=0)
names = ["normal", "pneumonia"]

settings = {"image_size": 48, "batch_size": 100}
features = {
    "raw pixels": X.reshape(len(X), -1).astype(np.float32),
    "backbone features": BackboneFeaturizer(**settings).fit_transform(X),
    "CAE features": CAETransferFeaturizer(**settings, max_epochs=10, random_state=0)
    .fit(X)
    .transform(X),
}

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained")
for ax, (title, Z) in zip(axes, features.items(), strict=True):
    plot_embedding(Z, y, class_names=names, ax=ax, title=f"{title} ({Z.shape[1]} dims)")
plt.show()
