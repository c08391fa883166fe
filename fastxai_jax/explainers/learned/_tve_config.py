"""TVE's options (Wang et al., ICML 2024; SPEC §5); re-exported by
:mod:`fastxai_jax.explainers.learned.tve`, whose docstring says which defaults
follow the authors' code and which the paper.
"""

from __future__ import annotations

import dataclasses

from fastxai_jax.explainers._masks import patch_grid
from fastxai_jax.explainers.learned import _backbone, _config


@dataclasses.dataclass(frozen=True)
class TveConfig(_config.BackboneFields):
    """TVE options.

    Attributes:
      embed_dim: ``E``, the encoder's embedding width.
      image_size: input side.
      grid: ``S``, cells per side (must divide ``image_size``).
      radius: ``r``, square half-width in cells.
      patch_size, vit_preset, hidden_size, depth, num_heads, mlp_dim: the
        backbone ViT (``None`` = preset's value).
      backbone: ``"vit"`` (generic ViT, the paper's setting) or ``"target"``
        (a copy of the encoder's own trunk up to ``feature``, its cells as
        tokens; pass ``module=``). Either way pre-training sees no classifier
        head, so transfer to new heads is unchanged.
      feature: the encoder module's ``aux["features"]`` map for ``"target"``.
      arch: ``"authors"`` (two backbones, the authors' head) or ``"shared"``.
      head_hidden: ``"shared"`` head width (the authors' head has none).
      head_layers: head depth (the authors' ``explainerhead_layernum``).
      head_init: ``"random"`` (default initialisers) or ``"local"`` (token-mixing
        kernels start at the token→cell area-overlap matrix; see
        :class:`~fastxai_jax.models.tve_head.TveHead`).
      explainer_family: normalisation of the explainer's own input.
      encoder_family: normalisation the encoder applies; masked pixels are 0 there.
      lam_pos, lam_neg: transfer weights (authors' demo: 1, 0; their
        ``generate_attr``: 1, 1).
      cell_order: ``"row"`` (paper) or ``"column"`` (authors' token layout).
      normalise: ``"map"`` (paper) or ``"row"`` (authors' per-row min-max).
      pool: average-pool the cell map over ``(2r+1)²`` before normalising.
      upsample: ``"nearest"`` or ``"bilinear"`` cells → pixels.
      cells_per_image: ``K`` distinct random cells supervised per image per
        update (``2·K`` encoder queries per image). ``1`` is the paper's
        recipe; larger ``K`` gives the per-cell predictor ``K`` times the
        supervision per image at ``K`` times the encoder cost.
    """

    embed_dim: int
    grid: int = 14
    radius: int = 1
    head_hidden: int = 128
    head_layers: int = 3
    head_init: str = "random"
    arch: str = "authors"
    encoder_family: str = "imagenet"
    lam_pos: float = 1.0
    lam_neg: float = 0.0
    upsample: str = "nearest"
    cells_per_image: int = 1
    cell_order: str = "row"
    normalise: str = "map"
    pool: bool = True

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad field."""
        _config.check_positive_ints(self, ("embed_dim", "image_size", "grid", "patch_size"))
        if not isinstance(self.radius, int) or self.radius < 0:
            raise ValueError(f"radius must be a non-negative int; got {self.radius!r}")
        _config.check_families(self, ("explainer_family", "encoder_family"))
        _config.check_choices(self, (("upsample", ("nearest", "bilinear")),))
        if not isinstance(self.cells_per_image, int) or not (
            1 <= self.cells_per_image <= self.grid**2
        ):
            raise ValueError(
                f"cells_per_image must be an int in [1, grid² = {self.grid**2}]; "
                f"got {self.cells_per_image!r}"
            )
        _config.check_choices(
            self,
            (
                ("head_init", ("random", "local")),
                ("arch", ("authors", "shared")),
                ("cell_order", ("row", "column")),
                ("normalise", ("map", "row")),
            ),
        )
        if self.head_init == "local" and self.arch != "shared":
            raise ValueError("head_init='local' needs arch='shared' (the authors' head has none)")
        if self.head_init == "local" and self.cell_order != "row":
            raise ValueError("head_init='local' needs cell_order='row' (it maps tokens row-major)")
        _config.check_positive_ints(self, ("head_layers",))
        if not isinstance(self.pool, bool):
            raise ValueError(f"pool must be a bool; got {self.pool!r}")
        _config.check_choices(self, (("backbone", _backbone.BACKBONES),))
        if self.image_size % self.grid:
            raise ValueError(f"grid {self.grid} must divide image_size {self.image_size}")
        patch_grid((self.image_size,) * 2, self.patch_size, "image_size")
