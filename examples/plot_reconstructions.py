"""
What the auto-encoder learns
============================

The CAE is trained to reconstruct the frozen backbone's feature maps, without labels.
Here we look at its reconstructions of a few test images' maps and at its loss curves,
read from skorch's training history.
"""

# %%
# A shallower layer (``blocks.2``, stride 8) gives maps large enough to look at.
import matplotlib.pyplot as plt

from sklearn_cae import CAETransferFeaturizer
from sklearn_cae.datasets import load_medmnist
from sklearn_cae.plotting import plot_loss_curves, plot_reconstructions

X_train, _ = load_medmnist("breastmnist", split="train")
X_train = X_train[:300]  # a subset keeps the example quick
X_test, _ = load_medmnist("breastmnist", split="test")

featurizer = CAETransferFeaturizer(
    layer="blocks.2",
    image_size=64,
    layer_sizes=(32,),
    bottleneck=16,
    max_epochs=15,
    lr=3e-3,
    random_state=0,
).fit(X_train)
print(featurizer.map_shapes_)

# %%
# Reconstructions
# ---------------
# Each row: a test image, then pairs of (standardised) feature-map channel and its
# reconstruction, for the channels that vary most over these images. Red is above the
# channel's training mean, blue below.
fig = plot_reconstructions(featurizer, X_test[:4], n_channels=3)
plt.show()

# %%
# Loss curves
# -----------
# The validation loss is computed on maps held out from training
# (``validation_fraction``); early stopping keeps the weights of its best epoch (★).
plot_loss_curves(featurizer)
plt.show()
