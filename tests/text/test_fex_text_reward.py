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
