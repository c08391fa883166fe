"""TVE (SPEC §5): loss, squares, transfer map, pre-training and transfer to unseen heads."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers.learned import make_trainer, tve
from fastxai_jax.models.tve_head import TveHead
from fastxai_jax.train.loop import fit
from fastxai_jax.train.sharding import data_mesh


def test_loss_hand_computed():
    pred_pos = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    pred_neg = jnp.array([[0.0, 1.0], [1.0, 1.0]])
    t_pos = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    t_neg = jnp.array([[0.0, 0.0], [1.0, 3.0]])
    # pos: (0 + 4 + 1 + 1)/4 = 1.5; neg: (0 + 1 + 0 + 4)/4 = 1.25
    np.testing.assert_allclose(tve.tve_loss(pred_pos, pred_neg, t_pos, t_neg), 2.75, rtol=1e-6)


def test_square_masks():
    masks = tve.square_masks(jnp.array([0, 5]), grid=4, radius=1, image_size=8)
    # cell 0 (row 0, col 0): cells rows 0-1, cols 0-1 → pixels [0:4, 0:4]
    expected0 = np.zeros((8, 8))
    expected0[:4, :4] = 1
    np.testing.assert_array_equal(masks[0], expected0)
    # cell 5 (row 1, col 1): rows 0-2, cols 0-2 → pixels [0:6, 0:6]
    expected1 = np.zeros((8, 8))
    expected1[:6, :6] = 1
    np.testing.assert_array_equal(masks[1], expected1)


def test_transfer_map_hand_computed():
    config = tve.TveConfig(embed_dim=2, image_size=8, grid=2, radius=0, patch_size=4)
    pos = jnp.array([[[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]])  # [1, 4 cells, E=2]
    head = {"kernel": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "bias": jnp.array([0.5, 0.0])}
    # class 0 logits per cell: 1.5, 0.5, 2.5, 0.5 → min-max: 0.5, 0, 1, 0
    out = tve.transfer_map(config, pos, pos, head, jnp.array([0]))
    np.testing.assert_allclose(out[0], [[0.5, 0.0], [1.0, 0.0]], atol=1e-6)
    # radius 1 on a 2×2 grid: every window covers all cells → constant → zeros
    config1 = tve.TveConfig(embed_dim=2, image_size=8, grid=2, radius=1, patch_size=4)
    np.testing.assert_allclose(tve.transfer_map(config1, pos, pos, head, jnp.array([0])), 0.0)
    # λ_neg subtracts the neg branch
    config_neg = tve.TveConfig(
        embed_dim=2, image_size=8, grid=2, radius=0, patch_size=4, lam_pos=0.0, lam_neg=1.0
    )
    out = tve.transfer_map(config_neg, pos, pos, head, jnp.array([0]))
    np.testing.assert_allclose(out[0], [[0.5, 1.0], [0.0, 1.0]], atol=1e-6)


def test_mixing_head_shapes_and_token_mixing(key):
    head = TveHead(num_cells=9, embed_dim=5, hidden=8, num_layers=3)
    tokens = jax.random.normal(key, (2, 16, 6))
    params = head.init(key, tokens)
    out = head.apply(params, tokens)
    assert out.shape == (2, 9, 5)
    # every output cell depends on every input token (mixing along tokens)
    changed = head.apply(params, tokens.at[0, 3].set(jax.random.normal(key, (6,)) * 3.0))
    diff = np.abs(np.asarray(changed - out)).sum(-1)  # [2, 9]
    assert np.all(diff[0] > 1e-4) and np.all(diff[1] == 0)  # and never across the batch


def quadrant_encoder(params, x):
    """A fixed 'encoder': mean colour of each 8×8 quadrant, ``[B, 12]``."""
    del params
    q = x.reshape(x.shape[0], 2, 8, 2, 8, 3).mean(axis=(2, 4))
    return 10.0 * q.reshape(x.shape[0], 12)


def _quadrant_head(quadrant, channel):
    kernel = np.zeros((12, 2), np.float32)
    kernel[quadrant * 3 + channel, 0] = 5.0
    return {"kernel": jnp.asarray(kernel), "bias": jnp.zeros((2,))}


def test_pretrain_once_then_explain_two_unseen_heads():
    config = tve.TveConfig(
        embed_dim=12, image_size=16, grid=4, radius=0, patch_size=4, hidden_size=16, depth=1,
        num_heads=2, mlp_dim=32, head_hidden=32, head_layers=2, explainer_family="half",
        encoder_family="identity",
    )  # fmt: skip
    learned = tve.make(config, quadrant_encoder, None)
    init, update = make_trainer(
        learned, tve.default_optimizer(100, learning_rate=1e-2, warmup_frac=0.0)
    )
    images = jax.random.uniform(jax.random.key(0), (64, 16, 16, 3))
    state = init(jax.random.key(1), images[:2])
    state, history = fit(
        state, update, lambda s: images[(s % 4) * 16 : (s % 4) * 16 + 16],
        num_steps=100, key=jax.random.key(2), progress=False, mesh=data_mesh(8),
    )  # fmt: skip
    losses = np.array([h["loss"] for h in history])
    assert losses[-10:].mean() < 0.1 * losses[:5].mean(), losses
    x = images[:8]
    target = jnp.zeros((8,), jnp.int32)
    for quadrant, (rows, cols) in ((0, (slice(0, 8), slice(0, 8))), (3, (slice(8, 16),) * 2)):
        head = _quadrant_head(quadrant, channel=quadrant % 3)  # never seen in pre-training
        maps = np.asarray(tve.explain_with_head(config, state.params, x, head, target))
        inside = maps[:, rows, cols].mean()
        outside = (maps.sum() - maps[:, rows, cols].sum()) / (8 * 192)
        assert inside > outside + 0.2, (quadrant, inside, outside)


def test_oracle_embeddings_closed_form():
    """With a linear encoder (quadrant means, fill 0) the pos embedding of cell c is
    its 4×4 pixels' sum over 64 in c's quadrant, and pos + neg = the full image's."""
    config = tve.TveConfig(
        embed_dim=12, image_size=16, grid=4, radius=0, patch_size=4, encoder_family="identity"
    )
    x = jax.random.uniform(jax.random.key(3), (2, 16, 16, 3))
    pos, neg = tve.oracle_embeddings(config, quadrant_encoder, None, x)
    assert pos.shape == neg.shape == (2, 16, 12)
    xn = np.asarray(x)
    for c in (0, 5, 10, 15):
        r, q = divmod(c, 4)
        expected = np.zeros((2, 2, 2, 3), np.float32)
        expected[:, r // 2, q // 2] = (
            10.0 * xn[:, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4].sum((1, 2)) / 64
        )
        np.testing.assert_allclose(pos[:, c], expected.reshape(2, 12), rtol=1e-5, atol=1e-6)
    full = np.broadcast_to(quadrant_encoder(None, x)[:, None], pos.shape)
    np.testing.assert_allclose(pos + neg, full, rtol=1e-5, atol=1e-5)
    # the same embeddings the pre-training regresses onto, for sampled cells
    cells = jnp.array([[3, 9], [0, 15]])
    pos_s, neg_s = tve.cell_embeddings(config, quadrant_encoder, None, x, cells)
    index = jnp.arange(2)[:, None]
    np.testing.assert_allclose(pos_s, pos[index, cells], rtol=1e-6)
    np.testing.assert_allclose(neg_s, neg[index, cells], rtol=1e-6)


def test_validation():
    with pytest.raises(ValueError, match="grid"):
        tve.TveConfig(embed_dim=4, image_size=16, grid=5, patch_size=4).validate()
    config = tve.TveConfig(embed_dim=4, image_size=16, grid=4, patch_size=4)
    with pytest.raises(ValueError, match="head"):
        tve.explain_with_head(
            config,
            None,
            jnp.zeros((1, 16, 16, 3)),
            {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)},
        )


def test_local_head_init_maps_tokens_to_the_cells_under_them(key):
    from fastxai_jax.models.tve_head import local_mixing_matrix

    np.testing.assert_array_equal(local_mixing_matrix(9, 9), np.eye(9))
    # a 4×4 token grid onto a 2×2 cell grid: each cell averages its 2×2 tokens
    m = local_mixing_matrix(16, 4)
    expected = np.zeros((16, 4))
    for token in range(16):
        r, c = divmod(token, 4)
        expected[token, (r // 2) * 2 + c // 2] = 0.25
    np.testing.assert_allclose(m, expected)
    # a 2×2 token grid onto 3×3 cells: area weights, every cell a convex combination
    m = local_mixing_matrix(4, 9)
    np.testing.assert_allclose(m.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(m[:, 4], 0.25)  # the centre cell straddles all four tokens
    with pytest.raises(ValueError, match="square"):
        local_mixing_matrix(8, 4)
    # with local_init, a one-layer head's cell c depends only on token c at init
    head = TveHead(num_cells=9, embed_dim=5, hidden=8, num_layers=1, local_init=True)
    tokens = jax.random.normal(key, (1, 9, 6))
    params = head.init(key, tokens)
    out = head.apply(params, tokens)
    changed = head.apply(params, tokens.at[0, 3].multiply(-2.0))  # LayerNorm ignores shifts
    diff = np.abs(np.asarray(changed - out)).sum(-1)[0]
    assert diff[3] > 1e-3 and np.all(np.delete(diff, 3) == 0.0), diff
    with pytest.raises(ValueError, match="head_init"):
        tve.TveConfig(embed_dim=4, image_size=16, grid=4, patch_size=4, head_init="eye").validate()


@pytest.mark.parametrize(
    "options, name",
    [
        ({"arch": "twin"}, "arch"),
        ({"cell_order": "diagonal"}, "cell_order"),
        ({"normalise": "column"}, "normalise"),
        ({"head_init": "local"}, "head_init"),  # the authors' head has no locality init
        ({"arch": "shared", "head_init": "local", "cell_order": "column"}, "head_init"),
        ({"head_layers": 0}, "head_layers"),
        ({"pool": 1}, "pool"),
    ],
)
def test_option_validation(options, name):
    with pytest.raises(ValueError, match=name):
        tve.TveConfig(embed_dim=4, image_size=16, grid=4, patch_size=4, **options).validate()


def test_authors_arch_has_two_backbones_and_column_order_transposes(key):
    config = tve.TveConfig(
        embed_dim=3, image_size=8, grid=2, radius=0, patch_size=4, hidden_size=8, depth=1,
        num_heads=2, mlp_dim=8, head_layers=2,
    )  # fmt: skip
    params = tve.init_params(config, key)
    assert set(params) == {"backbone", "backbone_neg", "pos", "neg"}
    # the head sees CLS + 4 patch tokens and emits 4 cells + the extra token (last)
    assert params["pos"]["input"]["dense2"]["kernel"].shape == (5, 5)
    pos, neg = tve.predict_embeddings(config, params, jax.random.uniform(key, (2, 8, 8, 3)))
    assert pos.shape == neg.shape == (2, 4, 3)
    # cell_order="column": token k is cell (row k % S, col k // S); maps come back in
    # image layout, i.e. the row-order map of the transposed token grid
    pos_t = pos.reshape(2, 2, 2, 3).transpose(0, 2, 1, 3).reshape(2, 4, 3)
    head = {"kernel": jax.random.normal(key, (3, 2)), "bias": jnp.zeros(2)}
    target = jnp.array([0, 1])
    column = dataclasses.replace(config, cell_order="column")
    np.testing.assert_allclose(
        tve.transfer_map(column, pos, pos, head, target),
        tve.transfer_map(config, pos_t, pos_t, head, target),
        atol=1e-6,
    )
    # the same cell's square: column index k ↔ row index (k % S)·S + k // S
    np.testing.assert_array_equal(
        tve.square_masks(jnp.array([1]), 2, 0, 8, "column"),
        tve.square_masks(jnp.array([2]), 2, 0, 8, "row"),
    )
