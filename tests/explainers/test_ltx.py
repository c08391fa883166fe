"""LTX (SPEC §4): objective, POS AUC, stage A with fit, vmapped stage B."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax import metrics
from fastxai_jax.explainers.learned import ltx, make_trainer
from fastxai_jax.models import make_apply_fn, vit
from fastxai_jax.models.small_cnn import SmallCNN
from fastxai_jax.train.loop import fit
from fastxai_jax.train.sharding import data_mesh


def test_objective_hand_computed():
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    classes = jnp.array([0, 0])
    mask = jnp.array([[[0.0, 1.0]], [[0.5, 0.5]]])  # [2, 1, 2]
    ce = np.mean([np.log(1 + np.exp(-2.0)), np.log(1 + np.exp(1.0))])
    softplus = np.mean(np.log1p(np.exp([0.0, 1.0, 0.5, 0.5])))
    loss, terms = ltx.ltx_objective(logits, classes, mask, lam=3.0)
    np.testing.assert_allclose(loss, ce + 3.0 * softplus, rtol=1e-6)
    loss_mean, _ = ltx.ltx_objective(logits, classes, mask, lam=3.0, penalty="mean")
    np.testing.assert_allclose(loss_mean, ce + 3.0 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(terms["ce"], ce, rtol=1e-6)


def _tiny_cnn():
    module = SmallCNN(num_classes=3, widths=(4, 8))
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return module, variables, make_apply_fn(module, "half")


def test_pos_auc_matches_metrics(key):
    module, variables, apply_fn = _tiny_cnn()
    x = jax.random.uniform(key, (3, 16, 16, 3))
    saliency = jax.random.uniform(jax.random.key(5), (3, 16, 16))
    target = jnp.argmax(apply_fn(variables, x), axis=-1)
    for score in ("prob",):  # "top1" shares the code path (one compile is enough)
        ours = jax.vmap(
            lambda xb, sb, tb, score=score: ltx.pos_auc_single(
                apply_fn, variables, xb, sb, tb, score
            )
        )(x, saliency, target)
        ref = metrics.pos_neg_perturbation(apply_fn, variables, x, saliency, target, score=score)
        np.testing.assert_allclose(ours, ref["pos"].auc, atol=1e-4)


@pytest.fixture(scope="module")
def cnn_stage_a():
    module, variables, apply_fn = _tiny_cnn()
    config = ltx.LtxConfig(kind="cnn", family="half", lam=1.0, finetune_steps=4)
    optimizer = ltx.default_optimizer(20)
    learned = ltx.make(config, apply_fn, variables, module=module)
    init, update = make_trainer(learned, optimizer)
    x = jax.random.uniform(jax.random.key(3), (8, 16, 16, 3))
    state = init(jax.random.key(1), x)
    state, history = fit(
        state, update, lambda step: x, num_steps=20, key=jax.random.key(2),
        progress=False, mesh=data_mesh(8),
    )  # fmt: skip
    return config, module, variables, apply_fn, learned, state, history, x, optimizer


def test_stage_a_trains_and_explains(cnn_stage_a):
    _, _, _, _, learned, state, history, x, _ = cnn_stage_a
    losses = [h["loss"] for h in history]
    assert losses[-1] < losses[0] - 1e-3, losses
    masks = learned.explain(state.params, x)
    assert masks.shape == (8, 16, 16)
    assert float(masks.min()) > 0.0 and float(masks.max()) < 1.0


def test_stage_b_vmapped_equals_single(cnn_stage_a):
    config, module, variables, apply_fn, _, state, _, x, optimizer = cnn_stage_a
    finetune = ltx.make_finetune(config, optimizer, apply_fn, variables, module=module)
    masks, info = finetune(state, x[:3])
    assert masks.shape == (3, 16, 16) and info["pos_auc"].shape == (3, 4)
    # the kept mask is the best POS AUC seen on the pre-step masks (stage-A mask first)
    aucs = np.asarray(info["pos_auc"])
    assert np.all(np.asarray(info["best_pos_auc"]) == np.nanmin(aucs, axis=1))
    best = np.asarray(info["best_step"])
    np.testing.assert_array_equal(aucs[np.arange(3), best], info["best_pos_auc"])
    # strictly lower: the first epoch reaching the minimum is kept
    assert all(np.nanmin(aucs[b, : best[b]], initial=np.inf) > aucs[b, best[b]] for b in range(3))
    for b in range(3):
        alone, info_b = finetune(state, x[b : b + 1])
        np.testing.assert_allclose(masks[b], alone[0], atol=1e-5)
        np.testing.assert_allclose(info["loss"][b], info_b["loss"][0], atol=1e-5)


def test_vit_head_and_frozen_patch_embedding(key):
    module = vit(
        "vit_ti16", num_classes=3, image_size=16, patch_size=4, hidden_size=8, depth=1,
        num_heads=2, mlp_dim=16,
    )  # fmt: skip
    variables = module.init(key, jnp.zeros((1, 16, 16, 3)))
    apply_fn = make_apply_fn(module, "half")
    config = ltx.LtxConfig(kind="vit", family="half", lam=1.0)
    learned = ltx.make(config, apply_fn, variables, module=module)
    init, update = make_trainer(learned, ltx.default_optimizer(4, warmup_frac=0.0))
    x = jax.random.uniform(key, (2, 16, 16, 3))
    state = init(jax.random.key(1), x)
    assert state.params["head"]["dense1"]["kernel"].shape == (8, 8)
    new_state, metrics_ = jax.jit(update)(state, x, key)
    assert np.isfinite(float(metrics_["loss"]))
    before = state.params["backbone"]["patch_embed"]["kernel"]
    after = new_state.params["backbone"]["patch_embed"]["kernel"]
    np.testing.assert_array_equal(before, after)
    changed = new_state.params["backbone"]["block_0"]
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(changed),
            jax.tree.leaves(state.params["backbone"]["block_0"]),
            strict=True,
        )
    )
    assert learned.explain(new_state.params, x).shape == (2, 16, 16)


def test_validation():
    with pytest.raises(ValueError, match="penalty"):
        ltx.LtxConfig(penalty="l2").validate()
    with pytest.raises(ValueError, match="kind"):
        ltx.LtxConfig(kind="rnn").validate()
    with pytest.raises(ValueError, match="penalty_on"):
        ltx.LtxConfig(penalty_on="mask").validate()
    with pytest.raises(ValueError, match="pos_threshold"):
        ltx.LtxConfig(pos_threshold=float("nan")).validate()
    with pytest.raises(ValueError, match="schedule"):
        ltx.default_optimizer(10, schedule="cosine")
    with pytest.raises(ValueError, match="total_steps"):
        ltx.default_optimizer(0)


def test_authors_schedule_closed_form():
    """transformers' linear warm-up/decay: lr·t/w, then lr·(T − t)/(T − w); first step 0."""
    schedule = ltx.linear_warmup_decay(1.0, 5, 25)
    got = [float(schedule(t)) for t in (0, 1, 4, 5, 15, 25, 30)]
    np.testing.assert_allclose(got, [0.0, 0.2, 0.8, 1.0, 0.5, 0.0, 0.0], atol=1e-7)


def test_penalty_on_token_mask_differs_from_pixel_mask():
    """Edge-clamped bilinear upsampling changes the mean: the two penalties differ."""
    grid = jnp.array([[[0.9, 0.1], [0.1, 0.1]]])
    pixels = jax.image.resize(grid, (1, 8, 8), "bilinear")
    logits, classes = jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32)
    _, tokens = ltx.ltx_objective(logits, classes, grid, 1.0)
    _, upsampled = ltx.ltx_objective(logits, classes, pixels, 1.0)
    np.testing.assert_allclose(tokens["mask_penalty"], np.mean(np.log1p(np.exp(grid))), rtol=1e-6)
    assert abs(float(tokens["mask_penalty"]) - float(upsampled["mask_penalty"])) > 1e-3
