"""TVE — transferable vision explainer (Wang et al., ICML 2024; SPEC §5).

Meta-attribution pre-training: two branches (pos, neg), each a backbone (the
project's ViT, or a copy of the encoder's trunk) and a mixing head, predict,
for every cell of an ``S×S`` grid, the frozen target *encoder*'s embedding of

* ``pos``: the image keeping only the square of radius ``r`` around the cell,
* ``neg``: the image with that square removed,

(masked = 0 in the encoder's normalised space). Each update samples one random
cell per image (``cells_per_image`` distinct cells as an option) and regresses
both branches' predictions at those cells onto the encoder's embeddings (MSE).

Transfer, with no task data: a downstream classifier built on the same encoder
brings its own linear head ``(W, b)``; each predicted cell embedding is mapped
to logits, the explained class's logit taken, and the map is
``λ_pos·pos − λ_neg·neg``, average-pooled with a ``(2r+1)`` window, min-max
normalised and upsampled (:func:`explain_with_head`). One pre-trained TVE
explains *any* linear head on the encoder.

Defaults follow the authors' code (guanchuwang/TVE, checked in
``tests/parity/test_tve_parity.py``) where it is their design, and the paper
where their code has a quirk that changes the map:

* ``arch="authors"``: one backbone *per branch* and the authors' head
  (:class:`~fastxai_jax.models.tve_head.TveAuthorsHead`; backbone tokens with
  CLS first, ``S²+1`` output tokens, the extra one last and dropped).
  ``arch="shared"`` is this library's earlier single shared backbone with the
  GELU/LayerNorm :class:`~fastxai_jax.models.tve_head.TveHead`, kept because the
  README's TVE benchmark rows (``head_init="local"``) were measured with it.
* ``cell_order="row"``: head token ``k`` is cell (row ``k // S``, col ``k % S``),
  the paper's layout. The authors' loss compares their ``cx`` with the row index
  but indexes token ``cy·S + cx``, so their token ``k`` is cell (row ``k % S``,
  col ``k // S``): ``cell_order="column"`` (needed for their checkpoints). Maps
  come back in image layout either way.
* ``normalise="map"``: min-max over the whole map (the paper). The authors'
  ``min(-1).min(-1)`` reduces over a size-1 axis the second time, i.e. each
  row of their token grid (with their column order: each image column) is
  stretched to ``[0, 1]`` on its own: ``normalise="row"``.
* ``lam_neg=0``: the authors' demo (``heatmap_demo.py``) and SPEC; their
  ``generate_attr`` defaults to ``lambda_neg=1``. ``pool=True``: their
  ``heatmap_pooling`` (the demo's map); ``False`` gives their ``heatmap``.

The options live in :mod:`._tve_config`, the network in :mod:`._tve_net` and the
transfer to a head in :mod:`._tve_transfer`; their public names are importable
from here.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fastxai_jax.core import ApplyFn, LearnedExplainer, Params, check_images, check_target
from fastxai_jax.explainers._masks import (
    apply_mask,
    fill_value_01,
    upsample_nearest,
)
from fastxai_jax.explainers.learned import _backbone, _config
from fastxai_jax.explainers.learned._tve_config import TveConfig
from fastxai_jax.explainers.learned._tve_net import (
    build_backbone,
    init_params,
    predict_embeddings,
)
from fastxai_jax.explainers.learned._tve_transfer import (
    EncoderFn,
    embeddings_to_map,
    encoder_from_module,
    linear_head,
    transfer_map,
)
from fastxai_jax.explainers.learned._update import adamw_warmup_cosine


def cell_rows_cols(cells: jax.Array, grid: int, cell_order: str = "row"):
    """``(row, col)`` of token indices ``cells`` on the ``S×S`` grid: row-major, or
    the authors' column-major (``idx = cy·S + cx`` with ``cx`` the row)."""
    if cell_order == "column":
        return cells % grid, cells // grid
    return cells // grid, cells % grid


def square_masks(
    cells: jax.Array, grid: int, radius: int, image_size: int, cell_order: str = "row"
) -> jax.Array:
    """Pixel masks ``[B, H, W]``: 1 inside the ``(2r+1)²`` cell square around each
    cell, clipped at the border (nearest upsampling, as the authors).

    Args:
      cells: ``[B]`` int token indices in ``[0, S²)`` (``cell_order``).
    """
    rows = jnp.arange(grid)
    cy, cx = cell_rows_cols(cells, grid, cell_order)
    inside_y = jnp.abs(rows[None, :] - cy[:, None]) <= radius  # [B, S]
    inside_x = jnp.abs(rows[None, :] - cx[:, None]) <= radius
    square = (inside_y[:, :, None] & inside_x[:, None, :]).astype(jnp.float32)
    return upsample_nearest(square, (image_size, image_size))


def cell_embeddings(
    config: TveConfig,
    encoder_fn: EncoderFn,
    encoder_params: Params,
    x: jax.Array,
    cells: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """What TVE learns to predict: the frozen encoder's embeddings ``(pos, neg)``
    ``[B, K, E]`` of each image with only / all but the square around each cell.

    Args:
      x: ``[B, H, W, C]`` images in ``[0, 1]``.
      cells: ``[B, K]`` int token indices in ``[0, S²)`` (``config.cell_order``).
    """
    batch, k = cells.shape
    fill01 = fill_value_01(0.0, config.encoder_family)
    squares = square_masks(
        cells.reshape(-1), config.grid, config.radius, config.image_size, config.cell_order
    )
    x_rep = jnp.repeat(x, k, axis=0)  # [B·K, H, W, C], image-major like cells.reshape(-1)
    both = jnp.concatenate(
        [apply_mask(x_rep, squares, fill01), apply_mask(x_rep, 1.0 - squares, fill01)], axis=0
    )
    emb = jax.lax.stop_gradient(encoder_fn(encoder_params, both))
    pos, neg = jnp.split(emb, 2, axis=0)
    return jnp.reshape(pos, (batch, k, -1)), jnp.reshape(neg, (batch, k, -1))


def oracle_embeddings(
    config: TveConfig, encoder_fn: EncoderFn, encoder_params: Params, x: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:func:`cell_embeddings` at every cell, ``[B, S², E]`` each: a perfectly
    pre-trained TVE's output. :func:`transfer_map` on these separates what the
    pre-training missed from what the transfer rule itself cannot do. Costs
    ``2·S²`` encoder calls per image (one image at a time).
    """
    check_images(x, "x")
    cells = jnp.arange(config.grid**2)[None]

    def one(image):
        pos, neg = cell_embeddings(config, encoder_fn, encoder_params, image[None], cells)
        return pos[0], neg[0]

    return jax.lax.map(one, x)


def tve_loss(
    pred_pos: jax.Array, pred_neg: jax.Array, target_pos: jax.Array, target_neg: jax.Array
) -> jax.Array:
    """``mean((pos − t_pos)²) + mean((neg − t_neg)²)`` on the sampled cells ``[..., E]``."""
    return jnp.mean((pred_pos - target_pos) ** 2) + jnp.mean((pred_neg - target_neg) ** 2)


# TVE's optimizer: AdamW at 1e-3, linear warm-up then cosine decay.
default_optimizer = functools.partial(adamw_warmup_cosine, learning_rate=1e-3)


def make(
    config: TveConfig,
    encoder_fn: EncoderFn,
    encoder_params: Params,
    *,
    module: nn.Module | None = None,
    head: Params | None = None,
) -> LearnedExplainer:
    """TVE meta-attribution pre-training against a frozen encoder.

    Args:
      config: :class:`TveConfig`.
      encoder_fn: ``encoder_fn(encoder_params, x01) -> [B, E]`` (e.g.
        :func:`encoder_from_module`), never trained.
      encoder_params: its parameters (closed over).
      module: the encoder's Flax module, for ``backbone="target"`` (the
        explainer's backbone starts from a copy of ``encoder_params``).
      head: ``{"kernel": [E, K], "bias": [K]}`` of the classifier to explain
        (:func:`linear_head`); needed by ``explain`` only. Pre-training never
        sees it, so one TVE transfers to any head (:func:`explain_with_head`).

    Returns:
      ``LearnedExplainer``: ``loss_fn(params, batch, key)`` (``2·cells_per_image``
      encoder queries per image); ``explain(params, x, target=None) -> [B, H, W]``
      and ``explain_grid -> [B, S, S]`` through ``head``. ``target`` (an int or
      ``[B]`` ints) is the class explained; ``None`` explains the classifier's
      own prediction ``argmax(head(encoder(x)))``, which runs the encoder once:
      ``target_queries_per_explain = 1``. Raw per-cell embeddings:
      :func:`predict_embeddings`.
    """
    config.validate()
    _backbone.check_backbone(config.backbone, module)
    if head is not None:
        kernel, bias = head["kernel"], head["bias"]
        if kernel.shape[0] != config.embed_dim or bias.shape != kernel.shape[1:]:
            raise ValueError(
                f"head must hold kernel [{config.embed_dim}, K] and bias [K]; got "
                f"{kernel.shape} and {bias.shape}"
            )

    def init_params_fn(key: jax.Array, sample_batch: Any) -> Params:
        x = sample_batch["images"] if isinstance(sample_batch, dict) else sample_batch
        check_images(x, "sample_batch")
        emb = jax.eval_shape(encoder_fn, encoder_params, x[:1])
        if emb.shape != (1, config.embed_dim):
            raise ValueError(f"encoder_fn must return [B, {config.embed_dim}]; got {emb.shape}")
        return init_params(config, key, module=module, variables=encoder_params)

    def sample_cells(key: jax.Array, batch: int) -> jax.Array:
        if config.cells_per_image == 1:
            return jax.random.randint(key, (batch, 1), 0, config.grid**2)
        scores = jax.random.uniform(key, (batch, config.grid**2))
        return jnp.argsort(scores, axis=-1)[:, : config.cells_per_image].astype(jnp.int32)

    def loss_fn(params: Params, batch: Any, key: jax.Array):
        x = batch["images"] if isinstance(batch, dict) else batch
        cells = sample_cells(key, x.shape[0])  # [B, K] distinct cell indices per image
        target_pos, target_neg = cell_embeddings(config, encoder_fn, encoder_params, x, cells)
        pred_pos, pred_neg = predict_embeddings(config, params, x, module)
        index = jnp.arange(x.shape[0])[:, None]
        loss = tve_loss(pred_pos[index, cells], pred_neg[index, cells], target_pos, target_neg)
        return loss, {}

    @jax.jit
    def predicted(x):
        logits = encoder_fn(encoder_params, x) @ head["kernel"] + head["bias"][None, :]
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def _target(x: Any, target: Any) -> jax.Array:
        check_images(x, "x")
        if head is None:
            raise ValueError(
                "head: this TVE was made without a classifier head; pass head= to make "
                "(or use explain_with_head / predict_embeddings)"
            )
        if target is None:
            return predicted(x)
        return _config.given_target(target, x.shape[0], head["kernel"].shape[1])

    def explain(params: Params, x: Any, target: Any = None) -> jax.Array:
        return _explain_jit(config, params, x, head, _target(x, target), False, module)

    def explain_grid(params: Params, x: Any, target: Any = None) -> jax.Array:
        return _explain_jit(config, params, x, head, _target(x, target), True, module)

    frozen = None
    if config.backbone == "target":
        frozen = _backbone.frozen_non_params
    return LearnedExplainer(
        config=config,
        init_params=init_params_fn,
        loss_fn=loss_fn,
        explain=explain,
        num_classes=None if head is None else int(head["kernel"].shape[1]),
        target_queries_per_explain=1,
        explain_grid=explain_grid,
        frozen=frozen,
    )


def make_for_classifier(
    config: TveConfig,
    apply_fn: ApplyFn | None,
    target_params: Params,
    *,
    module: nn.Module,
) -> LearnedExplainer:
    """:func:`make` for a Flax classifier ``module`` whose final Dense ``"head"``
    sits on ``aux["pre_logits"]``: the encoder is the module up to its pre-logits
    (:func:`encoder_from_module`, ``config.encoder_family``) and ``head`` its
    linear head. ``apply_fn`` is not needed (the logits are ``head(encoder(x))``);
    it is accepted so that every learned method's ``make`` has one signature.
    """
    del apply_fn
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be the classifier's Flax module; got {module!r}")
    encoder_fn = encoder_from_module(module, config.encoder_family)
    trunk = module if config.backbone == "target" else None
    return make(config, encoder_fn, target_params, module=trunk, head=linear_head(target_params))


def explain_with_head(
    config: TveConfig,
    params: Params,
    x: jax.Array,
    head: Params,
    target: jax.Array | None = None,
    *,
    return_grid: bool = False,
    module: nn.Module | None = None,
) -> jax.Array:
    """Transfers a pre-trained TVE to a classifier's linear head (no task training).

    Args:
      config: the pre-training :class:`TveConfig`.
      params: pre-trained TVE parameters.
      x: ``[B, H, W, C]`` images in ``[0, 1]``.
      head: ``{"kernel": [E, K], "bias": [K]}`` of the downstream classifier.
      target: ``[B]`` classes to explain; ``None`` = the class with the largest
        mean pos-branch cell logit (pass the classifier's prediction when known).
      return_grid: return the ``[B, S, S]`` cell map instead of pixels.
      module: the encoder's Flax module, for ``backbone="target"``.

    Returns:
      ``[B, H, W]`` maps in ``[0, 1]``.
    """
    check_images(x, "x")
    kernel, bias = head["kernel"], head["bias"]
    if kernel.shape[0] != config.embed_dim or bias.shape != kernel.shape[1:]:
        raise ValueError(
            f"head must hold kernel [{config.embed_dim}, K] and bias [K]; got "
            f"{kernel.shape} and {bias.shape}"
        )
    if target is not None:
        check_target(target, x.shape[0], kernel.shape[1])
    _backbone.check_backbone(config.backbone, module)
    return _explain_jit(config, params, x, head, target, return_grid, module)


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _explain_jit(config, params, x, head, target, return_grid, module=None):
    pos, neg = predict_embeddings(config, params, x, module)
    if return_grid:
        return transfer_map(config, pos, neg, head, target)
    return embeddings_to_map(config, pos, neg, head, target, x.shape[1:3])


__all__ = [
    "EncoderFn",
    "TveConfig",
    "build_backbone",
    "cell_embeddings",
    "default_optimizer",
    "embeddings_to_map",
    "encoder_from_module",
    "explain_with_head",
    "init_params",
    "linear_head",
    "make",
    "make_for_classifier",
    "oracle_embeddings",
    "predict_embeddings",
    "square_masks",
    "transfer_map",
    "tve_loss",
]
