"""``fastxai demo``: the target, the learned explainers' recipes and the protocol.

Command (19.6 minutes on 2 shared CPU cores from a fresh clone, pip and the text
section included; later runs reuse ``runs/demo``)::

  make demo    # = fastxai demo --out demo_out --workdir runs/demo

Measured (README; target test accuracy 0.999, the same bits on 1 and 2 cores;
32 held-out images):

  | method | insertion AUC | deletion AUC | patch del. | pointing | IoU | ms / image |
  | FEX (trained 253 s) | 0.964 | 0.147 | 0.168 | 1.00 | 0.48 | 1.9 |
  | RISE (4000 masks)   | 0.970 | 0.147 | 0.168 | 1.00 | 0.18 | 4633 |
  | MFABA-SHARP         | 0.948 | 0.147 | 0.168 | 0.62 | 0.39 | 20 |
  | IG (50 steps)       | 0.719 | 0.147 | 0.163 | 1.00 | 0.20 | 91 |
  | Saliency            | 0.951 | 0.147 | 0.169 | 0.53 | 0.23 | 1.4 |
  | random              | 0.476 | 0.164 | 0.425 | 0.06 | 0.03 | 0.05 |
"""

from __future__ import annotations

from typing import Any, NamedTuple

from fastxai_jax.configs.learned import LearnedRecipe
from fastxai_jax.evaluation.protocol import PatchProtocol, Protocol
from fastxai_jax.substrate import Substrate, to_fill

# Black, the deletion metric's substrate, as each explainer's ``fill`` states it: FastSHAP
# in the small CNN's normalised space ("half": -1), DAX in [0, 1] pixels (0).
BLACK = Substrate("constant", 0.0)

# The demo's target answers "no class" to an image whose object is blacked out
# (fastxai_jax.train.target.null_augment), so that deletion curves measure removed
# evidence rather than the black substrate's own class evidence.
TARGET_OPTIONS: dict[str, Any] = {"null_fraction": 0.25}


def fex_recipe() -> LearnedRecipe:
    """FEX on the demo's calibrated target: K = 10 masks, pruning down from keeping 88%.

    Command: ``fastxai train-explainer --method fex --num-masks 10 --initial-keep 0.88``.
    Measured (README): deletion 0.147, patch del. 0.169, pointing 1.00, IoU 0.47 on the
    demo's 32 images; FEX − RISE deletion +0.001 [−0.001, +0.002] on 128 further
    images (``experiments/fex_vs_rise.py``). The paper's K = 5 missed circles (pointing 0.92).
    """
    return LearnedRecipe(num_masks=10, initial_keep=0.88)


def tve_recipe() -> LearnedRecipe:
    """TVE from a copy of the target's conv trunk, local head init, 1000 steps at 3e-3.

    Command: ``fastxai train-explainer --method tve --explainer-backbone target
    --tve-head-init local --steps 1000 --batch-size 32 --lr 3e-3``.
    Measured (``experiments/benchmarks/bench_learned.py``, default target, 2048 train
    images): target head deletion 0.150, pointing 0.50, 118 s training, 1.5 ms / image.
    """
    return LearnedRecipe(
        explainer_backbone="target", tve_head_init="local", steps=1000, batch_size=32, lr=3e-3
    )


def fastshap_recipe() -> LearnedRecipe:
    """FastSHAP from the target's conv trunk, 8×8 players masked black, 900 steps at 3e-3.

    Command: ``fastxai train-explainer --method fastshap --explainer-backbone target
    --steps 900 --batch-size 32 --lr 3e-3 --fastshap-samples 16 --fastshap-fill -1``
    (-1 is black under the small CNN's "half" normalisation, the deletion substrate).
    Measured (``bench_learned.py``): deletion 0.140, pointing 0.72, 399 s training.
    """
    return LearnedRecipe(
        explainer_backbone="target", steps=900, batch_size=32, lr=3e-3, fastshap_samples=16,
        fastshap_fill=float(to_fill(BLACK, "normalised", "half")),
    )  # fmt: skip


def ltx_recipe() -> LearnedRecipe:
    """LTX with the ``train-explainer`` defaults (CNN mask head).

    Measured (``bench_learned.py``, 300 steps): stage A deletion 0.152, pointing 0.56.
    """
    return LearnedRecipe()


def learned_recipe(name: str, fex_steps: int | None = None) -> LearnedRecipe:
    """The recipe the demo trains learned explainer ``name`` with."""
    recipes = {"fex": fex_recipe, "tve": tve_recipe, "fastshap": fastshap_recipe}
    recipe = recipes.get(name, ltx_recipe)()
    if name == "fex" and fex_steps is not None:
        recipe = recipe.replace(steps=fex_steps)
    return recipe


# The recipes as ``fastxai train-explainer`` options.
LEARNED_RECIPES: dict[str, list[str]] = {
    "fex": fex_recipe().flags(),
    "tve": tve_recipe().flags(),
    "fastshap": fastshap_recipe().flags(),
}


def dax_recipe() -> dict[str, Any]:
    """DAX when asked for with ``--methods ...,dax``: held student, black fill, the
    authors' border, every epoch's mask (~90 s per image on 2 CPU cores).

    Measured (``bench_learned.py``): deletion 0.171, pointing 0.44, 1000 queries / image.
    """
    return {
        "num_samples": 1000, "epochs": 9, "hidden": 64, "features": 8, "patch_size": 8,
        "complement_trains_student": False, "border": 7 / 128, "snapshot_epochs": 9,
        "fill": to_fill(BLACK, "pixel"), "batching": "map",
    }  # fmt: skip


DAX_RECIPE: dict[str, Any] = dax_recipe()


def protocol(family: str) -> Protocol:
    """The demo's protocol: RISE's pixel curves (insertion on blur, deletion on black,
    224 pixels a step, probability of ŷ) and the FEX paper's patch curves (8×8
    patches, 10 steps, masked patches at the family's mean: gray)."""
    return Protocol(
        normalisation=family,
        patch=PatchProtocol(patch_size=8, num_steps=10, substrate=Substrate("family_mean")),
    )


def method_options(rise_masks: int = 4000) -> dict[str, dict[str, Any]]:
    """Per-input method options on the benchmark."""
    return {"rise": {"num_masks": rise_masks}, "dax": dax_recipe()}


# Fewer path points on the 224² photos keep the demo short (Gauss–Legendre IG with 16
# nodes); `fastxai explain --method ig --option num_steps=N` for more.
PHOTO_OPTIONS: dict[str, dict[str, Any]] = {"ig": {"num_steps": 16}}
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
# The few ImageNet classes the demo's photos land on (no full label list ships offline).
IMAGENET_NAMES = {285: "Egyptian cat", 967: "espresso", 610: "jersey, T-shirt", 657: "missile"}


class DemoConfig(NamedTuple):
    """What ``fastxai demo`` runs (its command-line defaults)."""

    num_eval: int = 32
    rise_masks: int = 4000
    learned: str = "fex"
    methods: str = "rise,mfaba,ig,saliency,random"
    photo_methods: str = "saliency,ig,mfaba,gradcam"
    seed: int = 0


def demo() -> DemoConfig:
    """The demo's defaults (see the module docstring for the command and the result)."""
    return DemoConfig()
