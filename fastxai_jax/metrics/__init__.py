"""Evaluation metrics (SPEC §7): perturbation, localisation, complexity, cost."""

from fastxai_jax.metrics.complexity import entropy, sparseness
from fastxai_jax.metrics.cost import CostRecord, measure_cost, peak_memory
from fastxai_jax.metrics.localisation import (
    SegmentationResult,
    average_precision,
    boxes_to_masks,
    iou,
    pointing_game,
    pooled_segmentation,
    relevance_mass,
    segmentation_scores,
)
from fastxai_jax.metrics.perturbation import (
    AdpPicResult,
    CurveResult,
    adp_pic,
    deletion,
    deletion_auc,
    insertion,
    insertion_auc,
    insertion_deletion,
    normalised_auc,
    pos_neg_perturbation,
)
from fastxai_jax.metrics.stats import PairedDifference, paired_difference

__all__ = [
    "AdpPicResult",
    "CostRecord",
    "CurveResult",
    "PairedDifference",
    "SegmentationResult",
    "adp_pic",
    "average_precision",
    "boxes_to_masks",
    "deletion",
    "deletion_auc",
    "entropy",
    "insertion",
    "insertion_auc",
    "insertion_deletion",
    "iou",
    "measure_cost",
    "normalised_auc",
    "paired_difference",
    "peak_memory",
    "pointing_game",
    "pooled_segmentation",
    "pos_neg_perturbation",
    "relevance_mass",
    "segmentation_scores",
    "sparseness",
]
