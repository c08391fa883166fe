"""Learned-explainer recipes: one :class:`LearnedRecipe` → each method's config and optimizer.

A recipe holds every option that shapes a trained explainer (steps, batch, data,
and the per-method settings); :func:`fastxai_jax.evaluation.train_explainer`
trains any learned method from one, and ``fastxai train-explainer`` builds one
from its flags (a flag ``--num-masks`` is the field ``num_masks``). The per-method
defaults are the benchmark recipes: FEX's :data:`fex_benchmark.BENCHMARK_DEFAULTS`
(Gupta et al., 2022, tuned on the 64×64 benchmark), the authors' AdamW schedules
for LTX (Stalder et al., 2022), TVE (Covert et al., 2023) and FastSHAP
(Jethani et al., 2022).

Command (the defaults)::

  fastxai train-explainer --method fex --workdir runs/fex
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

#: ``LearnedRecipe`` fields that override :data:`fex_benchmark.BENCHMARK_DEFAULTS`.
FEX_OPTIONS = (
    "num_masks", "loss", "backbone_mode", "lora_rank", "patch_size", "policy", "epsilon",
    "initial_keep", "epsilon_scope", "entropy_reduction", "ppo_minibatch_size", "ppo_epochs",
    "hidden_size", "depth",
)  # fmt: skip
#: The authors' peak learning rates (``--lr`` unset).
DEFAULT_LR = {"ltx": 2e-3, "tve": 1e-3, "fastshap": 1e-3}
_POSITIVE = ("steps", "batch_size", "num_train", "image_size")


@dataclasses.dataclass(frozen=True)
class LearnedRecipe:
    """What a learned explainer is trained with (``None``: the method's default).

    Attributes:
      steps, batch_size, lr, num_train, image_size, seed: the run (``num_train``
        benchmark images at ``image_size``², data and init seed ``seed``).
      num_masks … depth: FEX (:class:`~fastxai_jax.explainers.learned.fex.FexConfig`);
        ``patch_size``, ``hidden_size`` and ``depth`` also size the TVE/FastSHAP ViT.
      dax_*: DAX's per-input fits (:func:`fastxai_jax.explainers.dax.dax`).
      ltx_*, tve_*, fastshap_*, explainer_backbone: LTX, TVE and FastSHAP.
    """

    steps: int = 700
    batch_size: int = 16
    lr: float | None = None
    num_train: int = 4000
    image_size: int = 64
    seed: int = 0
    num_masks: int | None = None
    loss: str | None = None
    backbone_mode: str | None = None
    lora_rank: int | None = None
    patch_size: int | None = None
    hidden_size: int | None = None
    depth: int | None = None
    policy: str | None = None
    epsilon: float | None = None
    epsilon_scope: str | None = None
    entropy_reduction: str | None = None
    ppo_minibatch_size: int | None = None
    ppo_epochs: int | None = None
    initial_keep: float | None = None
    dax_samples: int = 3000
    dax_epochs: int = 9
    dax_net_size: int | None = None
    dax_complement: str = "train"
    dax_border: float = 0.0
    dax_fill: str | float = "grey"
    ltx_lam: float | None = None
    ltx_penalty: str = "softplus"
    tve_grid: int | None = None
    tve_radius: int = 1
    tve_cells: int = 1
    tve_head_init: str = "random"
    fastshap_samples: int = 32
    fastshap_fill: float = 0.0
    explainer_backbone: str = "vit"

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a positive finite number or None; got {self.lr}")

    def replace(self, **changes: Any) -> LearnedRecipe:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def flags(self) -> list[str]:
        """The ``fastxai train-explainer`` options of the fields that differ from the defaults."""
        default = LearnedRecipe()
        argv = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value != getattr(default, field.name):
                argv += [f"--{field.name.replace('_', '-')}", str(value)]
        return argv


def fex_config(recipe: LearnedRecipe, num_classes: int, family: str):
    """FEX's benchmark config with the recipe's FEX fields that are set."""
    from fastxai_jax.explainers.learned import fex_benchmark

    overrides = {
        name: getattr(recipe, name) for name in FEX_OPTIONS if getattr(recipe, name) is not None
    }
    return fex_benchmark.benchmark_config(
        num_classes, image_size=recipe.image_size, target_family=family, **overrides
    )


def ltx_config(recipe: LearnedRecipe, family: str, target_name: str):
    """LTX's config: a CNN mask head on the target's last feature stage (a ViT's tokens)."""
    from fastxai_jax.explainers.learned import ltx

    kind = "vit" if target_name.startswith("vit") else "cnn"
    feature = {"small_cnn": "conv_last", "vgg16": "features"}.get(target_name, "layer4")
    return ltx.LtxConfig(
        kind=kind, family=family, feature=feature, lam=recipe.ltx_lam or 30.0,
        penalty=recipe.ltx_penalty,
    )  # fmt: skip


def tve_config(recipe: LearnedRecipe, family: str, embed_dim: int):
    """TVE's config: the README's recipe (shared arch), cells of 8 pixels by default."""
    from fastxai_jax.explainers.learned import tve

    grid = recipe.tve_grid or recipe.image_size // 8
    return tve.TveConfig(
        embed_dim=embed_dim, image_size=recipe.image_size, grid=grid, radius=recipe.tve_radius,
        patch_size=recipe.patch_size or 8, hidden_size=recipe.hidden_size or 64,
        depth=recipe.depth or 2, num_heads=4, mlp_dim=4 * (recipe.hidden_size or 64),
        explainer_family="half", encoder_family=family, backbone=recipe.explainer_backbone,
        cells_per_image=recipe.tve_cells, head_init=recipe.tve_head_init,
        arch="shared",  # the README's TVE recipe (head_init="local" needs it)
    )  # fmt: skip


def fastshap_config(recipe: LearnedRecipe, family: str, num_classes: int):
    """FastSHAP's config: patches of 16 pixels, or the target trunk's feature cells."""
    from fastxai_jax.explainers.learned import fastshap

    # with the target's trunk the players are its feature cells (stride 8 for small_cnn)
    default_patch = 8 if recipe.explainer_backbone == "target" else 16
    return fastshap.FastShapConfig(
        num_classes=num_classes, image_size=recipe.image_size,
        patch_size=recipe.patch_size or default_patch, backbone=recipe.explainer_backbone,
        hidden_size=recipe.hidden_size or 64, depth=recipe.depth or 2, num_heads=4,
        mlp_dim=4 * (recipe.hidden_size or 64), explainer_family="half", target_family=family,
        num_samples=recipe.fastshap_samples, fill=recipe.fastshap_fill,
    )  # fmt: skip


def optimizer_settings(name: str, recipe: LearnedRecipe) -> dict[str, Any]:
    """``train.loop.make_optimizer`` settings of learned method ``name``: FEX's benchmark
    Adam; the authors' AdamW for LTX (warm-up 20 % then constant) and TVE/FastSHAP
    (warm-up 5 % then cosine); ``recipe.lr`` replaces the peak rate."""
    if name == "fex":
        from fastxai_jax.explainers.learned import fex_benchmark

        lr = {} if recipe.lr is None else {"lr": recipe.lr}
        return fex_benchmark.benchmark_optimizer_settings(recipe.steps, **lr)
    settings = {"name": "adamw", "lr": recipe.lr or DEFAULT_LR[name], "total_steps": recipe.steps}
    if name == "ltx":
        return {**settings, "warmup_frac": 0.2, "schedule": "constant", "weight_decay": 1e-2}
    return {**settings, "warmup_frac": 0.05, "weight_decay": 1e-4}


def dax_options(recipe: LearnedRecipe) -> dict[str, Any]:
    """Options of :func:`fastxai_jax.explainers.dax.dax` for the recipe's DAX fields."""
    options = {
        "num_samples": recipe.dax_samples,
        "epochs": recipe.dax_epochs,
        "complement_trains_student": recipe.dax_complement == "train",
        "border": recipe.dax_border,
        "fill": recipe.dax_fill,
    }
    if recipe.dax_net_size:
        options["net_size"] = recipe.dax_net_size
    return options
