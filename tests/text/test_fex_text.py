"""FEX over tokens: the learned-explainer contract, the table entries, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fastxai_jax as fx
from fastxai_jax.explainers import registry
from fastxai_jax.explainers.learned import fex_text
from fastxai_jax.explainers.learned._trained import Trained
from fastxai_jax.explainers.learned._update import make_trainer
from fastxai_jax.explainers.tokens import content_mask
from tests.text.conftest import make_batch

ROWS = [[5, 9, 12, 7, 30, 41], [8, 8, 17], [44, 6, 21, 33]]


@pytest.fixture(scope="module")
def tiny_fex(tiny_bert, tiny_bert_module):
    """FEX over tokens on the tiny BERT, the explainer initialised from the target's weights."""
    fns, params = tiny_bert
    module = tiny_bert_module[0]
    config = fex_text.TextFexConfig(num_classes=3, num_masks=3, fill="drop")
    learned = fex_text.make(config, fns, params, module=module, backbone_params=params)
    ids, mask = make_batch(ROWS)
    state_params = learned.init_params(
        jax.random.key(0), {"input_ids": ids, "attention_mask": mask}
    )
    return fns, params, module, learned, state_params


def test_explain_contract_padding_specials_and_one_trace(tiny_fex, monkeypatch):
    fns, _, _, learned, params = tiny_fex
    ids, mask = make_batch(ROWS)
    # Count traces of the jitted explain (its body calls `forward` once per trace);
    # the jit's C++ cache size is not a reliable count in a long test session.
    traces = []
    real_forward = fex_text.forward
    monkeypatch.setattr(
        fex_text, "forward", lambda *a, **k: (traces.append(1), real_forward(*a, **k))[1]
    )
    fex_text._explain_jit.clear_cache()
    heat = np.asarray(learned.explain(params, (ids, mask)))
    again = np.asarray(learned.explain(params, (ids[::-1].copy(), mask[::-1].copy())))
    assert len(traces) == 1  # same shapes: one trace
    content = np.asarray(content_mask(fns, ids, mask))
    assert heat.shape == ids.shape and heat.dtype == np.float32
    assert np.all(heat[~content] == 0.0)  # padding and [CLS]/[SEP] exactly 0
    assert np.all((heat[content] > 0) & (heat[content] < 1))
    np.testing.assert_allclose(again, heat[::-1], atol=1e-6)
    # Each sentence alone gives its batched map (attention mask kept right).
    for row in range(len(ROWS)):
        alone = np.asarray(learned.explain(params, make_batch([ROWS[row]])))
        np.testing.assert_allclose(alone[0], heat[row, : alone.shape[1]], atol=2e-5)
        assert np.all(heat[row, alone.shape[1] :] == 0.0)


def test_explain_queries_no_target_and_selects_the_class(tiny_fex):
    fns, _, module, learned, params = tiny_fex
    ids, mask = make_batch(ROWS)
    # An explain-only FEX has no target at all: explain cannot query one.
    bare = fex_text.make(learned.config, None, None, module=module, vocab=fns)
    np.testing.assert_array_equal(
        bare.explain(params, (ids, mask)), learned.explain(params, (ids, mask))
    )
    assert learned.target_queries_per_explain == 0
    actor, _ = fex_text.forward(learned.config, module, params, jnp.asarray(ids), jnp.asarray(mask))
    content = np.asarray(content_mask(fns, ids, mask))
    for cls in range(3):
        expected = np.where(content, jax.nn.sigmoid(np.asarray(actor)[..., cls]), 0.0)
        got = learned.explain(params, (ids, mask), target=cls)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # relevance="logit": the keep logit itself on content tokens, 0 elsewhere, and
    # distinct where σ rounds two large logits to the same 1.0 in float32.
    as_logit = fex_text.make(
        dataclasses.replace(learned.config, relevance="logit"), None, None, module=module, vocab=fns
    )
    logit = np.asarray(as_logit.explain(params, (ids, mask), target=1))
    np.testing.assert_allclose(logit, np.where(content, np.asarray(actor)[..., 1], 0.0), atol=1e-6)
    big = jnp.asarray([17.0, 20.0], jnp.float32)
    assert jax.nn.sigmoid(big)[0] == jax.nn.sigmoid(big)[1] == 1.0  # why the option exists


@pytest.mark.slow  # compiles a PPO update (~30 s alone, more on shared cores)
def test_reward_is_the_fex_formula_and_an_update_step_is_finite(tiny_fex):
    fns, target_params, _, learned, params = tiny_fex
    ids, mask = make_batch(ROWS)
    init, update = make_trainer(learned, optax.adam(1e-3))
    state = init(jax.random.key(0), {"input_ids": ids, "attention_mask": mask})
    state, metrics = update(state, {"input_ids": ids, "attention_mask": mask}, jax.random.key(1))
    assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1
    assert 0 < float(metrics["keep_fraction"]) < 1
    # Keeping every content token: reward = p(ŷ|x)·n/(n+1), per sentence.
    keep = jnp.ones(ids.shape, jnp.float32)
    kept_ids, attend = fex_text.masked_inputs(fns, ids, mask, keep, "drop")
    np.testing.assert_array_equal(kept_ids, ids)
    np.testing.assert_array_equal(attend, mask)
    dropped = fex_text.masked_inputs(fns, ids, mask, jnp.zeros(ids.shape), "drop")[1]
    assert not np.any(dropped)
    masked = fex_text.masked_inputs(fns, ids, mask, jnp.zeros(ids.shape), "mask")
    assert np.all(np.asarray(masked[0]) == fns.mask_id) and np.array_equal(masked[1], mask)


@pytest.mark.slow  # compiles two updates
def test_lora_and_frozen_modes_train_only_what_they_should(tiny_fex):
    fns, target_params, module, _, _ = tiny_fex
    ids, mask = make_batch(ROWS)
    batch = {"input_ids": ids, "attention_mask": mask}
    for mode in ("frozen", "lora"):
        config = fex_text.TextFexConfig(num_classes=3, num_masks=2, backbone_mode=mode)
        learned = fex_text.make(
            config, fns, target_params, module=module, backbone_params=target_params
        )
        init, update = make_trainer(learned, optax.adam(1e-2))
        state = init(jax.random.key(0), batch)
        new, _ = update(state, batch, jax.random.key(1))
        same = jax.tree.map(np.array_equal, state.params["backbone"], new.params["backbone"])
        assert all(jax.tree.leaves(same)), mode
        assert not np.array_equal(
            state.params["heads"]["actor"]["dense2"]["kernel"],
            new.params["heads"]["actor"]["dense2"]["kernel"],
        )
        if mode == "lora":
            assert any(
                not np.array_equal(a, b)
                for a, b in zip(
                    jax.tree.leaves(state.params["lora"]),
                    jax.tree.leaves(new.params["lora"]),
                    strict=True,
                )
            )


def test_table_lists_text_methods_and_refuses_text_for_image_only(tiny_bert, tiny_fex, key):
    fns, params = tiny_bert
    ids, mask = make_batch(ROWS)
    text = fx.available_methods("text")
    assert {"fex", "rise", "saliency", "integrated_gradients", "random"} <= set(text)
    assert set(text) <= set(fx.available_methods())
    assert fx.available_methods("image") == sorted([*registry.METHODS, *registry.LEARNED_METHODS])
    assert registry.token_method_cost("rise", num_masks=300) == fx.Cost(300, 0)
    assert registry.token_method_cost("ig", num_steps=20) == fx.Cost(20, 20)
    assert registry.token_method_cost("fex") == fx.Cost(0, 0)
    # The table's saliency is the token method.
    from fastxai_jax.explainers import tokens

    np.testing.assert_array_equal(
        fx.attribute("saliency", fns, params, (ids, mask)),
        tokens.token_saliency(fns, params, ids, mask),
    )
    for bad, match in (
        (
            lambda: fx.attribute("gradcam", fns, params, (ids, mask)),
            "method 'gradcam' is image-only",
        ),
        (
            lambda: fx.attribute("big", fns, params, (ids, mask), key=key),
            "method 'big' is image-only",
        ),
        (lambda: fx.attribute("rise", fns, params, (ids, mask)), "key"),
        (lambda: fx.attribute("saliency", fns, params, ids), "x must be"),
        (lambda: fx.attribute("saliency", fns, params, (ids, mask[:, :-1])), "attention_mask"),
        (lambda: fx.attribute("saliency", fns, params, (ids + 100, mask)), "input_ids"),
        (lambda: fx.attribute("fex", fns, params, (ids, mask)), "explainer"),
        (lambda: fx.available_methods("audio"), "modality"),
    ):
        with pytest.raises(ValueError, match=match):
            bad()
    _, _, _, learned, fex_params = tiny_fex
    trained = Trained("fex", learned, fex_params, 3)
    np.testing.assert_array_equal(
        fx.attribute("fex", fns, params, (ids, mask), explainer=trained),
        learned.explain(fex_params, (ids, mask)),
    )


def test_bad_config_and_batches_name_the_argument(tiny_fex):
    fns, params, module, learned, fex_params = tiny_fex
    for field, value in (
        ("fill", "blank"),
        ("backbone_mode", "half"),
        ("num_masks", 0),
        ("relevance", "rank"),
    ):
        config = fex_text.TextFexConfig(num_classes=3, **{field: value})
        with pytest.raises(ValueError, match=field):
            fex_text.make(config, fns, params, module=module, backbone_params=params)
    ids, mask = make_batch(ROWS)
    with pytest.raises(ValueError, match="attention_mask"):
        learned.explain(fex_params, {"input_ids": ids})
    with pytest.raises(ValueError, match="target"):
        learned.explain(fex_params, (ids, mask), target=[0, 1])
    with pytest.raises(ValueError, match="input_ids"):
        learned.explain(fex_params, (np.full_like(ids, 99), mask))


def test_runs_load_round_trips_text_fex_bit_identically(tiny_fex, tmp_path):
    from fastxai_jax.explainers.learned import runs

    fns, _, module, learned, params = tiny_fex
    ids, mask = make_batch(ROWS)
    # Perturbed heads, so the round trip is not checked on fresh-init params only.
    params = jax.tree.map(lambda a: a + 0.01 * np.sign(np.asarray(a)), params)
    runs.save(tmp_path, Trained("fex", learned, params, 3))
    loaded = runs.load(tmp_path, fns=fns, module=module)
    assert loaded.method == "fex" and loaded.num_classes == 3
    assert loaded.explainer.config == learned.config
    for target in (None, 2):
        np.testing.assert_array_equal(
            np.asarray(loaded.explain((ids, mask), target)),
            np.asarray(learned.explain(params, (ids, mask), target)),
        )
    direct = fex_text.load(tmp_path, fns, module=module)
    np.testing.assert_array_equal(
        np.asarray(direct.explain((ids, mask))), np.asarray(learned.explain(params, (ids, mask)))
    )
    with pytest.raises(ValueError, match="fns"):
        runs.load(tmp_path, module=module)
    with pytest.raises(ValueError, match="module"):
        runs.load(tmp_path, fns=fns)


def test_loo_advantage_is_reward_minus_the_other_masks_mean():
    reward = jnp.asarray([[1.0, 2.0, 3.0, 6.0], [0.5, 0.5, 0.5, 0.5]])
    expected = [[1 - 11 / 3, 2 - 10 / 3, 3 - 3.0, 6 - 2.0], [0.0] * 4]
    np.testing.assert_allclose(fex_text.loo_advantage(reward), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="num_masks"):
        fex_text.TextFexConfig(num_classes=2, num_masks=1, advantage="loo").validate()
    with pytest.raises(ValueError, match="advantage"):
        fex_text.TextFexConfig(num_classes=2, advantage="mean").validate()
