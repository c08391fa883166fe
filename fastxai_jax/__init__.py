"""fastxai_jax: fast explanations of neural-network predictions in JAX/Flax.

The flat public API::

    import fastxai_jax as fx
    A = fx.attribute("mfaba", apply_fn, params, x)          # [B, H, W]
    fx.insertion_deletion(apply_fn, params, x, A)            # curves + AUCs
    learned = fx.fex.make(config, apply_fn, target_params)   # init/update/explain

Sub-packages: :mod:`fastxai_jax.models` (Flax targets, converters),
:mod:`fastxai_jax.metrics`, :mod:`fastxai_jax.data`, :mod:`fastxai_jax.train`.
"""

from fastxai_jax import data, evaluation, metrics, models, train
from fastxai_jax.core import (
    ApplyFn,
    Cost,
    LearnedExplainer,
    Substrate,
    check_images,
    check_range,
    check_target,
    resolve_target,
)
from fastxai_jax.explainers import dax, fastshap, fex, ltx, rise, tve
from fastxai_jax.explainers.boundary import agi, big, fgsm_attack
from fastxai_jax.explainers.cam import gradcam
from fastxai_jax.explainers.gradients import (
    gradient_shap,
    input_x_gradient,
    integrated_gradients,
    integrated_gradients_with_delta,
    noise_tunnel,
    saliency,
    smoothgrad,
    vargrad,
)
from fastxai_jax.explainers.mfaba import mfaba, mfaba_cos, mfaba_norm, mfaba_sharp, mfaba_smooth
from fastxai_jax.explainers.random_map import random_attribution
from fastxai_jax.explainers.registry import (
    attribute,
    available_methods,
    get_method,
    method_cost,
    register,
)
from fastxai_jax.metrics import (
    adp_pic,
    deletion,
    deletion_auc,
    entropy,
    insertion,
    insertion_auc,
    insertion_deletion,
    iou,
    pointing_game,
    pos_neg_perturbation,
    relevance_mass,
    segmentation_scores,
    sparseness,
)
from fastxai_jax.models import available_models, build, load_pretrained, make_apply_fn
from fastxai_jax.viz import overlay, save_overlay

__version__ = "0.1.0"

__all__ = [
    "ApplyFn",
    "Cost",
    "LearnedExplainer",
    "Substrate",
    "adp_pic",
    "agi",
    "attribute",
    "available_methods",
    "available_models",
    "big",
    "build",
    "check_images",
    "check_range",
    "check_target",
    "data",
    "dax",
    "deletion",
    "deletion_auc",
    "entropy",
    "evaluation",
    "fastshap",
    "fex",
    "fgsm_attack",
    "get_method",
    "gradcam",
    "gradient_shap",
    "input_x_gradient",
    "insertion",
    "insertion_auc",
    "insertion_deletion",
    "integrated_gradients",
    "integrated_gradients_with_delta",
    "iou",
    "load_pretrained",
    "ltx",
    "make_apply_fn",
    "method_cost",
    "metrics",
    "mfaba",
    "mfaba_cos",
    "mfaba_norm",
    "mfaba_sharp",
    "mfaba_smooth",
    "models",
    "noise_tunnel",
    "overlay",
    "pointing_game",
    "pos_neg_perturbation",
    "random_attribution",
    "register",
    "relevance_mass",
    "resolve_target",
    "rise",
    "saliency",
    "save_overlay",
    "segmentation_scores",
    "smoothgrad",
    "sparseness",
    "train",
    "tve",
    "vargrad",
]
