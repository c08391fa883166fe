"""LTX's options (Barkan et al., ICDM 2023; SPEC §4); re-exported by
:mod:`fastxai_jax.explainers.learned.ltx`, whose docstring says which defaults
follow the authors' code.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fastxai_jax.explainers.learned import _config
from fastxai_jax.models.normalization import FAMILY_NORMALISATION

_KINDS = ("vit", "cnn")
_PENALTIES = ("softplus", "mean")
_PENALTY_ON = ("tokens", "pixels")
_SCORES = ("top1", "prob")
AUTHORS_POS_AUC_STOP = 6.0


@dataclasses.dataclass(frozen=True)
class LtxConfig:
    """LTX options (authors' values as defaults where they apply).

    Attributes:
      kind: ``"vit"`` (per-patch-token head) or ``"cnn"`` (1×1 conv head).
      family: normalisation the backbone copy applies to its ``[0, 1]`` input.
      feature: CNN feature map name in ``aux["features"]``.
      lam: penalty weight (authors: 50 ViT-B, 30 ViT-S).
      penalty: ``"softplus"`` (authors) or ``"mean"``.
      penalty_on: ``"tokens"`` (authors: the patch-grid mask before upsampling)
        or ``"pixels"`` (the upsampled mask; this library's behaviour before
        issue 18).
      class_source: ``"predicted"`` (``ŷ``, default: the contract explains the
        prediction) or ``"label"`` (batch ``"labels"``; the authors' default).
      frozen: parameter-name fragments kept fixed (authors: the embeddings).
      finetune_steps: stage-B epochs per input (authors: 25).
      pos_score: ``"top1"`` (LTX: agreement × 100) or ``"prob"`` for the POS AUC.
      pos_threshold: stage-B stop once a new best POS AUC is below this
        (authors: 6.0); ``None`` never stops early.
    """

    kind: str = "vit"
    family: str = "imagenet"
    feature: str = "conv_last"
    lam: float = 30.0
    penalty: str = "softplus"
    penalty_on: str = "tokens"
    class_source: str = "predicted"
    frozen: tuple[str, ...] = ("patch_embed", "cls_token", "pos_embed")
    finetune_steps: int = 25
    pos_score: str = "top1"
    pos_threshold: float | None = AUTHORS_POS_AUC_STOP

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad field."""
        _config.check_choices(
            self,
            (
                ("kind", _KINDS),
                ("penalty", _PENALTIES),
                ("penalty_on", _PENALTY_ON),
                ("class_source", ("predicted", "label")),
                ("pos_score", _SCORES),
                ("family", tuple(FAMILY_NORMALISATION)),
            ),
        )
        _config.check_positive_ints(self, ("finetune_steps",))
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0; got {self.lam}")
        if self.pos_threshold is not None and not np.isfinite(self.pos_threshold):
            raise ValueError(f"pos_threshold must be finite or None; got {self.pos_threshold}")
