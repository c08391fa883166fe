"""BIG and AGI against plain per-sample references on a tiny model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers import boundary
from fastxai_jax.explainers.registry import attribute, method_cost


@pytest.fixture(scope="module")
def tiny():
    k_w, k_x = jax.random.split(jax.random.key(11))
    params = {"w": jax.random.normal(k_w, (6 * 6 * 3, 4)) * 0.5}

    def apply_fn(p, x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w"]) * 4.0

    x = jax.random.uniform(k_x, (3, 6, 6, 3))
    target = jnp.argmax(apply_fn(params, x), axis=-1).astype(jnp.int32)
    return apply_fn, params, x, target


def test_fgsm_matches_loop(tiny):
    apply_fn, params, x, target = tiny
    eps, steps, alpha = 0.02, 30, 0.001
    got, success = boundary.fgsm_attack(
        apply_fn, params, x, target, eps, num_steps=steps, step_size=alpha
    )

    def ce(z, y):
        return -jax.nn.log_softmax(apply_fn(params, z[None]))[0, y]

    for i in range(x.shape[0]):
        xi = np.asarray(x[i])
        cur = xi.copy()
        for _ in range(steps):
            g = np.asarray(jax.grad(ce)(jnp.asarray(cur), int(target[i])))
            cur = np.clip(xi + np.clip(cur + alpha * np.sign(g) - xi, -eps, eps), 0, 1)
        np.testing.assert_allclose(np.asarray(got[i]), cur, atol=1e-6)
        pred = int(jnp.argmax(apply_fn(params, jnp.asarray(cur)[None])))
        assert bool(success[i]) == (pred != int(target[i]))


def test_big_is_ig_from_first_successful_boundary(tiny):
    apply_fn, params, x, target = tiny
    epsilons = (0.002, 0.01, 0.05)
    got = attribute(
        "big", apply_fn, params, x, target, epsilons=epsilons, num_attack_steps=60, num_steps=64
    )
    # reference: pick the boundary per sample, then IG (trapezoid) from it
    attacks = [boundary.fgsm_attack(apply_fn, params, x, target, e, num_steps=60) for e in epsilons]
    chosen = []
    for i in range(x.shape[0]):
        hits = [j for j, (_, s) in enumerate(attacks) if bool(s[i])]
        chosen.append(attacks[hits[0] if hits else 0][0][i])
    chosen = jnp.stack(chosen)
    assert np.any([bool(s.any()) for _, s in attacks])
    alphas = np.linspace(0, 1, 64)
    weights = np.full(64, 1 / 63)
    weights[[0, -1]] /= 2

    def logit(z, y):
        return apply_fn(params, z[None])[0, y]

    ref = []
    for i in range(x.shape[0]):
        avg = sum(
            w * np.asarray(jax.grad(logit)(chosen[i] + a * (x[i] - chosen[i]), int(target[i])))
            for a, w in zip(alphas, weights, strict=True)
        )
        ref.append((avg * np.asarray(x[i] - chosen[i])).sum(-1))
    np.testing.assert_allclose(np.asarray(got), np.stack(ref), rtol=1e-4, atol=1e-6)
    # completeness along the path to the boundary
    diff = np.asarray(apply_fn(params, x) - apply_fn(params, chosen))[np.arange(3), target]
    np.testing.assert_allclose(np.asarray(got).reshape(3, -1).sum(-1), diff, rtol=0.02, atol=1e-4)
    assert method_cost("big") == (7 * 51 + 50, 7 * 50 + 50)


def test_agi_matches_loop(tiny, key):
    apply_fn, params, x, target = tiny
    eps, iters = 0.05, 6
    got = boundary.agi(apply_fn, params, x, target, key=key, epsilon=eps, max_iter=iters)
    draws = jax.random.randint(key, (1, 3), 0, 3)
    false = np.asarray(draws + (draws >= target[None, :]))[0]
    assert np.all(false != np.asarray(target))

    def prob(z, c):
        return jax.nn.softmax(apply_fn(params, z[None]))[0, c]

    ref = []
    for i in range(3):
        cur, total = np.asarray(x[i]), 0.0
        for _ in range(iters):
            if int(jnp.argmax(apply_fn(params, jnp.asarray(cur)[None]))) == false[i]:
                break
            g_adv = np.asarray(jax.grad(prob)(jnp.asarray(cur), int(false[i])))
            g_lab = np.asarray(jax.grad(prob)(jnp.asarray(cur), int(target[i])))
            nxt = np.clip(cur + eps * np.sign(g_adv), 0, 1)
            total = total - g_lab * (nxt - cur)
            cur = nxt
        ref.append(np.asarray(total).sum(-1))
    np.testing.assert_allclose(np.asarray(got), np.stack(ref), rtol=1e-4, atol=1e-7)
    assert method_cost("agi") == (20, 40)
    with pytest.raises(ValueError, match="key"):
        boundary.agi(apply_fn, params, x, target, key=None)
    with pytest.raises(ValueError, match="max_iter"):
        boundary.agi(apply_fn, params, x, target, key=key, max_iter=0)
    with pytest.raises(ValueError, match="epsilons"):
        boundary.big(apply_fn, params, x, target, epsilons=())


@pytest.mark.parametrize(
    "fn,kwargs,name",
    [
        ("big", dict(accumulate_gradients=1), "accumulate_gradients"),
        ("big", dict(ig_method="simpson"), "ig_method"),
        ("agi", dict(batch_coupling=True), "from_original"),
        ("agi", dict(batch_coupling=True, from_original=True, num_false_classes=2), "num_false"),
        ("agi", dict(false_class=3), "false_class"),
        ("agi", dict(batch_coupling=True, from_original=True, false_class=99), "false_class"),
        ("agi", dict(batch_coupling="on"), "batch_coupling"),
    ],
)
def test_bad_quirk_options_raise(tiny, key, fn, kwargs, name):
    apply_fn, params, x, target = tiny
    extra = {"key": key} if fn == "agi" else {}
    with pytest.raises(ValueError, match=name):
        getattr(boundary, fn)(apply_fn, params, x, target, **extra, **kwargs)
