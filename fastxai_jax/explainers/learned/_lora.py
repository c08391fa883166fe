"""Low-rank adapters (LoRA, Hu et al. 2021) over an arbitrary parameter tree.

A frozen kernel ``W`` seen as a matrix ``[d_in, d_out]`` becomes
``W + (α / r)·A·B`` with trainable ``A: [d_in, r]`` (random) and
``B: [r, d_out]`` (zeros, so training starts from ``W``). Attention kernels of
Flax's ``MultiHeadDotProductAttention`` are 3-D: query/key/value ``[D, h, d]``
(``d_in = D``) and out ``[h, d, D]`` (``d_in = h·d``); both are handled.

Adapters are stored in a flat dict keyed by the kernel's ``/``-joined path
(with ``/`` replaced by ``.``), so they are a plain pytree for optax and orbax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

PyTree = Any
_SEP = "."
_EXCLUDE = ("head", "embed", "patch", "pos", "cls")


def default_lora_predicate(path: tuple[str, ...], leaf: jax.Array) -> bool:
    """Adapts 2-D/3-D ``kernel`` leaves of attention and MLP blocks.

    Skips the patch embedding (4-D conv), positional/CLS embeddings and any
    classification head (paths naming ``head``/``embed``/``patch``/``pos``/``cls``).
    """
    if path[-1] != "kernel" or jnp.ndim(leaf) not in (2, 3):
        return False
    lowered = [p.lower() for p in path[:-1]]
    return not any(ex in p for p in lowered for ex in _EXCLUDE)


def _split(path: tuple[str, ...], shape: tuple[int, ...]) -> int:
    """Number of leading axes forming ``d_in`` (2 for 3-D attention ``out`` kernels)."""
    if len(shape) == 3 and "out" in path[-2].lower():
        return 2
    return 1


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for s in shape:
        size *= int(s)
    return size


def lora_init(
    key: jax.Array,
    params: PyTree,
    *,
    rank: int,
    predicate: Callable[[tuple[str, ...], jax.Array], bool] = default_lora_predicate,
) -> dict[str, dict[str, jax.Array]]:
    """Creates adapters for every kernel of ``params`` accepted by ``predicate``.

    Args:
      key: PRNG key for the ``A`` factors (``N(0, 1/d_in)``).
      params: the (frozen) parameter tree, e.g. a ViT's ``params``.
      rank: adapter rank ``r`` (positive int).
      predicate: ``(path, leaf) -> bool`` choosing the kernels to adapt.

    Returns:
      ``{path_key: {"a": [d_in, r], "b": [r, d_out]}}``.

    Raises:
      ValueError: for a non-positive ``rank`` or when no kernel matches.
    """
    if not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank must be a positive int; got {rank!r}")
    flat = traverse_util.flatten_dict(params)
    chosen = [(path, leaf) for path, leaf in flat.items() if predicate(path, leaf)]
    if not chosen:
        raise ValueError("lora_init: no kernel in params matched the predicate")
    keys = jax.random.split(key, len(chosen))
    adapters = {}
    for k, (path, leaf) in zip(keys, chosen, strict=True):
        split = _split(path, leaf.shape)
        d_in, d_out = _size(leaf.shape[:split]), _size(leaf.shape[split:])
        a = jax.random.normal(k, (d_in, rank), leaf.dtype) / jnp.sqrt(float(d_in))
        adapters[_SEP.join(path)] = {"a": a, "b": jnp.zeros((rank, d_out), leaf.dtype)}
    return adapters


def lora_merge(
    params: PyTree, adapters: dict[str, dict[str, jax.Array]], *, alpha: float, rank: int
) -> PyTree:
    """Returns ``params`` with every adapted kernel replaced by ``W + (α/r)·A·B``.

    Raises:
      ValueError: if an adapter names a kernel absent from ``params`` or of another size.
    """
    flat = dict(traverse_util.flatten_dict(params))
    scale = float(alpha) / float(rank)
    for name, ab in adapters.items():
        path = tuple(name.split(_SEP))
        if path not in flat:
            raise ValueError(f"lora adapter {name!r} has no matching kernel in params")
        kernel = flat[path]
        delta = ab["a"] @ ab["b"]
        if delta.size != kernel.size:
            raise ValueError(
                f"lora adapter {name!r} has {delta.size} entries; kernel shape {kernel.shape}"
            )
        flat[path] = kernel + scale * jnp.reshape(delta, kernel.shape)
    return traverse_util.unflatten_dict(flat)
