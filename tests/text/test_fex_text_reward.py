"""FEX over tokens: the per-mask reward in closed form (the paper's and ``reward="deletion"``)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers.learned import _fex_text_reward, fex_text
from fastxai_jax.explainers.learned._trained import Trained
from fastxai_jax.explainers.tokens import content_mask
from tests.text.conftest import CLS, SEP, linear_bag, make_batch

ROWS = [[5, 9, 12], [7, 4]]


def _softmax(z):
    z = np.exp(z - z.max())
    return z / z.sum()


def _prob(params, tokens, cls):
    """``p(cls | tokens)`` of the linear bag with ``fill="drop"``: the kept tokens' sum."""
    embeds = np.asarray(params["E"])[list(tokens)].sum(0) if tokens else np.zeros(6)
    return _softmax(embeds @ np.asarray(params["W"]))[cls]


@pytest.mark.parametrize(
    "options",
    [
        dict(reward="sufficiency", reward_scale="size", reward_baseline="none"),
        dict(reward="deletion", reward_scale="none", reward_baseline="none"),
        dict(reward="deletion", reward_scale="size", reward_baseline="empty"),
    ],
)
def test_reward_equals_the_hand_computed_value_on_a_linear_bag(options):
    fns, params = linear_bag()
    ids, mask = make_batch(ROWS)
    content = content_mask(fns, ids, mask)
    # Two masks per sentence over the content tokens (specials and padding always 1).
    chosen = [[[1, 0, 1], [0, 0, 0]], [[1, 1, 0], [0, 1, 0]]]
    keep = np.ones((2, 2, ids.shape[1]), np.float32)
    for b, row in enumerate(ROWS):
        keep[b, :, 1 : 1 + len(row)] = np.asarray(chosen[b])[:, : len(row)]
    classes = jnp.asarray([2, 0])
    config = fex_text.TextFexConfig(num_classes=3, num_masks=2, fill="drop", **options)

    def target_probs(i, a):
        return jax.nn.softmax(fns.apply_embeds(params, fns.embed(params, i), a), axis=-1)

    reward, kept_prob = _fex_text_reward.mask_rewards(
        target_probs, fns, jnp.asarray(ids), jnp.asarray(mask), content, jnp.asarray(keep),
        classes, config,
    )  # fmt: skip
    for b, row in enumerate(ROWS):
        cls, n = int(classes[b]), len(row)
        for k in range(2):
            m = chosen[b][k][:n]
            kept = [CLS, *[t for t, on in zip(row, m, strict=True) if on], SEP]
            removed = [CLS, *[t for t, on in zip(row, m, strict=True) if not on], SEP]
            expected = _prob(params, kept, cls)
            assert kept_prob[b, k] == pytest.approx(expected, rel=1e-5)
            if options["reward_baseline"] == "empty":
                expected -= _prob(params, [CLS, SEP], cls)
            if options["reward"] == "deletion":
                expected -= _prob(params, removed, cls)
            if options["reward_scale"] == "size":
                expected *= n / (sum(m) + 1)
            assert reward[b, k] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_loss_reports_the_deletion_reward_of_its_sampled_masks(tiny_bert_module):
    """``loss_fn``'s mean reward is :func:`mask_rewards` on the masks its key draws."""
    module, backbone = tiny_bert_module
    fns, params = linear_bag()
    ids, mask = make_batch(ROWS)
    batch = {"input_ids": ids, "attention_mask": mask}
    config = fex_text.TextFexConfig(
        num_classes=3, num_masks=4, fill="drop", reward="deletion", reward_scale="none"
    )
    learned = fex_text.make(config, fns, params, module=module, backbone_params=backbone)
    fex_params = learned.init_params(jax.random.key(0), batch)
    key = jax.random.key(3)
    _, metrics = learned.loss_fn(fex_params, batch, key)
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)
    content = content_mask(fns, ids_j, mask_j)

    def target_probs(i, a):
        return jax.nn.softmax(fns.apply_embeds(params, fns.embed(params, i), a), axis=-1)

    classes = jnp.argmax(target_probs(ids_j, mask_j), -1)
    actor, _ = fex_text.forward(config, module, fex_params, ids_j, mask_j)
    logits = jnp.where(content, fex_text.policy_logits(actor, classes, "sigmoid"), fex_text._OFF)
    logits = jnp.broadcast_to(logits[:, None], (2, 4, ids.shape[1]))
    keep = (jax.random.bernoulli(key, jax.nn.sigmoid(logits)) | ~content[:, None]).astype(
        jnp.float32
    )
    reward, kept_prob = _fex_text_reward.mask_rewards(
        target_probs, fns, ids_j, mask_j, content, keep, classes, config
    )
    assert float(metrics["reward"]) == pytest.approx(float(jnp.mean(reward)), rel=1e-5)
    assert float(metrics["target_prob_masked"]) == pytest.approx(float(jnp.mean(kept_prob)))
    # The deletion reward is below the sufficiency one (p(ŷ | x ⊙ (1 − m)) > 0).
    assert float(jnp.mean(reward)) < float(jnp.mean(kept_prob))


def test_reward_option_is_validated_and_saved_with_the_run(tiny_bert_module, tmp_path):
    from fastxai_jax.explainers.learned import runs

    with pytest.raises(ValueError, match="reward"):
        fex_text.TextFexConfig(num_classes=2, reward="comprehensive").validate()
    assert fex_text.TextFexConfig(num_classes=2).reward == "sufficiency"  # the paper's
    module, backbone = tiny_bert_module
    fns, params = linear_bag()
    config = fex_text.TextFexConfig(num_classes=3, num_masks=2, reward="deletion")
    learned = fex_text.make(config, fns, params, module=module, backbone_params=backbone)
    ids, mask = make_batch(ROWS)
    fex_params = learned.init_params(jax.random.key(0), {"input_ids": ids, "attention_mask": mask})
    runs.save(tmp_path, Trained("fex", learned, fex_params, 3))
    loaded = runs.load(tmp_path, fns=fns, module=module)
    assert loaded.explainer.config == config
    assert loaded.explainer.config != dataclasses.replace(config, reward="sufficiency")


@pytest.mark.slow  # compiles and runs 400 PPO updates on the tiny BERT (~15 s alone)
def test_deletion_reward_ranks_tokens_by_their_closed_form_effect(tiny_bert_module):
    """On a linear bag (``fill="drop"``) a token's effect on the explained class is
    its logit contribution ``(E_t W)[ŷ] − mean_c (E_t W)[c]``: the trained map
    follows it (Spearman) and beats a random map on token deletion AUC."""
    import optax
    from scipy.stats import spearmanr

    from fastxai_jax.explainers.learned._update import make_trainer
    from fastxai_jax.metrics.tokens import token_insertion_deletion

    module, backbone = tiny_bert_module
    fns, params = linear_bag(vocab=20, classes=3, seed=2)
    params = {"E": params["E"] * 0.5, "W": params["W"]}  # probabilities off saturation
    rows = np.random.default_rng(0).integers(4, 20, size=(16, 6)).tolist()
    ids, mask = make_batch(rows)
    batch = {"input_ids": ids, "attention_mask": mask}
    config = fex_text.TextFexConfig(
        num_classes=3, num_masks=8, fill="drop", advantage="loo", reward_scale="none",
        reward="deletion", entropy_coef=0.03,
    )  # fmt: skip
    learned = fex_text.make(config, fns, params, module=module, backbone_params=backbone)
    init, update = make_trainer(learned, optax.adam(1e-2))
    state = init(jax.random.key(0), batch)
    update = jax.jit(update)
    for step in range(400):
        state, _ = update(state, batch, jax.random.key(step + 1))
    heat = np.asarray(learned.explain(state.params, (ids, mask)))
    content = np.asarray(content_mask(fns, ids, mask))
    noise = np.where(content, np.random.default_rng(9).uniform(size=ids.shape), 0.0)
    auc = {
        name: float(np.mean(token_insertion_deletion(fns, params, ids, mask, m, fill="drop")[1]))
        for name, m in (("fex", heat), ("random", noise))
    }
    assert auc["fex"] < auc["random"] - 0.1, auc  # measured 0.642 vs 0.785
    classes = np.argmax(fns.apply_embeds(params, fns.embed(params, ids), mask), -1)
    logit = np.asarray(params["E"])[ids] @ np.asarray(params["W"])  # [B, T, C]
    effect = logit[np.arange(len(rows)), :, classes] - logit.mean(-1)
    rho = np.mean([spearmanr(heat[b][content[b]], effect[b][content[b]])[0] for b in range(16)])
    assert rho > 0.3, rho  # measured 0.53


@pytest.mark.parametrize(
    ("options", "expected"),  # 2 sentences, K = 4: clean + K masks (+ K complements) (+ empty)
    [
        ({}, 2 * 5),
        ({"reward": "deletion"}, 2 * 9),
        ({"reward": "deletion", "reward_baseline": "empty"}, 2 * 10),
    ],
)
def test_training_step_queries_the_target_as_often_as_its_cost_says(
    tiny_bert_module, options, expected
):
    module, backbone = tiny_bert_module
    fns, params = linear_bag()
    rows_seen = []

    def counted(p, embeds, mask):
        rows_seen.append(embeds.shape[0])
        return fns.apply_embeds(p, embeds, mask)

    counting = fns._replace(apply_embeds=counted)
    config = fex_text.TextFexConfig(num_classes=3, num_masks=4, fill="drop", **options)
    learned = fex_text.make(config, counting, params, module=module, backbone_params=backbone)
    ids, mask = make_batch(ROWS)
    batch = {"input_ids": ids, "attention_mask": mask}
    fex_params = learned.init_params(jax.random.key(0), batch)
    rows_seen.clear()  # init checks the target's output shape
    learned.loss_fn(fex_params, batch, jax.random.key(1))
    assert sum(rows_seen) == config.target_queries_per_step(2) == expected
    assert learned.explain(fex_params, (ids, mask)).shape == ids.shape
    assert sum(rows_seen) == expected  # explain queries no target
