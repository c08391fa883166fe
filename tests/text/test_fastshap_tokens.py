"""FastSHAP over tokens: the sampler and normalisation against the image FastSHAP's,
an additive game's exact values, the learned-explainer contract, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fastxai_jax as fx
from fastxai_jax.explainers import registry
from fastxai_jax.explainers.learned import fastshap, fastshap_text
from fastxai_jax.explainers.learned._trained import Trained
from fastxai_jax.explainers.learned._update import make_update
from fastxai_jax.explainers.tokens import content_mask
from fastxai_jax.train.loop import TrainState
from tests.text.conftest import make_batch

ROWS = [[5, 9, 12, 7, 30, 41], [8, 8, 17], [44, 6, 21, 33]]


@pytest.fixture(scope="module")
def tiny_shap(tiny_bert, tiny_bert_module):
    """FastSHAP over tokens on the tiny BERT, its explainer a copy of the target's weights."""
    fns, target_params = tiny_bert
    module = tiny_bert_module[0]
    config = fastshap_text.TextFastShapConfig(num_classes=3, num_samples=4, fill="drop")
    learned = fastshap_text.make(
        config, fns, target_params, module=module, backbone_params=target_params
    )
    ids, mask = make_batch(ROWS)
    params = learned.init_params(jax.random.key(0), {"input_ids": ids, "attention_mask": mask})
    return fns, target_params, module, learned, params


def test_sampler_and_normalisation_equal_the_image_fastshap_on_full_player_sets(key):
    players = jnp.ones((9,), bool)
    np.testing.assert_array_equal(
        fastshap_text.sample_player_coalitions(key, players, 10),
        fastshap.sample_shapley_subsets(key, 9, 10),
    )
    phi = jax.random.normal(key, (9, 3))
    v_full, v_empty = jnp.array([0.7, 0.2, 0.1]), jnp.array([0.3, 0.3, 0.4])
    np.testing.assert_allclose(
        fastshap_text.efficiency_normalise_players(phi, players, v_full, v_empty),
        fastshap.efficiency_normalise(phi, v_full, v_empty),
        rtol=1e-6,
    )


def test_sampler_on_a_player_mask_pairs_complements_with_kernel_sizes(key):
    players = jnp.array([0, 1, 1, 0, 1, 1, 1, 0, 0], bool)  # d = 5
    subsets = np.asarray(fastshap_text.sample_player_coalitions(key, players, 4000))
    assert np.all(subsets[:, ~np.asarray(players)] == 0)
    np.testing.assert_array_equal(subsets[0::2] + subsets[1::2], np.tile(players, (2000, 1)))
    sizes = subsets[0::2].sum(1).astype(int)
    # p(k) ∝ 1/(k(d − k)), k = 1..4: (1/4, 1/6, 1/6, 1/4) / (5/6)
    freq = np.bincount(sizes, minlength=5)[1:] / sizes.size
    np.testing.assert_allclose(freq, [0.3, 0.2, 0.2, 0.3], atol=0.03)
    single = np.asarray(
        fastshap_text.sample_player_coalitions(key, jnp.array([0, 1, 0], bool), 4)
    )  # d = 1: the player and the empty set
    np.testing.assert_array_equal(single, [[0, 1, 0], [0, 0, 0]] * 2)


def test_additive_game_has_zero_loss_at_its_exact_values(key):
    """v(S) = v(∅) + Σ_{i∈S} a_i: the Shapley values are a, the efficiency
    normalisation leaves them unchanged, and FastSHAP's objective is 0 there only."""
    players = jnp.array([0, 1, 1, 1, 1, 0, 0], bool)
    a = jax.random.normal(key, (7, 2)) * players[:, None]
    v_empty = jnp.array([0.4, 0.6])
    subsets = fastshap_text.sample_player_coalitions(jax.random.key(5), players, 16)
    v_subsets = v_empty[None, :] + subsets @ a
    v_full = v_empty + jnp.sum(a, axis=0)
    exact = fastshap_text.efficiency_normalise_players(a, players, v_full, v_empty)
    np.testing.assert_allclose(exact, a, atol=1e-6)
    assert float(fastshap.fastshap_objective(exact, subsets, v_subsets, v_empty)) < 1e-12
    off = fastshap_text.efficiency_normalise_players(a.at[1, 0].add(0.5), players, v_full, v_empty)
    np.testing.assert_allclose(jnp.sum(off, axis=0), v_full - v_empty, rtol=1e-6)
    assert float(fastshap.fastshap_objective(off, subsets, v_subsets, v_empty)) > 1e-3


def test_explain_contract_one_trace_no_target_query(tiny_shap, monkeypatch):
    fns, _, module, learned, params = tiny_shap
    ids, mask = make_batch(ROWS)
    traces = []
    real = fastshap_text.player_values
    monkeypatch.setattr(fastshap_text, "player_values", lambda *a: (traces.append(1), real(*a))[1])
    fastshap_text._explain_jit.clear_cache()
    out = np.asarray(learned.explain(params, (ids, mask)))
    again = np.asarray(learned.explain(params, (ids[::-1].copy(), mask[::-1].copy())))
    assert len(traces) == 1
    content = np.asarray(content_mask(fns, ids, mask))
    assert out.shape == ids.shape and out.dtype == np.float32
    assert np.all(out[~content] == 0.0) and np.all(out[content] != 0.0)
    np.testing.assert_allclose(again, out[::-1], atol=1e-6)
    for row in range(len(ROWS)):
        alone = np.asarray(learned.explain(params, make_batch([ROWS[row]])))
        np.testing.assert_allclose(alone[0], out[row, : alone.shape[1]], atol=2e-5)
    # explain-only (no target at all) gives the same maps; target selects φ's class
    bare = fastshap_text.make(learned.config, None, None, module=module, vocab=fns)
    np.testing.assert_array_equal(bare.explain(params, (ids, mask)), out)
    assert learned.target_queries_per_explain == 0
    phi = np.asarray(real(learned.config, module, params, jnp.asarray(ids), jnp.asarray(mask)))
    for cls in range(3):
        expected = np.where(content, phi[..., cls], 0.0)
        got = learned.explain(params, (ids, mask), target=cls)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    chosen = np.argmax((phi * content[..., None]).sum(1), axis=-1)
    masked_phi = np.where(content[..., None], phi, 0.0)
    chosen_phi = np.take_along_axis(masked_phi, chosen[:, None, None], -1)[..., 0]
    np.testing.assert_allclose(out, chosen_phi, rtol=1e-5)
    # the table serves it as "fastshap" with a trained explainer, at no target pass
    trained = Trained("fastshap", learned, params, 3)
    np.testing.assert_array_equal(
        fx.attribute("fastshap", fns, None, (ids, mask), explainer=trained), out
    )
    assert registry.token_method_cost("fastshap") == fx.Cost(0, 0)


def test_normalised_values_are_efficient(tiny_shap):
    """Σ_t φ̃_t = p(x) − p(∅), p(∅) with every content token out of the attention."""
    fns, target_params, module, learned, params = tiny_shap
    ids, mask = make_batch(ROWS)
    phi = np.asarray(
        fastshap_text.normalised_values(
            learned.config, module, params, fns, target_params, (ids, mask)
        )
    )
    content = np.asarray(content_mask(fns, ids, mask))
    embeds = fns.embed(target_params, jnp.asarray(ids))
    full = jax.nn.softmax(fns.apply_embeds(target_params, embeds, jnp.asarray(mask)))
    empty = jax.nn.softmax(fns.apply_embeds(target_params, embeds, jnp.asarray(mask * ~content)))
    np.testing.assert_allclose(phi.sum(1), np.asarray(full - empty), atol=1e-5)
    assert np.all(phi[~content] == 0.0)


@pytest.mark.slow  # compiles the update and the gradient (~30 s on shared cores)
def test_update_is_one_value_and_grad_step(tiny_shap):
    fns, _, _, learned, params = tiny_shap
    ids, mask = make_batch(ROWS)
    batch = {"input_ids": ids, "attention_mask": mask}
    key = jax.random.key(7)
    optimizer = optax.sgd(0.05)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params)
    )
    new, metrics = jax.jit(make_update(learned.loss_fn, optimizer))(state, batch, key)
    grad_fn = jax.jit(jax.value_and_grad(learned.loss_fn, has_aux=True))
    (loss, _), grads = grad_fn(params, batch, key)
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5)
    assert float(loss) > 0.0
    expected = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
    for got, want in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["backbone"]))


def test_bad_config_and_inputs_name_the_argument(tiny_shap):
    fns, target_params, module, learned, params = tiny_shap
    for field, value in (
        ("fill", "blank"),
        ("num_samples", 3),
        ("num_samples", 0),
        ("backbone_mode", "half"),
        ("num_classes", 0),
    ):
        config = fastshap_text.TextFastShapConfig(**{"num_classes": 3, field: value})
        with pytest.raises(ValueError, match=field):
            fastshap_text.make(config, fns, target_params, module=module)
    ids, mask = make_batch(ROWS)
    with pytest.raises(ValueError, match="attention_mask"):
        learned.explain(params, {"input_ids": ids})
    with pytest.raises(ValueError, match="target"):
        learned.explain(params, (ids, mask), target=[0, 1])
    with pytest.raises(ValueError, match="input_ids"):
        learned.explain(params, (np.full_like(ids, 99), mask))
    with pytest.raises(ValueError, match="explainer"):  # a FEX run is not FastSHAP
        fx.attribute("fastshap", fns, None, (ids, mask), explainer=object())
    wrong = fastshap_text.TextFastShapConfig(num_classes=2)
    with pytest.raises(ValueError, match="fns must return logits"):
        bad = fastshap_text.make(
            wrong, fns, target_params, module=module, backbone_params=target_params
        )
        bad.init_params(jax.random.key(0), (ids, mask))


@pytest.mark.slow  # the MiniLM classifier (cached: seconds) and 80 FastSHAP steps (~3 min)
def test_short_run_on_the_text_benchmark_points_at_evidence_better_than_random(
    minilm_classifier,
):
    from fastxai_jax.data.text_benchmark import make_text_benchmark
    from fastxai_jax.explainers.learned import runs
    from fastxai_jax.metrics.tokens import token_insertion_deletion, token_pointing_game
    from fastxai_jax.models.minilm import load_minilm

    _, _, variables, fns, tokenizer = minilm_classifier
    encoder, encoder_params = load_minilm(num_classes=2)
    config = fastshap_text.TextFastShapConfig(
        num_classes=2, backbone_mode="frozen", fill="drop", num_samples=8
    )
    learned = fastshap_text.make(
        config, fns, variables, module=encoder, backbone_params=encoder_params
    )
    train = make_text_benchmark(256, tokenizer, seed=1)

    def batch_fn(step):
        rows = np.random.default_rng([0, int(step)]).choice(256, 8, replace=False)
        return {"input_ids": train.input_ids[rows], "attention_mask": train.attention_mask[rows]}

    trained, _ = runs.fit(
        "fastshap", learned, optax.adam(1e-3), batch_fn, sample_batch=batch_fn(0),
        num_steps=80, key=jax.random.key(0), progress=False,
    )  # fmt: skip
    test = make_text_benchmark(16, tokenizer, seed=4242)
    x = (test.input_ids, test.attention_mask)
    content = np.asarray(content_mask(fns, *x))
    maps = {
        "fastshap": fx.attribute("fastshap", fns, variables, x, explainer=trained),
        "random": fx.attribute("random", fns, variables, x, key=jax.random.key(0)),
    }
    pointing = {
        n: float(np.mean(token_pointing_game(a, test.evidence, content))) for n, a in maps.items()
    }
    deletion = {
        n: float(np.mean(token_insertion_deletion(fns, variables, *x, a, fill="drop")[1]))
        for n, a in maps.items()
    }
    assert pointing["fastshap"] > pointing["random"] + 0.15, pointing
    assert deletion["fastshap"] < deletion["random"], deletion


def test_runs_load_round_trips_text_fastshap_bit_identically(tiny_shap, tmp_path):
    from fastxai_jax.explainers.learned import runs

    fns, _, module, learned, params = tiny_shap
    ids, mask = make_batch(ROWS)
    # Perturbed, so the round trip is not checked on fresh-init params only.
    params = jax.tree.map(lambda a: a + 0.01 * np.sign(np.asarray(a)), params)
    runs.save(tmp_path, Trained("fastshap", learned, params, 3))
    loaded = runs.load(tmp_path, fns=fns, module=module, method="fastshap")
    assert loaded.method == "fastshap" and loaded.num_classes == 3
    assert loaded.explainer.config == learned.config
    for target in (None, 2):
        np.testing.assert_array_equal(
            np.asarray(loaded.explain((ids, mask), target)),
            np.asarray(learned.explain(params, (ids, mask), target)),
        )
    with pytest.raises(ValueError, match="fex"):
        runs.load(tmp_path, fns=fns, module=module, method="fex")
