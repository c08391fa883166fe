"""Flax (Linen) target models, the model table, and torch weight converters.

Every image model's ``apply(variables, x, train=False)`` takes a normalised
NHWC batch and returns ``(logits, aux)``; explainers use
:func:`make_apply_fn`, which normalises [0, 1] input and drops ``aux``
(or keeps it with ``with_aux=True``, Grad-CAM's input). Pretrained weights
that ship in a package load through :mod:`fastxai_jax.models.pretrained`.
"""

from fastxai_jax.models.bert import BertClassifier
from fastxai_jax.models.convert import (
    convert_efficientnet_lite0,
    convert_torchvision_resnet,
    convert_torchvision_vgg16,
    load_state_dict,
)
from fastxai_jax.models.convert_transformers import (
    convert_hf_bert,
    convert_hf_vit,
    convert_timm_vit,
)
from fastxai_jax.models.efficientnet import EfficientNetLite0
from fastxai_jax.models.pretrained import load_efficientnet_lite0_imagenet
from fastxai_jax.models.resnet import ResNet, resnet
from fastxai_jax.models.small_cnn import SmallCNN
from fastxai_jax.models.vgg import VGG16, adaptive_avg_pool
from fastxai_jax.models.vit import VIT_PRESETS, ViT, vit
from fastxai_jax.models.zoo import (
    MODEL_ZOO,
    ModelInfo,
    available_models,
    build,
    detect_layout,
    init_perturbations,
    load_pretrained,
    make_apply_fn,
    normalise_images,
    random_variables,
)

__all__ = [
    "MODEL_ZOO",
    "VGG16",
    "VIT_PRESETS",
    "BertClassifier",
    "EfficientNetLite0",
    "ModelInfo",
    "ResNet",
    "SmallCNN",
    "ViT",
    "adaptive_avg_pool",
    "available_models",
    "build",
    "convert_efficientnet_lite0",
    "convert_hf_bert",
    "convert_hf_vit",
    "convert_timm_vit",
    "convert_torchvision_resnet",
    "convert_torchvision_vgg16",
    "detect_layout",
    "init_perturbations",
    "load_efficientnet_lite0_imagenet",
    "load_pretrained",
    "load_state_dict",
    "make_apply_fn",
    "normalise_images",
    "random_variables",
    "resnet",
    "vit",
]
