"""MFABA: more faithful and accelerated boundary-based attribution (Zhu et al., AAAI 2024).

SPEC §1. The path ``x_0 = x, x_1, …`` descends the target's score until the
prediction leaves the target class (per sample) or ``num_steps`` is reached:

* SHARP (default): ``x_{t+1} = clip(x_t − α·g_t/‖g_t‖₂, 0, 1)``, ``α = 0.1``;
* SMOOTH: ``x_{t+1} = clip(x_0 + clip(x_t − β·sign(g_t) − x_0, −ε, ε), 0, 1)``,
  ``β = 0.001``, ``ε = 0.3``;

with ``g_t = ∇ s(x_t)``, ``s(x) = softmax(f(x))[target]``, and
``A = −Σ_t (x_{t+1} − x_t) ⊙ g_t`` over the steps actually taken.

Implementation: the whole batch runs in one ``lax.while_loop`` (or, on CPU, the
same compiled step driven from the host: ``loop=``) with a per-sample
``done`` mask (a done sample's point is frozen, so it adds nothing) that stops
when every sample is done or ``num_steps`` steps were taken. ``A`` is summed on
the fly: memory does not depend on ``num_steps``. Each step is one forward and
one backward pass at ``x_{t+1}`` (``jax.value_and_grad`` with the logits as aux):
the gradient ``g_{t+1}`` and the early-stop test ``argmax f(x_{t+1}) ≠ target``
come from the same pass (the authors spend an extra forward). Per input at most
``num_steps + 1`` forward and backward passes.

NORM / COS (the authors' single-sample variants, batched here the same way)
follow a SHARP path on the raw logit and weigh trapezoid steps along it by
``t_k = ‖x_k − x_0‖`` (NORM) or ``t_k = ⟨x_k − x_0, x_T − x_0⟩ / ‖x_T − x_0‖²``
(COS), divided by ``max_k t_k``:
``A = [Σ_k (t_{k+1} − t_k)(g_k + g_{k+1})/2] / max t ⊙ (x − x_T)``.
Since ``max t`` is a scalar per sample it is applied at the end, so NORM needs
one pass. COS needs ``x_T`` before it can weigh any step: it runs the
(deterministic) path **twice** — the first pass finds ``x_T`` and each sample's
step count, the second replays exactly that many steps and accumulates — so
memory stays independent of ``num_steps`` at twice the compute.

Authors' quirks as options: ``accumulate_gradients=True`` (SHARP/SMOOTH: their
batched ``FGSMGrad`` steps along running sums of gradients; see :func:`mfaba`),
``double_softmax=True`` (their models end in
softmax), ``per_channel=True`` (their maps are per channel), and for NORM/COS
``step="authors_sign"`` (their single-sample sign step *adds*
``β·sign`` of the accumulated cross-entropy gradient, one extra backward a step).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fastxai_jax.core import ApplyFn, Cost, Params
from fastxai_jax.explainers import _common

VARIANTS = ("sharp", "smooth", "norm", "cos")
STEPS = ("sharp", "smooth", "authors_sign")


class _Config(NamedTuple):
    variant: str
    step: str
    num_steps: int
    alpha: float
    beta: float
    epsilon: float
    score: str
    double_softmax: bool
    early_stop: bool
    data_min: float
    data_max: float
    accumulate_gradients: bool = False


class _State(NamedTuple):
    t: jax.Array  # [] steps taken so far
    x: jax.Array  # [B, H, W, C] current point x_t
    grad: jax.Array  # [B, H, W, C] g_t = ∇ s(x_t)
    ce_grad: jax.Array  # [B, H, W, C] accumulated ∇CE (authors_sign step only)
    done: jax.Array  # [B] bool
    steps: jax.Array  # [B] int32 steps taken per sample
    acc: jax.Array  # [B, H, W, C] running attribution sum
    t_prev: jax.Array  # [B] path coordinate t_k (NORM/COS)
    t_max: jax.Array  # [B] running max of t_k (NORM/COS)


def _bcast(v: jax.Array, ref: jax.Array) -> jax.Array:
    """``[B]`` → ``[B, 1, 1, 1]`` (explicit, rank promotion is strict)."""
    return v.reshape((-1,) + (1,) * (ref.ndim - 1))


def _value_and_grads(apply_fn, params, x, target, cfg: _Config):
    """One forward, one backward (two for ``authors_sign``): ``(logits, g, g_ce)``."""
    if cfg.step != "authors_sign":
        logits, grad = _common.score_value_and_grad(
            apply_fn, params, x, target, cfg.score, cfg.double_softmax
        )
        return logits, grad, jnp.zeros((), x.dtype)
    logits, vjp_fn = jax.vjp(lambda xs: apply_fn(params, xs), x)

    def score_total(lg):
        lg = jax.nn.softmax(lg, axis=-1) if cfg.double_softmax else lg
        return jnp.sum(_common.class_score(lg, target, cfg.score))

    def ce_total(lg):
        return -jnp.sum(_common.class_score(lg, target, "log_probability"))

    (grad,) = vjp_fn(jax.grad(score_total)(logits))
    (ce_grad,) = vjp_fn(jax.grad(ce_total)(logits))
    return logits, grad, ce_grad


def _next_point(state: _State, x0: jax.Array, ce_grad_sum: jax.Array, cfg: _Config):
    if cfg.step == "sharp":
        norm = _common.per_sample_norm(state.grad)
        direction = jnp.where(norm > 0, state.grad / jnp.where(norm > 0, norm, 1.0), 0.0)
        new = state.x - cfg.alpha * direction
    else:
        if cfg.step == "smooth":
            moved = state.x - cfg.beta * jnp.sign(state.grad)
        else:  # authors_sign: adds the sign of the accumulated CE gradient
            moved = state.x + cfg.beta * jnp.sign(ce_grad_sum)
        new = x0 + jnp.clip(moved - x0, -cfg.epsilon, cfg.epsilon)
    return jnp.clip(new, cfg.data_min, cfg.data_max)


def _path_coordinate(x, x0, direction, cfg: _Config):
    """``t_k`` per sample: NORM ``‖x − x_0‖``; COS projection on ``x_T − x_0``."""
    diff = (x - x0).reshape(x.shape[0], -1)
    if cfg.variant == "norm":
        return jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1))
    d = direction.reshape(x.shape[0], -1)
    denom = jnp.sum(jnp.square(d), axis=-1)
    return jnp.sum(diff * d, axis=-1) / jnp.where(denom > 0, denom, 1.0)


def _init_state(apply_fn, params, x0, target, cfg: _Config, max_steps):
    """Path state at ``x_0`` (one forward and backward)."""
    batch = x0.shape[0]
    logits0, grad0, ce0 = _value_and_grads(apply_fn, params, x0, target, cfg)
    del logits0  # the authors take the first step regardless of x_0's prediction
    zeros_b = jnp.zeros((batch,), x0.dtype)
    return _State(
        t=jnp.zeros((), jnp.int32),
        x=x0,
        grad=grad0,
        ce_grad=ce0 if cfg.step == "authors_sign" else jnp.zeros((), x0.dtype),
        done=jnp.zeros((batch,), bool) if max_steps is None else max_steps <= 0,
        steps=jnp.zeros((batch,), jnp.int32),
        acc=jnp.zeros_like(x0),
        t_prev=zeros_b,
        t_max=zeros_b,
    )


def _keep_going(state: _State, cfg: _Config) -> jax.Array:
    return (state.t < cfg.num_steps) & ~jnp.all(state.done)


def _step(state: _State, apply_fn, params, x0, target, cfg: _Config, accumulate, max_steps, d):
    """One path step for the whole batch (done samples frozen)."""
    active = ~state.done
    x_new = jnp.where(_bcast(active, x0), _next_point(state, x0, state.ce_grad, cfg), state.x)
    logits, grad_new, ce_new = _value_and_grads(apply_fn, params, x_new, target, cfg)
    acc, t_prev, t_max = state.acc, state.t_prev, state.t_max
    if accumulate and cfg.variant in ("sharp", "smooth"):
        acc = acc - (x_new - state.x) * state.grad
    elif accumulate:
        t_new = _path_coordinate(x_new, x0, d, cfg)
        dt = jnp.where(active, t_new - t_prev, 0.0)
        acc = acc + _bcast(dt, x0) * (state.grad + grad_new) / 2.0
        t_prev = jnp.where(active, t_new, t_prev)
        t_max = jnp.where(active, jnp.maximum(t_max, t_new), t_max)
    steps = state.steps + active.astype(jnp.int32)
    if max_steps is not None:
        done = steps >= max_steps
    elif cfg.early_stop:
        done = state.done | (jnp.argmax(logits, axis=-1) != target)
    else:
        done = state.done
    if cfg.accumulate_gradients:
        # The authors' dt.grad keeps summing until the batch tensor is rebuilt,
        # which happens (for every remaining sample) whenever any sample stops.
        restart = jnp.any(done & ~state.done)
        grad_new = jnp.where(restart, grad_new, state.grad + grad_new)
    ce_grad = state.ce_grad
    if cfg.step == "authors_sign":
        ce_grad = jnp.where(_bcast(active, x0), ce_grad + ce_new, ce_grad)
    return _State(state.t + 1, x_new, grad_new, ce_grad, done, steps, acc, t_prev, t_max)


def _run_path(apply_fn, params, x0, target, cfg: _Config, *, accumulate, max_steps=None, d=None):
    """Runs the batched path in one ``lax.while_loop``; returns the final :class:`_State`.

    Args:
      accumulate: whether to sum the attribution (``False`` for COS's first pass).
      max_steps: ``[B]`` per-sample step budget (COS's replay), else ``None``.
      d: ``x_T − x_0`` for COS's path coordinate.
    """
    init = _init_state(apply_fn, params, x0, target, cfg, max_steps)
    body = lambda s: _step(s, apply_fn, params, x0, target, cfg, accumulate, max_steps, d)
    return jax.lax.while_loop(lambda s: _keep_going(s, cfg), body, init)


_init_jit = jax.jit(_init_state, static_argnames=("apply_fn", "cfg"))
_step_jit = jax.jit(_step, static_argnames=("apply_fn", "cfg", "accumulate"))


def _run_path_host(
    apply_fn, params, x0, target, cfg: _Config, *, accumulate, max_steps=None, d=None
):
    """:func:`_run_path` with the loop on the host: the same compiled step, called
    once per step until every sample is done (same state, same memory)."""
    state = _init_jit(apply_fn, params, x0, target, cfg, max_steps)
    while bool(_keep_going(state, cfg)):
        state = _step_jit(state, apply_fn, params, x0, target, cfg, accumulate, max_steps, d)
    return state


def _finish(final: _State, x, cfg: _Config, per_channel: bool, return_steps: bool):
    if cfg.variant in ("sharp", "smooth"):
        attribution = final.acc
    else:
        scale = jnp.where(final.t_max > 0, 1.0 / jnp.where(final.t_max > 0, final.t_max, 1.0), 0.0)
        attribution = final.acc * _bcast(scale, x) * (x - final.x)
    attribution = _common.reduce_channels(attribution, per_channel)
    return (attribution, final.steps) if return_steps else attribution


def _paths(run, apply_fn, params, x, target, cfg: _Config) -> _State:
    """The final path state (COS: a first pass finds ``x_T``, a second accumulates)."""
    if cfg.variant != "cos":
        return run(apply_fn, params, x, target, cfg, accumulate=True)
    first = run(apply_fn, params, x, target, cfg, accumulate=False)
    return run(
        apply_fn, params, x, target, cfg, accumulate=True, max_steps=first.steps, d=first.x - x
    )


@functools.partial(jax.jit, static_argnames=("apply_fn", "cfg", "per_channel", "return_steps"))
def _mfaba(apply_fn, params, x, target, cfg: _Config, per_channel: bool, return_steps: bool):
    final = _paths(_run_path, apply_fn, params, x, target, cfg)
    return _finish(final, x, cfg, per_channel, return_steps)


_finish_jit = jax.jit(_finish, static_argnames=("cfg", "per_channel", "return_steps"))


def _mfaba_host(apply_fn, params, x, target, cfg: _Config, per_channel: bool, return_steps: bool):
    final = _paths(_run_path_host, apply_fn, params, x, target, cfg)
    return _finish_jit(final, x, cfg, per_channel, return_steps)


def mfaba(
    apply_fn: ApplyFn,
    params: Params,
    x: jax.Array,
    target: jax.Array,
    *,
    key: Any = None,
    variant: str = "sharp",
    num_steps: int = 50,
    alpha: float = 0.1,
    beta: float = 0.001,
    epsilon: float = 0.3,
    score: str | None = None,
    step: str | None = None,
    double_softmax: bool = False,
    early_stop: bool = True,
    accumulate_gradients: bool = False,
    data_range: tuple[float, float] = (0.0, 1.0),
    per_channel: bool = False,
    return_steps: bool = False,
    loop: str = "auto",
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """MFABA attribution (SHARP, SMOOTH, NORM or COS), batched and compiled.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits [B, K]``.
      params: target parameters.
      x: ``[B, H, W, C]`` inputs in ``data_range``.
      target: ``[B]`` int classes (normally ``ŷ``); a sample stops once
        ``argmax f(x_{t+1}) ≠ target``.
      key: unused (deterministic).
      variant: ``"sharp"`` (default), ``"smooth"``, ``"norm"`` or ``"cos"``.
      num_steps: maximum path steps ``T`` (authors: 50).
      alpha: SHARP step length in input units (authors: 0.001 × 100).
      beta: sign-step length (SMOOTH and ``step="smooth"/"authors_sign"``).
      epsilon: L∞ radius of the sign steps around ``x`` (authors: 0.3·255/255).
      score: differentiated score: default ``"probability"`` for SHARP/SMOOTH and
        ``"logit"`` for NORM/COS (as the authors); ``"log_probability"`` too.
      step: path rule for NORM/COS: ``"sharp"`` (default), ``"smooth"`` or the
        authors' ``"authors_sign"`` quirk; SHARP/SMOOTH fix their own.
      double_softmax: softmax the logits before ``score`` (authors' quirk).
      early_stop: stop each sample once its prediction leaves ``target``.
      accumulate_gradients: SHARP/SMOOTH only. ``False`` (default, the paper's
        method): step along ``g_t = ∇s(x_t)``. ``True``: the authors' batched
        ``FGSMGrad`` quirk (it never clears ``dt.grad``): step along, and weigh
        the attribution by, the running sum ``Σ_{s≤t} ∇s(x_s)``, restarted for
        the whole remaining batch whenever any sample stops. Its maps then depend
        on the batch's composition; with the same batch they equal the authors'
        ``mfaba_sharp``/``mfaba_smooth`` (``tests/parity``). Their NORM/COS use
        ``FGSMGradSingle``, which does not accumulate, so ``True`` with those
        variants raises.
      data_range: ``(min, max)`` the path is clipped to.
      per_channel: return ``[B, H, W, C]`` (authors) instead of the channel sum.
      return_steps: also return the ``[B]`` int32 number of steps each sample took.
      loop: ``"while"`` (one compiled ``lax.while_loop``), ``"host"`` (the same
        compiled step called from Python until every sample is done; not under
        ``jit``/``vmap``) or ``"auto"``: ``"host"`` on the CPU backend outside a
        trace, else ``"while"``. XLA:CPU runs convolutions inside loop bodies
        ~1.5× slower than the same step on its own (jax-ml/jax#12868); both give
        the same result and neither stores the path.

    Returns:
      ``[B, H, W]`` signed attribution (or ``[B, H, W, C]``); with
      ``return_steps`` a pair ``(attribution, steps)``.
    """
    del key
    _common.validate(apply_fn, params, x, target, num_steps=num_steps)
    target = jnp.asarray(target, jnp.int32)
    _common.check_choice("variant", variant, VARIANTS)
    if variant in ("sharp", "smooth"):
        if step not in (None, variant):
            raise ValueError(f"step is fixed by variant {variant!r}; got step={step!r}")
        step = variant
    step = "sharp" if step is None else step
    _common.check_choice("step", step, STEPS)
    score = score or ("probability" if variant in ("sharp", "smooth") else "logit")
    _common.check_choice("score", score, _common.SCORES)
    for name, value in (("alpha", alpha), ("beta", beta), ("epsilon", epsilon)):
        if not float(value) > 0:
            raise ValueError(f"{name} must be > 0; got {value!r}")
    if len(data_range) != 2 or not float(data_range[0]) < float(data_range[1]):
        raise ValueError(f"data_range must be (min, max) with min < max; got {data_range!r}")
    if not isinstance(accumulate_gradients, bool):
        raise ValueError(f"accumulate_gradients must be a bool; got {accumulate_gradients!r}")
    if accumulate_gradients and variant not in ("sharp", "smooth"):
        raise ValueError(
            "accumulate_gradients=True is the authors' batched FGSMGrad quirk (SHARP/SMOOTH); "
            f"their {variant.upper()} uses FGSMGradSingle, which does not accumulate"
        )
    cfg = _Config(
        variant,
        step,
        int(num_steps),
        float(alpha),
        float(beta),
        float(epsilon),
        score,
        bool(double_softmax),
        bool(early_stop),
        float(data_range[0]),
        float(data_range[1]),
        accumulate_gradients,
    )
    loop = _common.resolve_loop(loop, params, x, target, compiled="while")
    run = _mfaba_host if loop == "host" else _mfaba
    return run(apply_fn, params, x, target, cfg, bool(per_channel), bool(return_steps))


mfaba_sharp = functools.partial(mfaba, variant="sharp")
mfaba_smooth = functools.partial(mfaba, variant="smooth")
mfaba_norm = functools.partial(mfaba, variant="norm")
mfaba_cos = functools.partial(mfaba, variant="cos")


def mfaba_cost(variant: str = "sharp", num_steps: int = 50, step: str | None = None, **_) -> Cost:
    """Upper bound on passes per input (early stop spends fewer)."""
    passes = num_steps + 1
    backward = 2 * passes if step == "authors_sign" else passes
    factor = 2 if variant == "cos" else 1
    return Cost(factor * passes, factor * backward)
