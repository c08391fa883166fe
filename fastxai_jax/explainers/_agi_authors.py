"""The MFABA authors' AGI loop (``saliency/core/agi.py: pgd_step``), batch coupling included.

Behind :func:`fastxai_jax.explainers.boundary.agi` with ``batch_coupling=True``,
which validates the options; see its docstring for the quirks reproduced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fastxai_jax.explainers import _common


def _bcast(v: jax.Array, ref: jax.Array) -> jax.Array:
    return v.reshape((-1,) + (1,) * (ref.ndim - 1))


def _authors_removal(in_list: jax.Array, reached: jax.Array) -> jax.Array:
    """The authors' ``for j in leave_index: ... leave_index.remove(j)`` pass.

    Removing from a Python list while iterating over it skips the element after
    each removed one; that element is checked again only on the next iteration.
    """

    def visit(prev_removed, item):
        listed, hit = item
        removed = listed & ~prev_removed & hit
        return jnp.where(listed, removed, prev_removed), listed & ~removed

    return jax.lax.scan(visit, jnp.zeros((), bool), (in_list, reached))[1]


@functools.partial(jax.jit, static_argnames=("apply_fn", "max_iter", "per_channel"))
def agi_coupled(apply_fn, params, x, target, false_class, epsilon, max_iter, per_channel):
    """The MFABA authors' ``agi``/``pgd_step`` loop, batch coupling included."""
    num_classes = jax.eval_shape(apply_fn, params, x).shape[-1]
    bumped = jnp.where(false_class < num_classes - 1, false_class + 1, false_class - 1)
    targeted = jnp.where(target == false_class, bumped, false_class).astype(jnp.int32)

    def batch_prob_sum(classes):
        # output[:, classes].sum(): every sample's probability of every sample's class
        return lambda lg: jnp.sum(jax.nn.softmax(lg, axis=-1)[:, classes])

    def cond(state):
        i, _, _, _, stopped = state
        return (i < max_iter) & ~stopped

    def body(state):
        i, xk, total, in_list, _ = state
        logits, vjp_fn = jax.vjp(lambda xs: apply_fn(params, xs), xk)
        in_list = _authors_removal(in_list, jnp.argmax(logits, axis=-1) == targeted)
        stopped = ~jnp.any(in_list)
        (grad_adv,) = vjp_fn(jax.grad(batch_prob_sum(targeted))(logits))
        (grad_lab,) = vjp_fn(jax.grad(batch_prob_sum(target))(logits))
        x_next = jnp.clip(x + epsilon * jnp.sign(grad_adv), 0.0, 1.0)
        delta = -grad_lab * (x_next - x)
        add = (in_list | (i == 0)) & ~stopped  # the first step counts for every sample
        total = total + jnp.where(_bcast(add, x), delta, 0.0)
        return i + 1, jnp.where(stopped, xk, x_next), total, in_list, stopped

    batch = x.shape[0]
    init = (jnp.zeros((), jnp.int32), x, jnp.zeros_like(x), jnp.ones((batch,), bool), False)
    total = jax.lax.while_loop(cond, body, init)[2]
    return _common.reduce_channels(total, per_channel)
