"""FEX's options (Pan, Moniz, Chawla; IJCAI 2025; SPEC §2); re-exported by
:mod:`fastxai_jax.explainers.learned.fex`, whose docstring says which defaults
follow the authors' code and which the paper.
"""

from __future__ import annotations

import dataclasses

from fastxai_jax.explainers._masks import patch_grid
from fastxai_jax.explainers.learned import _config
from fastxai_jax.explainers.learned import _fex_losses as losses
from fastxai_jax.explainers.learned._fex_ppo import EPSILON_SCOPES, POLICIES
from fastxai_jax.substrate import explainer_fill

_MODES = ("full", "frozen", "lora")
_LOSSES = ("ppo", "reinforce")
_BASELINES = ("none", "empty")


@dataclasses.dataclass(frozen=True)
class FexConfig(_config.VitFields):
    """FEX hyper-parameters (defaults: the authors' loss weights, a small ViT).

    Attributes:
      num_classes: target classes ``C``.
      image_size: input side ``H = W``.
      patch_size: explainer patch side; the mask grid is ``image_size / patch_size``.
      vit_preset: ``vit_ti16``/``vit_s16``/``vit_b16``; the fields below override it.
      hidden_size, depth, num_heads, mlp_dim: ViT sizes (``None`` = preset's).
      explainer_family: normalisation the explainer applies to its ``[0, 1]`` input.
      backbone_mode: ``"full"`` fine-tuning, ``"frozen"`` backbone (heads only)
        or ``"lora"`` adapters on attention/MLP kernels.
      lora_rank, lora_alpha: LoRA ``r`` and ``α`` (authors: 8, 32).
      head_hidden: actor/critic MLP width (``None`` = ViT width ``D``).
      layer_norm_eps: the explainer ViT's LayerNorm ε (``None``: the preset's
        1e-6; Hugging Face checkpoints, e.g. the authors' ViT, use 1e-12).
      num_masks: ``K`` masks sampled per image per update (authors: 5).
      loss: ``"ppo"`` (default; the paper's objective as the authors run it: a
        rollout of ``B·K`` episodes, then ``ppo_epochs × (B·K //
        ppo_minibatch_size)`` clipped-surrogate steps on minibatches drawn with
        replacement) or ``"reinforce"`` (one step per rollout on all ``B·K``
        episodes; its gradient is PPO's at ratio 1).
      ppo_minibatch_size: rows per PPO step (authors' trainer: 16); larger than
        ``B·K`` is refused (their code would make no step). Unused by reinforce.
      ppo_epochs: passes over each rollout (authors: 1); reinforce needs 1.
      clip_eps, actor_coef, value_coef, entropy_coef, kl_coef: loss weights
        (``value_coef = 0.5`` gives the paper's ``0.5·MSE``).
      entropy_reduction: ``"mean"`` over patches (authors, default) or ``"sum"``
        (the joint policy's entropy, ``L`` times larger: rescale
        ``entropy_coef`` when switching).
      target_family: the normalisation ``apply_fn`` applies internally; masked
        pixels are set to ``fill`` in that space.
      fill: masked value in the target's normalised space (paper: 0), or a
        :class:`~fastxai_jax.substrate.Substrate` (converted there with
        ``to_fill`` when the config is made, e.g. ``Substrate("family_mean")`` is 0).
      reward_baseline: ``"none"`` (the paper's reward) or ``"empty"``: subtract
        ``p_f(ŷ | fully masked x)`` from the reward's probability, so that dropping
        every patch earns 0 when the target predicts ``ŷ`` on a blank image.
      policy: how a patch's keep probability comes from its class logits:
        ``"sigmoid"`` (the paper and the authors' code: ``σ(actor[ŷ])``) or
        ``"softmax"``, an option of this library that is in neither:
        ``softmax_c(actor)[ŷ]``, so a patch that carries evidence for another
        class gets a low keep probability for ``ŷ``.
      epsilon: ε-greedy exploration (the authors' code; 0 = pure sampling); the
        losses use the policy's log-probability of the action taken.
      epsilon_scope: ``"image"`` (authors, default): with probability ε an
        image's whole mask is replaced by fair coin flips; ``"patch"``: each
        patch's action independently.
      initial_keep: ``None`` (the default initialisation) or a probability
        ``q``: the actor's output bias starts at ``logit(q)``, so the untrained
        policy keeps about that share of patches and training prunes masks down
        from nearly whole images (``q = 0.88`` helps when the target only
        recognises a class from its whole object, see the README).

    The optimizer is not part of the config: pass one to ``make_update`` /
    ``runs.fit`` (authors: Adam 5e-5; ``train.loop.make_optimizer``).
    """

    num_classes: int
    backbone_mode: str = "full"
    lora_rank: int = 8
    lora_alpha: float = 32.0
    head_hidden: int | None = None
    layer_norm_eps: float | None = None
    num_masks: int = 5
    loss: str = "ppo"
    ppo_minibatch_size: int = 16
    ppo_epochs: int = 1
    clip_eps: float = 0.2
    actor_coef: float = 1.0
    value_coef: float = 0.5
    entropy_coef: float = 1e-4
    entropy_reduction: str = "mean"
    kl_coef: float = 1.0
    target_family: str = "imagenet"
    fill: float = 0.0
    reward_baseline: str = "none"
    policy: str = "sigmoid"
    epsilon: float = 0.0
    epsilon_scope: str = "image"
    initial_keep: float | None = None

    def __post_init__(self) -> None:
        fill = explainer_fill(self.fill, "normalised", self.target_family)
        object.__setattr__(self, "fill", fill)

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad field."""
        _config.check_choices(
            self,
            (
                ("backbone_mode", _MODES),
                ("reward_baseline", _BASELINES),
                ("policy", POLICIES),
                ("epsilon_scope", EPSILON_SCOPES),
                ("entropy_reduction", losses.ENTROPY_REDUCTIONS),
            ),
        )
        if self.layer_norm_eps is not None and not (
            isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0
        ):
            raise ValueError(f"layer_norm_eps must be None or > 0; got {self.layer_norm_eps!r}")
        if self.policy == "softmax" and isinstance(self.num_classes, int) and self.num_classes < 2:
            raise ValueError("policy='softmax' needs num_classes >= 2; got 1")
        if not isinstance(self.epsilon, (int, float)) or not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1]; got {self.epsilon!r}")
        if self.initial_keep is not None and not (
            isinstance(self.initial_keep, (int, float)) and 0.0 < self.initial_keep < 1.0
        ):
            raise ValueError(f"initial_keep must be None or in (0, 1); got {self.initial_keep!r}")
        _config.check_choices(self, (("loss", _LOSSES),))
        names = ("num_classes", "num_masks", "lora_rank", "image_size", "patch_size")
        _config.check_positive_ints(self, names + ("ppo_minibatch_size", "ppo_epochs"))
        if self.loss == "reinforce" and self.ppo_epochs != 1:
            raise ValueError(
                f"ppo_epochs must be 1 with loss='reinforce' (one step per rollout); "
                f"got {self.ppo_epochs}"
            )
        _config.check_families(self, ("explainer_family", "target_family"))
        patch_grid((self.image_size, self.image_size), self.patch_size, "image_size")

    @property
    def grid(self) -> tuple[int, int]:
        """The ``(gh, gw)`` mask grid."""
        return patch_grid((self.image_size, self.image_size), self.patch_size, "image_size")
