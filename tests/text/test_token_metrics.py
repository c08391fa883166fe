"""Token metrics: pointing game, token-F1, insertion/deletion on a linear bag model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers.tokens import content_mask
from fastxai_jax.metrics import tokens as tm
from tests.text.conftest import MASK, linear_bag, make_batch


def test_pointing_game_and_token_f1_by_hand():
    attribution = np.array([[9.0, 0.1, 0.8, 0.3, 5.0], [9.0, 0.7, 0.2, 0.9, 0.0]])
    valid = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 1, 0]], bool)  # specials excluded
    evidence = np.array([[0, 0, 1, 1, 0], [0, 1, 0, 0, 0]], bool)
    # Row 0: top valid token is 2 (evidence); row 1: top valid is 3 (not evidence).
    np.testing.assert_array_equal(tm.token_pointing_game(attribution, evidence, valid), [1, 0])
    # Row 0 top-2 = {2, 3} = evidence -> 1; row 1 top-1 = {3} -> 0.
    np.testing.assert_allclose(tm.token_f1(attribution, evidence, valid), [1.0, 0.0])
    # k=2: row 1 picks {3, 1}: precision 1/2, recall 1 -> F1 2/3.
    np.testing.assert_allclose(tm.token_f1(attribution, evidence, valid, k=2), [1.0, 2 / 3])
    with pytest.raises(ValueError, match="evidence"):
        tm.token_pointing_game(attribution, evidence[:, :3], valid)
    with pytest.raises(ValueError, match="k must"):
        tm.token_f1(attribution, evidence, valid, k=0)


def _two_class_bag():
    fns, params = linear_bag(classes=2, seed=3)
    return fns, params


def test_deletion_curve_matches_a_hand_written_loop():
    """Consistency check (same protocol, written out): deletion with [MASK] fill."""
    fns, params = _two_class_bag()
    ids, mask = make_batch([[5, 9, 12, 7, 11], [8, 6]])
    attribution = jnp.asarray(np.random.default_rng(0).normal(size=ids.shape), jnp.float32)
    target = np.array([1, 0])
    curve, auc = tm.token_insertion_deletion(
        fns, params, ids, mask, attribution, target, mode="deletion", num_steps=4
    )
    content = np.asarray(content_mask(fns, ids, mask))
    e_table, w = np.asarray(params["E"]), np.asarray(params["W"])
    for b in range(2):
        order = [t for t in np.argsort(-np.asarray(attribution[b]), kind="stable") if content[b, t]]
        for s, frac in enumerate(np.linspace(0, 1, 5)):
            removed = order[: int(np.round(frac * len(order)))]
            row = ids[b].copy()
            row[removed] = MASK
            logits = (e_table[row] * mask[b][:, None]).sum(0) @ w
            prob = np.exp(logits - logits.max())
            np.testing.assert_allclose(curve[b, s], prob[target[b]] / prob.sum(), rtol=1e-5)
    expected = (np.asarray(curve)[:, 1:] + np.asarray(curve)[:, :-1]).sum(1) / 8
    np.testing.assert_allclose(auc, expected, rtol=1e-6)


def test_oracle_ranking_has_the_lowest_deletion_and_highest_insertion_auc():
    fns, params = _two_class_bag()
    ids, mask = make_batch([[5, 9, 12, 7, 11, 14, 4, 16]])
    target = np.array([1])
    w = np.asarray(params["W"])
    e = np.asarray(params["E"])
    # p(target) is monotone in Σ_t (e_t − e_mask)·(w_1 − w_0): removing the largest
    # terms first is the optimal deletion order.
    oracle = jnp.asarray((e[ids] - e[MASK]) @ (w[:, 1] - w[:, 0]))
    rng = np.random.default_rng(1)
    for mode, better in (("deletion", np.less_equal), ("insertion", np.greater_equal)):
        _, best = tm.token_insertion_deletion(
            fns, params, ids, mask, oracle, target, mode=mode, num_steps=8
        )
        for _ in range(5):
            other = jnp.asarray(rng.normal(size=ids.shape), jnp.float32)
            _, auc = tm.token_insertion_deletion(
                fns, params, ids, mask, other, target, mode=mode, num_steps=8
            )
            assert better(float(best[0]), float(auc[0]) + (1e-6 if mode == "deletion" else -1e-6))


def test_curve_endpoints_and_padding_invariance():
    fns, params = _two_class_bag()
    ids, mask = make_batch([[5, 9, 12], [7, 11, 4, 13, 15]])
    attribution = jax.random.normal(jax.random.key(0), ids.shape)
    full = jax.nn.softmax(fns.apply_embeds(params, fns.embed(params, jnp.asarray(ids)), mask))
    target = np.array([0, 1])
    dele, _ = tm.token_insertion_deletion(fns, params, ids, mask, attribution, target)
    ins, _ = tm.token_insertion_deletion(
        fns, params, ids, mask, attribution, target, mode="insertion"
    )
    np.testing.assert_allclose(dele[:, 0], full[np.arange(2), target], rtol=1e-6)
    np.testing.assert_allclose(ins[:, -1], full[np.arange(2), target], rtol=1e-6)
    np.testing.assert_allclose(ins[:, 0], dele[:, -1], rtol=1e-6)
    alone_ids, alone_mask = make_batch([[5, 9, 12]])
    alone, _ = tm.token_insertion_deletion(
        fns, params, alone_ids, alone_mask, attribution[:1, :5], target[:1]
    )
    np.testing.assert_allclose(dele[:1], alone, rtol=1e-6)
    with pytest.raises(ValueError, match="attribution"):
        tm.token_insertion_deletion(fns, params, ids, mask, attribution[:, :3])
    with pytest.raises(ValueError, match="mode"):
        tm.token_insertion_deletion(fns, params, ids, mask, attribution, mode="both")
