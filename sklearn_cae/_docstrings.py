"""One source for the parameter and attribute docs the two featurizers share.

Class docstrings name a shared entry as ``{backbone}``, ``{cache}``, ... and
:class:`Substitution` fills them in, as imbalanced-learn's helper of the same name
does (without importing imbalanced-learn when the featurizers are imported). Braces
meant literally are written ``{{`` and ``}}`` in a substituted docstring.
"""

from __future__ import annotations

__all__ = ["SHARED_DOCS", "Substitution"]


class Substitution:
    """Fill the ``{name}`` fields of a function's or class's docstring.

    Parameters
    ----------
    **params : str
        Text for each field.

    Examples
    --------
    >>> @Substitution(what="a cat")
    ... def f():
    ...     '''Return {what}.'''
    >>> f.__doc__
    'Return a cat.'
    """

    def __init__(self, **params: str):
        self.params = params

    def __call__(self, obj):
        if obj.__doc__:  # None under python -OO
            obj.__doc__ = obj.__doc__.format(**self.params)
        return obj


# Each entry is indented for a class docstring: its first line at 4 spaces (where the
# field stands), the following ones at 8.
SHARED_DOCS = {
    "backbone": """backbone : str or torch.nn.Module, default="efficientnet_lite0"
        Backbone name (see :mod:`sklearn_cae.backbones`) or a module of your own.""",
    "weights": """weights : {"DEFAULT"}, None, path or str, default="DEFAULT"
        ImageNet weights, random initialisation, or a local state-dict file (loaded by
        tensor name: a checkpoint without its head works); for torchvision backbones
        also a weights name such as ``"IMAGENET1K_V1"``. See :doc:`/backbones`.""",
    "image_size": """image_size : int or (int, int), default=128
        Images are resized to this size before the backbone.""",
    "image_shape": """image_shape : tuple of int, default=None
        Shape used to unflatten 2-D ``X`` of shape (n, H*W*C).""",
    "intensity": """intensity : {"auto", "minmax", "dtype", "dicom_window"} or (low, high), \
default="auto"
        Mapping of pixel values to [0, 1]: ``auto`` divides uint8 by 255, keeps floats
        in [0, 1] and min-max scales anything else per image; ``minmax`` scales every
        image to its own range; ``dtype`` by the integer type's full range; a
        ``(low, high)`` window clips to it (a CT window); ``dicom_window`` applies each
        DICOM file's own VOI LUT or window (other images as ``auto``). See docs/inputs.md.""",
    "channels": """channels : {"convert", "strict"}, default="convert"
        Grey and colour images together. ``"convert"``: when any image of a call is
        colour, grey ones are replicated to RGB -- lossless, since the backbone
        replicates grey images anyway (RGBA, palette and CMYK images are RGB, alpha
        dropped) -- in ``fit`` and ``transform`` alike, so a model fitted on grey images
        also transforms colour ones and vice versa. ``"strict"``: a call mixing grey and
        colour images, or a ``transform`` whose channel count differs from ``fit``'s,
        raises ``ValueError``. See docs/inputs.md.""",
    "device": """device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.""",
    "cache": """cache : None, str, path-like, FeatureCache or joblib.Memory, default=None
        Where to keep each image's backbone maps (float16) between calls, following
        scikit-learn's ``memory`` convention: None disables it, a directory path or a
        ``joblib.Memory`` enables it, and a :class:`sklearn_cae.cache.FeatureCache`
        sets a size cap (``max_size``) or content keys for files (``key``). Image files
        are keyed on their path, size and modification time (no decoding), in-memory
        images on their content, both with everything that changes the maps (backbone,
        weights, layers, image size, preprocessing, package release), so CV folds and grid
        points sharing a backbone reuse them; safe with ``n_jobs > 1`` and several
        processes (call ``fill_cache(X)`` first so that parallel folds all read the
        same maps). A leading ``~`` is expanded; an empty path or an existing non-folder is
        refused at ``fit``; a cache that cannot be written warns (``CacheWriteWarning``)
        and never fails the fit. See :mod:`sklearn_cae.cache`.""",
    "fitted_backbone": """backbone_ : torch.nn.Module
        The frozen backbone, truncated after the deepest tapped layer.
    layers_ : list of str
        The tapped layers.
    n_channels_ : list of int
        Channels of each tapped map.
    map_shapes_ : list of tuple
        ``(channels, height, width)`` of each tapped map at ``image_size``.
    input_mean_, input_std_ : tuple of float
        The backbone's input normalisation (per RGB channel).""",
    "fitted_input": """n_input_channels_ : int
        Channels of the images seen in ``fit``: 1 when all were grey, else 3 (grey
        images replicated). Checked in ``transform`` only with ``channels="strict"``.
    n_features_in_ : int
        Number of columns of ``X``; only set when fitted on flattened (2-D) images.""",
}
