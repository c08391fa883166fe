"""Token attributions: closed forms, IG completeness, padding, batching, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers import rise, tokens
from tests.text.conftest import linear_bag, make_batch

ROWS = [[5, 9, 12, 7, 30, 41], [8, 8, 17], [44, 6, 21, 33]]


def _methods(key):
    return {
        "saliency": lambda f, p, i, m: tokens.token_saliency(f, p, i, m),
        "input_x_gradient": lambda f, p, i, m: tokens.token_input_x_gradient(f, p, i, m),
        "ig_pad": lambda f, p, i, m: tokens.token_integrated_gradients(f, p, i, m, num_steps=8),
        "ig_zero": lambda f, p, i, m: tokens.token_integrated_gradients(
            f, p, i, m, baseline="zero", num_steps=8
        ),
        "smoothgrad": lambda f, p, i, m: tokens.token_smoothgrad(
            f, p, i, m, key=key, num_samples=4
        ),
        "mfaba": lambda f, p, i, m: tokens.token_mfaba(f, p, i, m, num_steps=5),
        "rise_mask": lambda f, p, i, m: tokens.token_rise(
            f, p, i, m, key=key, num_masks=64, chunk_size=32
        ),
        "rise_pad": lambda f, p, i, m: tokens.token_rise(
            f, p, i, m, key=key, num_masks=64, chunk_size=32, fill="pad"
        ),
        "rise_drop": lambda f, p, i, m: tokens.token_rise(
            f, p, i, m, key=key, num_masks=64, chunk_size=32, fill="drop"
        ),
    }


def test_saliency_and_input_x_gradient_closed_form_on_linear_bag():
    fns, params = linear_bag()
    ids, mask = make_batch([[5, 9, 12], [7]])
    target = np.array([2, 0])
    w = np.asarray(params["W"])[:, target].T  # [B, D]
    sal = tokens.token_saliency(fns, params, ids, mask, target)
    expected = np.linalg.norm(w, axis=-1)[:, None] * mask
    np.testing.assert_allclose(sal, expected, rtol=1e-6, atol=0)
    ixg = tokens.token_input_x_gradient(fns, params, ids, mask, target)
    e = np.asarray(params["E"])[ids]
    np.testing.assert_allclose(ixg, np.einsum("btd,bd->bt", e, w) * mask, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("baseline", ["pad", "zero"])
def test_ig_completeness_within_one_percent_at_256_steps(tiny_bert, baseline):
    fns, params = tiny_bert
    ids, mask = make_batch(ROWS)
    target = np.array([0, 1, 2])
    attribution = tokens.token_integrated_gradients(
        fns, params, ids, mask, target, baseline=baseline, num_steps=256, batch_size=64
    )
    embeds = fns.embed(params, jnp.asarray(ids))
    base = tokens.ig_baseline_embeddings(fns, params, ids, mask, baseline)
    take = np.arange(3), target
    gap = (
        np.asarray(fns.apply_embeds(params, embeds, mask))[take]
        - np.asarray(fns.apply_embeds(params, base, mask))[take]
    )
    total = np.asarray(attribution).sum(axis=1)
    assert np.all(np.abs(gap) > 1e-3)
    np.testing.assert_array_less(np.abs(total - gap), 0.01 * np.abs(gap))


@pytest.mark.slow  # ~70 s: compiles nine methods
def test_padding_gets_exactly_zero_from_every_method(tiny_bert, key):
    fns, params = tiny_bert
    ids, mask = make_batch(ROWS)
    for name, method in _methods(key).items():
        out = np.asarray(method(fns, params, ids, mask))
        assert out.shape == ids.shape, name
        assert np.all(out[mask == 0] == 0.0), name
        assert np.all(np.isfinite(out)) and np.any(out[mask == 1] != 0), name


@pytest.mark.slow  # ~90 s: nine methods at four lengths
def test_batched_sentences_of_different_lengths_equal_each_alone(tiny_bert, key):
    fns, params = tiny_bert
    ids, mask = make_batch(ROWS)
    for name, method in _methods(key).items():
        batched = np.asarray(method(fns, params, ids, mask))
        for row, content in enumerate(ROWS):
            alone_ids, alone_mask = make_batch([content])
            alone = np.asarray(method(fns, params, alone_ids, alone_mask))[0]
            np.testing.assert_allclose(
                batched[row, : alone.shape[0]], alone, rtol=2e-4, atol=2e-5, err_msg=name
            )


@pytest.mark.parametrize("method", ["saliency", "ig_pad", "rise_mask"])
def test_padding_zero_and_batch_invariance_fast(tiny_bert, key, method):
    fns, params = tiny_bert
    rows = ROWS[:2]
    ids, mask = make_batch(rows)
    batched = np.asarray(_methods(key)[method](fns, params, ids, mask))
    assert np.all(batched[mask == 0] == 0.0)
    alone_ids, alone_mask = make_batch(rows[1:])
    alone = np.asarray(_methods(key)[method](fns, params, alone_ids, alone_mask))[0]
    np.testing.assert_allclose(batched[1, : alone.shape[0]], alone, rtol=2e-4, atol=2e-5)


def test_rise_never_scores_special_tokens_and_matches_its_estimator(tiny_bert, key):
    fns, params = tiny_bert
    ids, mask = make_batch([[5, 9, 12]])
    out = np.asarray(
        tokens.token_rise(fns, params, ids, mask, np.array([1]), key=key, num_masks=50,
                          chunk_size=16, p_keep=0.5)
    )  # fmt: skip
    assert out[0, 0] == 0 and out[0, 4] == 0
    # The estimator written out mask by mask: same keys, same bits.
    keys = jax.random.split(key, 50)
    keep = np.array(jax.vmap(lambda k: jax.random.bernoulli(k, 0.5, (fns.max_length,)))(keys))
    keep = keep[:, :5]
    keep[:, [0, 4]] = True
    masked = jnp.asarray(np.where(keep, ids[0], 3))  # [50, 5], [MASK] = 3
    logits = fns.apply_embeds(params, fns.embed(params, masked), np.repeat(mask, 50, axis=0))
    total = np.asarray(jax.nn.softmax(logits)[:, 1]) @ keep
    expected = total / (50 * 0.5)
    expected[[0, 4]] = 0
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)


def test_bad_input_raises_naming_the_argument(tiny_bert, key):
    fns, params = tiny_bert
    ids, mask = make_batch([[5, 9]])
    with pytest.raises(ValueError, match="input_ids.*vocabulary"):
        tokens.token_saliency(fns, params, ids + 60, mask)
    with pytest.raises(ValueError, match="attention_mask is required"):
        tokens.token_saliency(fns, params, ids, None)
    with pytest.raises(ValueError, match="attention_mask must have"):
        tokens.token_saliency(fns, params, ids, mask[:, :-1])
    with pytest.raises(ValueError, match="attention_mask must hold"):
        tokens.token_saliency(fns, params, ids, mask * 2)
    long_ids, long_mask = make_batch([list(range(4, 30))])
    with pytest.raises(ValueError, match="input_ids has T=28.*24 position"):
        tokens.token_integrated_gradients(fns, params, long_ids, long_mask)
    with pytest.raises(ValueError, match="input_ids must be an int"):
        tokens.token_saliency(fns, params, ids.astype(np.float32), mask)
    with pytest.raises(ValueError, match="target holds class indices outside"):
        tokens.token_saliency(fns, params, ids, mask, np.array([3]))
    with pytest.raises(ValueError, match="fill"):
        tokens.token_rise(fns, params, ids, mask, key=key, fill="unk")
    with pytest.raises(ValueError, match="baseline"):
        tokens.token_integrated_gradients(fns, params, ids, mask, baseline="mean")
    # Text passed to an image-only method.
    with pytest.raises(ValueError, match="x must have rank 4"):
        rise.rise(lambda p, x: x, params, jnp.asarray(ids), jnp.zeros((1,), jnp.int32), key=key)
