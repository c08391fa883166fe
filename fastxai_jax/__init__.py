"""fastxai_jax: fast explanations of neural-network predictions in JAX/Flax.

The flat public API::

    import fastxai_jax as fx
    A = fx.attribute("mfaba", apply_fn, params, x)          # [B, H, W]
    fx.insertion_deletion(apply_fn, params, x, A)            # curves + AUCs
    trained = fx.runs.load("runs/fex")                       # any learned method
    A = fx.attribute("fex", apply_fn, params, x, explainer=trained)

Sub-packages: :mod:`fastxai_jax.models` (Flax targets, converters),
:mod:`fastxai_jax.metrics`, :mod:`fastxai_jax.data`, :mod:`fastxai_jax.train`.
"""

from fastxai_jax import data, evaluation, metrics, models, sweep, train
from fastxai_jax.core import (
    ApplyFn,
    Cost,
    LearnedExplainer,
    Substrate,
    check_images,
    check_range,
    check_target,
    images_from_uint8,
    resolve_target,
)
from fastxai_jax.explainers import dax, rise, tokens
from fastxai_jax.explainers.boundary import agi, big, fgsm_attack
from fastxai_jax.explainers.cam import gradcam
from fastxai_jax.explainers.gradients import (
    gradient_shap,
    input_x_gradient,
    integrated_gradients,
    integrated_gradients_with_delta,
    saliency,
)
from fastxai_jax.explainers.learned import (
    fastshap,
    fex,
    ltx,
    make_update,
    optimizer_for,
    runs,
    tve,
)
from fastxai_jax.explainers.mfaba import mfaba, mfaba_cos, mfaba_norm, mfaba_sharp, mfaba_smooth
from fastxai_jax.explainers.random_map import random_attribution
from fastxai_jax.explainers.registry import (
    attribute,
    available_methods,
    compute,
    get_method,
    method_cost,
    noise_tunnel,
    prepare,
    register,
    register_learned,
    smoothgrad,
    vargrad,
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
    "compute",
    "images_from_uint8",
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
    "make_update",
    "method_cost",
    "metrics",
    "mfaba",
    "mfaba_cos",
    "mfaba_norm",
    "mfaba_sharp",
    "mfaba_smooth",
    "models",
    "noise_tunnel",
    "optimizer_for",
    "overlay",
    "pointing_game",
    "pos_neg_perturbation",
    "prepare",
    "random_attribution",
    "register",
    "register_learned",
    "relevance_mass",
    "resolve_target",
    "rise",
    "runs",
    "saliency",
    "save_overlay",
    "segmentation_scores",
    "smoothgrad",
    "sparseness",
    "sweep",
    "tokens",
    "train",
    "tve",
    "vargrad",
]
