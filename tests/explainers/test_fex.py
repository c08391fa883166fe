"""FEX: policy-gradient math in closed form, PPO by hand, update/explain, resume, bad input."""

import itertools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers.learned import _fex_losses as losses
from fastxai_jax.explainers.learned import _fex_ppo, fex, fex_benchmark, make_trainer, runs
from fastxai_jax.models.small_cnn import SmallCNN
from fastxai_jax.train.loop import fit, make_optimizer

IMAGE, PATCH, CLASSES = 16, 4, 4


def tiny_config(**overrides):
    options = dict(
        num_classes=CLASSES,
        image_size=IMAGE,
        patch_size=PATCH,
        hidden_size=16,
        depth=1,
        num_heads=2,
        mlp_dim=32,
        explainer_family="half",
        target_family="half",
        num_masks=3,
        ppo_minibatch_size=6,  # B·K = 12 or 24 rows here: 2 or 4 PPO steps per batch
    )
    options.update(overrides)
    return fex.FexConfig(**options)


def make(config, apply_fn, params, optimizer=None, **kwargs):
    """FEX with ``init``/``update`` bound to an optimizer (Adam 1e-3 by default) and
    ``explain`` = the ``[B, gh, gw]`` grid."""
    learned = fex.make(config, apply_fn, params, **kwargs)
    init, update = make_trainer(learned, optimizer or make_optimizer("adam", 1e-3))
    return SimpleNamespace(init=init, update=update, explain=learned.explain_grid, learned=learned)


def linear_target(key):
    weights = jax.random.normal(key, (IMAGE * IMAGE * 3, CLASSES)) * 0.05

    def apply_fn(params, x):
        return x.reshape(x.shape[0], -1) @ params

    return apply_fn, weights


def images(key, batch=8):
    return jax.random.uniform(key, (batch, IMAGE, IMAGE, 3), minval=0.1, maxval=1.0)


# ---------------------------------------------------------------- loss math


def test_reinforce_estimator_matches_exact_gradient_of_expected_reward():
    """4 patches → 16 masks: E_π[r] and its gradient in closed form by enumeration."""
    theta = jnp.asarray([0.3, -0.8, 1.2, 0.0])
    rewards = jax.random.uniform(jax.random.key(3), (16,), minval=0.0, maxval=2.0)
    all_masks = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=4)))  # [16, 4]
    index = (all_masks * jnp.asarray([[8.0, 4.0, 2.0, 1.0]])).sum(-1).astype(jnp.int32)
    table = rewards[index]

    def expected_reward(t):
        log_probs = jax.vmap(lambda m: losses.policy_log_prob(t, m))(all_masks)
        return jnp.sum(jnp.exp(log_probs) * table)

    exact = np.asarray(jax.grad(expected_reward)(theta))  # ∇ E_π[r]

    num = 40_000
    masks = jax.random.bernoulli(jax.random.key(7), jax.nn.sigmoid(theta)[None], (num, 4))
    masks = masks.astype(jnp.float32)
    sample_rewards = rewards[
        (masks * jnp.asarray([[8.0, 4.0, 2.0, 1.0]])).sum(-1).astype(jnp.int32)
    ]
    baseline = jnp.asarray(0.7)  # any action-independent baseline keeps it unbiased

    def per_sample_grad(m, r):
        loss = lambda t: losses.reinforce_loss(
            t, m, r, baseline, weights=losses.LossWeights(entropy=0.0)
        )[0]
        return -jax.grad(loss)(theta)  # −∇loss estimates +∇E[r]

    grads = np.asarray(jax.vmap(per_sample_grad)(masks, sample_rewards))
    mean, stderr = grads.mean(0), grads.std(0) / np.sqrt(num)
    assert np.all(np.abs(mean - exact) < 4.0 * stderr + 1e-6), (mean, exact, stderr)
    # The test has power: the exact gradient is far from zero relative to the error.
    assert np.max(np.abs(exact) / stderr) > 10


def test_ppo_loss_hand_computed():
    logits = jnp.asarray([0.5, -1.0, 2.0])
    mask = jnp.asarray([1.0, 0.0, 1.0])
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))
    l_np = np.asarray([0.5, -1.0, 2.0])
    log_pi = np.log(sig(0.5)) + np.log(1 - sig(-1.0)) + np.log(sig(2.0))
    p = sig(l_np)
    entropy = float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).mean())  # the authors' mean

    # Positive advantage, ratio e^{0.5} ≈ 1.649 > 1.2: clipped branch.
    loss, terms = losses.ppo_loss(
        logits, mask, jnp.asarray(log_pi - 0.5), jnp.asarray(2.0), jnp.asarray(0.5)
    )
    expected = -1.2 * 1.5 + 0.5 * (0.5 - 2.0) ** 2 - 1e-4 * entropy
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    np.testing.assert_allclose(float(terms.ratio), np.exp(0.5), rtol=1e-6)
    np.testing.assert_allclose(float(terms.log_prob), log_pi, rtol=1e-6)
    # Clipped: the surrogate carries no policy gradient, only the entropy does.
    g = jax.grad(
        lambda z: losses.ppo_loss(
            z, mask, jnp.asarray(log_pi - 0.5), 2.0 * jnp.ones(()), 0.5 * jnp.ones(())
        )[0]
    )(logits)
    mean_entropy = lambda z: losses.policy_entropy(z, "mean")
    np.testing.assert_allclose(
        np.asarray(g), -1e-4 * np.asarray(jax.grad(mean_entropy)(logits)), atol=1e-7
    )
    # "sum": the joint entropy, L = 3 times the mean.
    np.testing.assert_allclose(float(losses.policy_entropy(logits, "sum")), 3 * entropy, rtol=1e-6)
    # A given (frozen) advantage replaces r − V in the surrogate: ratio 1, A = 0.25.
    loss, terms = losses.ppo_loss(
        logits, mask, jnp.asarray(log_pi), jnp.asarray(2.0), jnp.asarray(0.5),
        advantage=jnp.asarray(0.25), weights=losses.LossWeights(value=0.0, entropy=0.0),
    )  # fmt: skip
    np.testing.assert_allclose([float(loss), float(terms.advantage)], [-0.25, 0.25], rtol=1e-6)

    # Negative advantage (A = −1), ratio e^{−0.5} ≈ 0.607 < 0.8: min picks the clipped 0.8·A.
    loss, _ = losses.ppo_loss(
        logits,
        mask,
        jnp.asarray(log_pi + 0.5),
        jnp.asarray(0.0),
        jnp.asarray(1.0),
        weights=losses.LossWeights(value=1.0, entropy=0.0),
    )
    np.testing.assert_allclose(float(loss), 0.8 + 1.0, rtol=1e-6)
    # Unclipped (ratio 1): −ρA.
    loss, _ = losses.ppo_loss(
        logits,
        mask,
        jnp.asarray(log_pi),
        jnp.asarray(3.0),
        jnp.asarray(1.0),
        weights=losses.LossWeights(value=0.0, entropy=0.0),
    )
    np.testing.assert_allclose(float(loss), -2.0, rtol=1e-6)


def test_reward_and_kl_hand_computed():
    mask = jnp.asarray([1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(float(losses.fex_reward(jnp.asarray(0.6), mask)), 0.6 * 4 / 3)
    # "empty" baseline: p₀ subtracted; the empty mask earns exactly 0 whatever p is.
    np.testing.assert_allclose(
        float(losses.fex_reward(jnp.asarray(0.6), mask, jnp.asarray(0.25))), 0.35 * 4 / 3
    )
    assert float(losses.fex_reward(jnp.asarray(0.4), jnp.zeros(4), jnp.asarray(0.4))) == 0.0
    actor = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])  # [L=2, C=2]
    lsm = np.log(
        np.exp([[1.0, 0.0], [0.0, 2.0]]) / np.exp([[1.0, 0.0], [0.0, 2.0]]).sum(1, keepdims=True)
    )
    mean = lsm.mean(0)
    log_mu = mean - np.log(np.exp(mean).sum())
    np.testing.assert_allclose(
        np.asarray(losses.token_class_distribution(actor)), log_mu, rtol=1e-6
    )
    p = np.asarray([0.25, 0.75])
    kl = float(losses.kl_to_target(jnp.asarray(p), actor))
    np.testing.assert_allclose(kl, float((p * (np.log(p) - log_mu)).sum()), rtol=1e-6)
    # p with a zero entry: 0·log 0 = 0, still finite.
    assert np.isfinite(float(losses.kl_to_target(jnp.asarray([0.0, 1.0]), actor)))


# --------------------------------------------------------------- the explainer


@pytest.mark.parametrize("mode", ["full", "frozen", "lora"])
def test_update_trains_the_right_parameters_with_a_cnn_target(mode, key):
    cnn = SmallCNN(num_classes=CLASSES, widths=(4, 8))
    variables = cnn.init(key, jnp.zeros((1, IMAGE, IMAGE, 3)))
    apply_fn = lambda v, x: cnn.apply(v, x * 2.0 - 1.0)[0]
    config = tiny_config(backbone_mode=mode, loss="reinforce" if mode == "lora" else "ppo")
    learned = make(config, apply_fn, variables)
    x = images(jax.random.key(1))
    state = learned.init(key, x)
    new_state, metrics = jax.jit(learned.update)(state, x, jax.random.key(2))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    changed = lambda a, b: any(
        bool(jnp.any(u != v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert changed(new_state.params["heads"], state.params["heads"])
    assert changed(new_state.params["backbone"], state.params["backbone"]) == (mode == "full")
    if mode == "lora":
        assert changed(new_state.params["lora"], state.params["lora"])
    heat = learned.explain(new_state.params, x)
    assert heat.shape == (8, IMAGE // PATCH, IMAGE // PATCH)
    assert bool(jnp.all((heat > 0) & (heat < 1)))


def test_empty_reward_baseline_subtracts_the_blank_image_probability(key):
    """A target that ignores its input (same probabilities for every image, masked
    or not) gives reward 0 for every mask under ``reward_baseline="empty"``, and
    ``p(ŷ)·L/(Σm+1)`` under the paper's reward, whose mean is checked by hand."""
    probs = jnp.asarray([0.1, 0.6, 0.2, 0.1])
    constant = lambda p, x: jnp.broadcast_to(jnp.log(probs), (x.shape[0], CLASSES))
    x = images(key, 4)
    num_patches = (IMAGE // PATCH) ** 2
    for baseline in ("none", "empty"):
        learned = make(tiny_config(reward_baseline=baseline), constant, None)
        state = learned.init(key, x)
        _, metrics = jax.jit(learned.update)(state, x, jax.random.key(3))
        if baseline == "empty":
            assert float(metrics["reward"]) == pytest.approx(0.0, abs=1e-6)
        else:
            kept = float(metrics["keep_fraction"]) * num_patches
            # reward = 0.6·L/(Σm+1) varies with Σm; bounded by the extremes of Σm.
            assert 0.6 * num_patches / (num_patches + 1) <= float(metrics["reward"])
            assert float(metrics["reward"]) <= 0.6 * num_patches
            assert 0 < kept < num_patches


def test_explain_never_queries_the_target_and_honours_target(key):
    calls = []
    apply_fn, weights = linear_target(key)

    def counting(params, x):
        calls.append(x.shape)
        return apply_fn(params, x)

    learned = make(tiny_config(), counting, weights)
    x = images(jax.random.key(1), 4)
    state = learned.init(key, x)
    calls.clear()
    heat_own = learned.explain(state.params, x)
    heat_2 = learned.explain(state.params, x, jnp.asarray([2, 2, 2, 2]))
    assert calls == []
    actor, _ = fex.forward(tiny_config(), state.params, x)
    np.testing.assert_allclose(
        np.asarray(heat_2), np.asarray(jax.nn.sigmoid(actor[..., 2])).reshape(4, 4, 4), rtol=1e-6
    )
    mu = jax.vmap(losses.token_class_distribution)(actor).argmax(-1)
    own = jnp.take_along_axis(actor, mu[:, None, None], -1)[..., 0]
    np.testing.assert_allclose(
        np.asarray(heat_own), np.asarray(jax.nn.sigmoid(own)).reshape(4, 4, 4), rtol=1e-6
    )
    up = fex.upsample(heat_own, (IMAGE, IMAGE), "nearest")
    assert up.shape == (4, IMAGE, IMAGE)
    with pytest.raises(ValueError, match="target"):
        learned.explain(state.params, x, jnp.asarray([0, 1, 2, 9]))


def test_softmax_policy_keeps_each_patch_with_its_class_softmax(key):
    """``policy="softmax"`` (this library's option; neither the paper nor the
    authors' code): the keep probability is ``softmax_c(actor)[ŷ]``, finite and
    exact at logits of ±50, and the explainer's heatmap is that probability."""
    actor = jnp.asarray(
        [[[2.0, -1.0, 0.5, 0.0], [50.0, -50.0, 0.0, 0.0], [-50.0, 50.0, 50.0, -50.0]]]
    )
    classes = jnp.asarray([1])
    logits = fex.policy_logits(actor, classes, "softmax")
    z = np.asarray(actor, np.float64)[0]
    expected = np.exp(z[:, 1] - z.max(-1)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1)
    np.testing.assert_allclose(
        np.asarray(jax.nn.sigmoid(logits))[0], expected, rtol=1e-6, atol=1e-12
    )
    # Patch 1: 1 against e^100 → logit −100 (the probability itself underflows);
    # patch 2: two equal logits → exactly one half.
    np.testing.assert_allclose(np.asarray(logits)[0, 1:], [-100.0, 0.0], atol=1e-4)
    mask = jnp.asarray([1.0, 0.0, 1.0])
    assert np.isfinite(float(losses.policy_log_prob(logits[0], mask)))
    assert np.isfinite(float(losses.policy_entropy(logits[0])))
    np.testing.assert_array_equal(fex.policy_logits(actor, classes), actor[..., 1])

    apply_fn, weights = linear_target(key)
    config = tiny_config(policy="softmax")
    learned = make(config, apply_fn, weights)
    x = images(jax.random.key(1), 4)
    state = learned.init(key, x)
    heat = learned.explain(state.params, x, jnp.asarray([0, 1, 2, 3]))
    out, _ = fex.forward(config, state.params, x)
    probs = jax.nn.softmax(out, -1)[jnp.arange(4), :, jnp.asarray([0, 1, 2, 3])]
    np.testing.assert_allclose(np.asarray(heat), np.asarray(probs).reshape(4, 4, 4), rtol=1e-5)
    state, metrics = jax.jit(learned.update)(state, x, jax.random.key(2))
    assert np.isfinite(float(metrics["loss"]))
    with pytest.raises(ValueError, match="policy"):
        tiny_config(policy="tanh").validate()
    with pytest.raises(ValueError, match="num_classes >= 2"):
        tiny_config(policy="softmax", num_classes=1).validate()


def test_epsilon_greedy_exploration_flips_fair_coins(key):
    """With the actor pinned at logit −50 (keep probability 0), ε = 0 keeps no
    patch, and per-patch ε-greedy keeps a patch with probability ε/2 (a fair coin
    on an ε share of the actions)."""
    apply_fn, weights = linear_target(key)
    x = images(key, 8)
    for epsilon, expected in ((0.0, 0.0), (0.5, 0.25), (1.0, 0.5)):
        config = tiny_config(epsilon=epsilon, epsilon_scope="patch")
        learned = make(config, apply_fn, weights)
        state = learned.init(key, x)
        actor = jax.tree.map(
            lambda leaf: jnp.full_like(leaf, -50.0) if leaf.ndim == 1 else jnp.zeros_like(leaf),
            state.params["heads"]["actor"],
        )
        params = {**state.params, "heads": {**state.params["heads"], "actor": actor}}
        _, metrics = jax.jit(learned.update)(state._replace(params=params), x, key)
        # 8 images x 3 masks x 16 patches = 384 draws: binomial sd <= 0.026.
        assert float(metrics["keep_fraction"]) == pytest.approx(expected, abs=0.08)
        assert np.isfinite(float(metrics["loss"]))
    with pytest.raises(ValueError, match="epsilon"):
        tiny_config(epsilon=1.5).validate()
    with pytest.raises(ValueError, match="epsilon_scope"):
        tiny_config(epsilon_scope="pixel").validate()


def test_epsilon_greedy_scope_image_randomises_whole_masks(key):
    """The authors' ε-greedy: one coin per mask. With keep probability 0, a mask
    is either empty (policy) or a fair coin per patch (randomised); per-patch
    coins leave almost no empty mask."""
    logits = jnp.full((2000, 16), -50.0)  # 2000 images, 16 patches
    whole = np.asarray(_fex_ppo.sample_actions(key, logits, 1, 0.5, "image"))[0]
    kept = whole.sum(-1)
    randomised = kept > 0
    # P(a randomised mask keeps nothing) = 2^-16: the empty rows are the policy's.
    assert abs(randomised.mean() - 0.5) < 0.04  # binomial sd 0.011
    assert abs(whole[randomised].mean() - 0.5) < 0.02
    per_patch = np.asarray(_fex_ppo.sample_actions(key, logits, 1, 0.5, "patch"))[0]
    assert (per_patch.sum(-1) == 0).mean() < 0.03  # 0.75^16 = 1 %
    assert abs(per_patch.mean() - 0.25) < 0.02


def test_ppo_makes_minibatch_steps_and_differs_from_reinforce(key):
    """``loss="ppo"``: B·K // ppo_minibatch_size optimizer steps per batch (the
    optimizer's count), and params differ from ``"reinforce"``'s single step on
    the same batch and key, whose first step is identical."""
    import optax

    apply_fn, weights = linear_target(key)
    x = images(jax.random.key(1), 8)  # 8 images x 3 masks = 24 rows
    counts, params = {}, {}
    for loss, minibatch, epochs in (("ppo", 6, 1), ("ppo", 8, 2), ("reinforce", 6, 1)):
        # the schedule's count = optimizer steps taken
        config = tiny_config(loss=loss, ppo_minibatch_size=minibatch, ppo_epochs=epochs)
        counting = optax.chain(optax.scale_by_schedule(lambda c: 1.0), optax.sgd(0.5))
        learned = make(config, apply_fn, weights, counting)
        state = learned.init(key, x)
        new_state, metrics = jax.jit(learned.update)(state, x, jax.random.key(2))
        counts[(loss, minibatch, epochs)] = int(new_state.opt_state[0].count)
        params[(loss, minibatch, epochs)] = new_state.params
        assert int(new_state.step) == 1 and np.isfinite(float(metrics["loss"]))
    assert counts == {("ppo", 6, 1): 4, ("ppo", 8, 2): 6, ("reinforce", 6, 1): 1}
    gap = max(
        float(jnp.abs(a - b).max())
        for a, b in zip(
            jax.tree.leaves(params[("ppo", 6, 1)]["heads"]),
            jax.tree.leaves(params[("reinforce", 6, 1)]["heads"]),
            strict=True,
        )
    )
    assert gap > 1e-4
    with pytest.raises(ValueError, match="ppo_minibatch_size"):
        learned = make(tiny_config(ppo_minibatch_size=25), apply_fn, weights)
        learned.update(learned.init(key, x), x, key)
    with pytest.raises(ValueError, match="ppo_epochs"):
        tiny_config(loss="reinforce", ppo_epochs=2).validate()
    for name in ("ppo_minibatch_size", "ppo_epochs"):
        with pytest.raises(ValueError, match=name):
            tiny_config(**{name: 0}).validate()
    with pytest.raises(ValueError, match="entropy_reduction"):
        tiny_config(entropy_reduction="max").validate()
    with pytest.raises(ValueError, match="layer_norm_eps"):
        tiny_config(layer_norm_eps=-1.0).validate()


def test_initial_keep_shifts_only_the_actor_output_bias(key):
    """``initial_keep=q`` adds ``logit(q)`` to the actor's last bias and changes
    nothing else, so the untrained policy keeps about ``q`` of the patches."""
    plain = fex.init_params(tiny_config(), key)
    shifted = fex.init_params(tiny_config(initial_keep=0.88), key)
    logit = np.log(0.88 / 0.12)
    np.testing.assert_allclose(
        shifted["heads"]["actor"]["dense2"]["bias"],
        plain["heads"]["actor"]["dense2"]["bias"] + logit,
        rtol=1e-6,
    )
    rest = lambda p: {**p, "heads": {**p["heads"], "actor": {**p["heads"]["actor"], "dense2": 0}}}
    for a, b in zip(jax.tree.leaves(rest(plain)), jax.tree.leaves(rest(shifted)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    apply_fn, weights = linear_target(key)
    learned = make(tiny_config(initial_keep=0.88), apply_fn, weights)
    x = images(key, 8)
    state = learned.init(key, x)
    _, metrics = jax.jit(learned.update)(state, x, key)
    assert float(metrics["keep_fraction"]) == pytest.approx(0.88, abs=0.08)
    with pytest.raises(ValueError, match="initial_keep"):
        tiny_config(initial_keep=1.0).validate()


def test_resume_reproduces_an_uninterrupted_run(tmp_path, key):
    apply_fn, weights = linear_target(key)
    learned = make(tiny_config(), apply_fn, weights)
    data = np.asarray(images(jax.random.key(5), 32))
    batch_fn = lambda step: data[(step % 4) * 8 : (step % 4) * 8 + 8]
    state0 = learned.init(key, data[:8])
    kwargs = dict(key=jax.random.key(9), checkpoint_every=2, progress=False)
    full, _ = fit(state0, learned.update, batch_fn, num_steps=5, **kwargs)
    fit(state0, learned.update, batch_fn, num_steps=3, checkpoint_dir=tmp_path, **kwargs)
    resumed, history = fit(
        state0, learned.update, batch_fn, num_steps=5, checkpoint_dir=tmp_path, **kwargs
    )
    assert [r["step"] for r in history] == [3, 4]
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_nan_reward_never_enters_params(key):
    apply_fn, weights = linear_target(key)

    def nan_when_masked(params, x):
        # Finite on clean images (all pixels > 0.1); NaN once a patch is masked to 0.
        bad = jnp.log(jnp.min(x.reshape(x.shape[0], -1), axis=-1) - 0.05)
        return apply_fn(params, x) + bad[:, None]

    config = tiny_config(target_family="identity")  # fill 0 in identity space = black
    learned = make(config, nan_when_masked, weights)
    x = images(jax.random.key(1))
    state = learned.init(key, x)
    new_state, metrics = jax.jit(learned.update)(state, x, key)
    assert np.isnan(float(metrics["loss"]))
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FloatingPointError, match="step 0"):
        fit(state, learned.update, lambda s: x, num_steps=2, key=key, progress=False)


def test_bad_inputs(key):
    apply_fn, weights = linear_target(key)
    x = images(key, 4)
    with pytest.raises(ValueError, match="does not divide"):
        tiny_config(image_size=18)
        make(tiny_config(image_size=18), apply_fn, weights)
    wrong = lambda p, x: apply_fn(p, x)[:, :3]
    with pytest.raises(ValueError, match="logits of shape"):
        make(tiny_config(), wrong, weights).init(key, x)
    with pytest.raises(ValueError, match="NaN"):
        make(tiny_config(), lambda p, x: apply_fn(p, x) * jnp.nan, weights).init(key, x)
    learned = make(tiny_config(), apply_fn, weights)
    state = learned.init(key, x)
    with pytest.raises(ValueError, match="logits of shape"):
        make(tiny_config(), wrong, weights).update(state, x, key)
    with pytest.raises(ValueError, match=r"\[B, 16, 16, 3\]"):
        learned.explain(state.params, jnp.zeros((2, 20, 20, 3)))
    with pytest.raises(ValueError, match="backbone_mode"):
        make(tiny_config(backbone_mode="half"), apply_fn, weights)
    with pytest.raises(ValueError, match="reward_baseline"):
        make(tiny_config(reward_baseline="mean"), apply_fn, weights)
    with pytest.raises(ValueError, match="backbone_params do not match"):
        make(tiny_config(), apply_fn, weights, backbone_params={"x": jnp.zeros(3)}).init(key, x)


def test_train_on_benchmark_saves_and_loads(tmp_path, key):
    apply_fn, weights = linear_target(key)
    data = np.asarray(images(jax.random.key(5), 16))
    config = tiny_config()
    trained = fex_benchmark.train_fex_on_benchmark(
        apply_fn,
        weights,
        data,
        steps=3,
        batch_size=8,
        key=key,
        workdir=tmp_path,
        config=config,
        optimizer=dict(name="adam", lr=1e-3, total_steps=3),
        progress=False,
    )
    params = trained.params
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") == 3
    heat = runs.load(tmp_path).explain(data[:2])
    assert heat.shape == (2, IMAGE, IMAGE)
    direct = fex.upsample(fex.explain_grid(config, params, jnp.asarray(data[:2])), (IMAGE, IMAGE))
    np.testing.assert_allclose(np.asarray(heat), np.asarray(direct), rtol=1e-5, atol=1e-6)


def test_data_parallel_training_matches_single_device(tmp_path, key):
    from fastxai_jax.train.sharding import data_mesh

    apply_fn, weights = linear_target(key)
    # SGD: Adam would turn reduction-order noise in ~zero gradients into ±lr steps.
    learned = make(tiny_config(), apply_fn, weights, make_optimizer("sgd", 0.05))
    data = np.asarray(images(jax.random.key(5), 8))
    state0 = learned.init(key, data)
    kwargs = dict(key=jax.random.key(9), progress=False, num_steps=2)
    single, h1 = fit(state0, learned.update, lambda s: data, **kwargs)
    sharded, h8 = fit(state0, learned.update, lambda s: data, mesh=data_mesh(8), **kwargs)
    np.testing.assert_allclose([r["loss"] for r in h1], [r["loss"] for r in h8], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_cli_trains_and_explain_cli_can_load(tmp_path, key):
    from fastxai_jax.cli import build_parser
    from fastxai_jax.data.groundtruth import NUM_CLASSES
    from fastxai_jax.train.checkpoint import save_params

    cnn = SmallCNN(num_classes=NUM_CLASSES, widths=(4, 8))
    variables = cnn.init(key, jnp.zeros((1, 64, 64, 3)))
    # A params file of the benchmark architecture (random weights are enough here).
    full = SmallCNN(num_classes=NUM_CLASSES).init(key, jnp.zeros((1, 64, 64, 3)))
    save_params(tmp_path / "target", full, {"num_classes": NUM_CLASSES})
    del variables
    argv = [
        "train-explainer", "--method", "fex", "--target", "small_cnn",
        "--target-weights", str(tmp_path / "target"), "--workdir", str(tmp_path / "fex"),
        "--steps", "2", "--batch-size", "4", "--num-train", "8", "--hidden-size", "16",
        "--depth", "1", "--no-progress", "--policy", "softmax", "--epsilon", "0.05",
        "--initial-keep", "0.8",
    ]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    assert (tmp_path / "fex" / "explainer").exists()
    saved = runs.load(tmp_path / "fex").explainer.config
    assert (saved.policy, saved.epsilon, saved.initial_keep) == ("softmax", 0.05, 0.8)
    heat = runs.load(tmp_path / "fex").explain(np.zeros((2, 64, 64, 3), np.float32))
    assert heat.shape == (2, 64, 64)
    with pytest.raises(ValueError, match="unknown --method"):
        bad = build_parser().parse_args(argv[:2] + ["nope"] + argv[3:])
        bad.func(bad)
