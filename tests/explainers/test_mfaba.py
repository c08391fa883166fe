"""MFABA (SPEC §1): parity with a plain per-sample reference, memory, tracing, errors."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jit_checks import assert_jit_matches_eager

from fastxai_jax.explainers import mfaba as mfaba_lib
from fastxai_jax.explainers.registry import attribute, method_cost


class TinyCNN(nn.Module):
    num_classes: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Conv(6, (3, 3), name="conv0")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.tanh(nn.Conv(8, (3, 3), name="conv1")(x))
        return nn.Dense(self.num_classes, name="head")(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def tiny():
    module = TinyCNN()
    x = jax.random.uniform(jax.random.key(1), (6, 16, 16, 3))
    params = module.init(jax.random.key(0), x)
    # Scale the head so that paths cross a boundary after a few steps.
    params = jax.tree.map(lambda p: p * 1.5, params)

    def apply_fn(p, xs):
        return module.apply(p, xs)

    target = jnp.argmax(apply_fn(params, x), axis=-1).astype(jnp.int32)
    return apply_fn, params, x, target


def _reference_fns(apply_fn, params):
    def prob(z, y):
        return jax.nn.softmax(apply_fn(params, z[None]), axis=-1)[0, y]

    grad_fn = jax.jit(jax.grad(prob), static_argnums=1)
    predict = jax.jit(lambda z: jnp.argmax(apply_fn(params, z[None]), axis=-1)[0])
    return grad_fn, predict


def reference_mfaba(
    apply_fn, params, x, y, variant, num_steps, alpha=0.1, beta=0.001, eps=0.3, fns=None
):
    """SPEC §1 for one input, with a Python loop that stores the whole path."""
    grad_fn, predict = fns or _reference_fns(apply_fn, params)
    grad_fn = functools.partial(grad_fn, y=y)
    x0 = np.asarray(x)
    path, grads = [x0], []
    for _ in range(num_steps):
        g = np.asarray(grad_fn(jnp.asarray(path[-1])))
        grads.append(g)
        if variant == "sharp":
            nxt = np.clip(path[-1] - alpha * g / np.linalg.norm(g), 0, 1)
        else:
            nxt = np.clip(x0 + np.clip(path[-1] - beta * np.sign(g) - x0, -eps, eps), 0, 1)
        path.append(nxt.astype(x0.dtype))
        if int(predict(jnp.asarray(nxt))) != y:
            break
    grads.append(np.asarray(grad_fn(jnp.asarray(path[-1]))))  # taken at the end, unused
    steps = len(path) - 1
    attribution = -sum((path[t + 1] - path[t]) * grads[t] for t in range(steps))
    return attribution, steps


def _batched_and_reference(apply_fn, params, x, target, variant, num_steps):
    """The batched per-channel map and step counts, and :func:`reference_mfaba`'s
    per sample: ``(got, steps, ref [B, H, W, C], ref_steps [B])``."""
    got, steps = mfaba_lib.mfaba(
        apply_fn,
        params,
        x,
        target,
        variant=variant,
        num_steps=num_steps,
        per_channel=True,
        return_steps=True,
    )
    fns = _reference_fns(apply_fn, params)
    refs = [
        reference_mfaba(apply_fn, params, x[i], int(target[i]), variant, num_steps, fns=fns)
        for i in range(x.shape[0])
    ]
    return got, steps, np.stack([a for a, _ in refs]), np.array([s for _, s in refs])


@pytest.mark.parametrize("variant,num_steps", [("sharp", 30), ("smooth", 40)])
def test_matches_per_sample_reference(tiny, variant, num_steps):
    apply_fn, params, x, target = tiny
    got, steps, ref, ref_steps = _batched_and_reference(
        apply_fn, params, x, target, variant, num_steps
    )
    np.testing.assert_array_equal(np.asarray(steps), ref_steps)
    if variant == "sharp":
        # samples stop early, at different steps
        assert ref_steps.min() < num_steps and len(set(ref_steps.tolist())) >= 3, ref_steps
    scale = np.abs(ref).max()
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5 * scale)
    summed = mfaba_lib.mfaba(apply_fn, params, x, target, variant=variant, num_steps=num_steps)
    np.testing.assert_allclose(np.asarray(summed), ref.sum(-1), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize(
    "variant,num_steps",
    [("sharp", 3), pytest.param("smooth", 2, marks=pytest.mark.slow)],
)
def test_resnet18_fixture_matches_reference(fixtures_dir, variant, num_steps):
    """Float64, because in float32 the batched and single-image ResNet gradients
    differ by ~1e-6 and a ReLU/max-pool kink crossed by the path then moves a few
    pixels' values by more than rtol 1e-4 (the sums still agree to ~1e-5)."""
    from fastxai_jax.models import load_pretrained, make_apply_fn

    path = fixtures_dir / "torchvision_resnet18.safetensors"
    module, variables = load_pretrained("resnet18", path)
    apply_fn = make_apply_fn(module, "imagenet")
    with jax.enable_x64(True):
        variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
        x = jax.random.uniform(jax.random.key(4), (2, 224, 224, 3), jnp.float64)
        target = jnp.argmax(apply_fn(variables, x), axis=-1).astype(jnp.int32)
        got, steps, ref, ref_steps = _batched_and_reference(
            apply_fn, variables, x, target, variant, num_steps
        )
    np.testing.assert_array_equal(np.asarray(steps), ref_steps)
    if variant == "sharp":
        assert sorted(ref_steps.tolist()) == [1, 3], ref_steps  # one sample stops after one step
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def reference_norm_cos(apply_fn, params, x, y, variant, num_steps, alpha=0.1):
    """SPEC §1 NORM/COS for one input: logit-driven SHARP path, stored."""

    def logit(z):
        return apply_fn(params, z[None])[0, y]

    grad_fn = jax.jit(jax.grad(logit))
    predict = jax.jit(lambda z: jnp.argmax(apply_fn(params, z[None]), axis=-1)[0])
    x0 = np.asarray(x, np.float32)
    path, grads = [x0], []
    for _ in range(num_steps):
        g = np.asarray(grad_fn(jnp.asarray(path[-1])))
        grads.append(g)
        path.append(np.clip(path[-1] - alpha * g / np.linalg.norm(g), 0, 1).astype(np.float32))
        if int(predict(jnp.asarray(path[-1]))) != y:
            break
    grads.append(np.asarray(grad_fn(jnp.asarray(path[-1]))))
    end = path[-1]
    if variant == "norm":
        ts = np.array([np.linalg.norm(p - x0) for p in path])
    else:
        d = end - x0
        ts = np.array([np.sum((p - x0) * d) / np.sum(d * d) for p in path])
    ts = ts / ts.max()
    total = sum((ts[k + 1] - ts[k]) * (grads[k] + grads[k + 1]) / 2 for k in range(len(path) - 1))
    return total * (x0 - end)


@pytest.mark.parametrize("variant", ["norm", "cos"])
def test_norm_cos_match_reference(tiny, variant):
    apply_fn, params, x, target = tiny
    x, target = x[:3], target[:3]
    got = attribute(f"mfaba_{variant}", apply_fn, params, x, target, num_steps=25, per_channel=True)
    ref = np.stack(
        [reference_norm_cos(apply_fn, params, x[i], int(target[i]), variant, 25) for i in range(3)]
    )
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_memory_flat_in_steps(tiny):
    apply_fn, params, x, target = tiny

    def temp_bytes(num_steps):
        fn = jax.jit(lambda p, xs, t: mfaba_lib.mfaba(apply_fn, p, xs, t, num_steps=num_steps))
        compiled = fn.lower(params, x, target).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    short, long = temp_bytes(20), temp_bytes(200)
    assert short > 0
    assert abs(long - short) <= 0.1 * short, (short, long)


def test_jit_matches_no_jit_and_traces_once(tiny):
    apply_fn, params, x, target = tiny
    x, target = x[:2], target[:2]

    def mfaba(p, xs, t):
        return mfaba_lib.mfaba(apply_fn, p, xs, t, num_steps=8)

    explain, jitted = assert_jit_matches_eager(mfaba, params, x, target, rtol=1e-4, atol=1e-7)
    x_new = jnp.clip(x + 0.05, 0, 1)
    again = explain(params, x_new, target)  # same shapes: no re-trace
    assert again.shape == (2, 16, 16)
    assert not np.allclose(np.asarray(again), np.asarray(jitted))


@pytest.mark.parametrize("variant", ["sharp", "smooth", "norm", "cos"])
def test_host_loop_equals_while_loop(tiny, variant):
    """``loop="host"`` (the compiled step driven from Python, the CPU default) and
    ``loop="while"`` (one ``lax.while_loop``) give the same map and step counts,
    with samples stopping at different steps."""
    apply_fn, params, x, target = tiny
    run = functools.partial(
        mfaba_lib.mfaba, apply_fn, params, x, target, variant=variant, num_steps=30,
        return_steps=True,
    )  # fmt: skip
    host, host_steps = run(loop="host")
    loop, loop_steps = run(loop="while")
    np.testing.assert_array_equal(np.asarray(host_steps), np.asarray(loop_steps))
    assert len(set(np.asarray(host_steps).tolist())) > 1  # early stops differ per sample
    scale = float(jnp.max(jnp.abs(loop)))
    np.testing.assert_allclose(np.asarray(host), np.asarray(loop), rtol=1e-5, atol=1e-6 * scale)
    with pytest.raises(ValueError, match="loop='host'"):
        jax.jit(lambda xs: mfaba_lib.mfaba(apply_fn, params, xs, target, loop="host"))(x)


def test_options_and_cost(tiny):
    apply_fn, params, x, target = tiny
    x, target = x[:2], target[:2]
    plain = mfaba_lib.mfaba(apply_fn, params, x, target, num_steps=5, early_stop=False)
    double = mfaba_lib.mfaba(
        apply_fn, params, x, target, num_steps=5, early_stop=False, double_softmax=True
    )
    assert plain.shape == double.shape == (2, 16, 16)
    assert not np.allclose(np.asarray(plain), np.asarray(double))
    quirk = attribute("mfaba_norm", apply_fn, params, x, target, num_steps=5, step="authors_sign")
    assert quirk.shape == (2, 16, 16) and np.all(np.isfinite(np.asarray(quirk)))
    assert method_cost("mfaba", num_steps=50) == (51, 51)
    assert method_cost("mfaba_cos", num_steps=10) == (22, 22)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(x=jnp.zeros((16, 16, 3))), "x"),
        (dict(x=jnp.full((2, 16, 16, 3), jnp.nan)), "x"),
        (dict(x=jnp.full((2, 16, 16, 3), jnp.inf)), "x"),
        (dict(target=jnp.array([0, 7], jnp.int32)), "target"),
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=-3), "num_steps"),
        (dict(variant="blunt"), "variant"),
        (dict(loop="gpu"), "loop"),
        (dict(accumulate_gradients="yes"), "accumulate_gradients"),
        (dict(variant="norm", accumulate_gradients=True), "accumulate_gradients"),
        (dict(variant="cos", accumulate_gradients=True), "accumulate_gradients"),
    ],
)
def test_bad_input_raises(tiny, kwargs, name):
    apply_fn, params, x, target = tiny
    args = dict(x=x[:2], target=target[:2])
    args.update({k: v for k, v in kwargs.items() if k in ("x", "target")})
    options = {k: v for k, v in kwargs.items() if k not in ("x", "target")}
    with pytest.raises(ValueError, match=name):
        mfaba_lib.mfaba(apply_fn, params, args["x"], args["target"], **options)
