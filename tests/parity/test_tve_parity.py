"""TVE parity with the authors' code (guanchuwang/TVE) on a committed reference.

``tests/fixtures/parity/tve_head.npz`` holds what the authors' ``GenericExplainer``
computed with tiny stand-in backbones (``experiments/parity/tve_refs.py`` says how
to regenerate it; ``/work/notes/refs_spec.md`` §3 what each key means): the
two heads' forward from fixed weights, the pre-training loss and its gradient on
a fixed batch and cell draw, and ``generate_attr``'s heatmaps. Only the
backbones' outputs enter (they are saved). Deterministic float32: 1e-4
relative (1e-5 absolute on O(1) numbers).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers.learned import tve
from fastxai_jax.models.tve_head import TveAuthorsHead, convert_authors_head

FIXTURE = Path(__file__).parents[1] / "fixtures" / "parity" / "tve_head.npz"
RTOL, ATOL = 1e-4, 1e-5
S, R, E, LAYERS = 4, 1, 8, 3


def _close(ours, ref, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=rtol, atol=atol)


@functools.cache
def _refs():
    with np.load(FIXTURE) as refs:
        return {k: refs[k] for k in refs.files}


def _sub(prefix):
    return {k[len(prefix) :]: v for k, v in _refs().items() if k.startswith(prefix)}


def _config(**kw):
    authors = {"cell_order": "column", "normalise": "row", **kw}
    return tve.TveConfig(
        embed_dim=E, image_size=16, grid=S, radius=R, patch_size=4, head_layers=LAYERS,
        encoder_family="identity", **authors,
    )  # fmt: skip


def _heads():
    return {b: convert_authors_head(_sub(f"head_{b}/"), LAYERS) for b in ("pos", "neg")}


def _forward(params, branch):
    head = TveAuthorsHead(S * S, E, LAYERS)
    return head.apply({"params": params[branch]}, jnp.asarray(_refs()[f"backbone_{branch}_out"]))


def test_head_forward():
    assert int(_refs()["heatmap_size"]) == S and int(_refs()["perturb_radius"]) == R
    params = _heads()
    for branch in ("pos", "neg"):
        out = _forward(params, branch)
        assert out.shape == (3, S * S + 1, E)  # the extra token last
        _close(out, _refs()[f"head_{branch}_out"])


def test_perturbed_images_column_major_cells():
    refs = _refs()
    cells = jnp.asarray(refs["center_y"] * S + refs["center_x"])[:, None]  # their idx
    x = jnp.asarray(refs["pixel_values"].transpose(0, 2, 3, 1))  # normalised: fill 0

    def flat(params, images):  # an "encoder" returning the masked image itself
        del params
        return images.reshape(images.shape[0], -1)

    pos, neg = tve.cell_embeddings(_config(), flat, None, x, cells)
    _close(pos[:, 0], refs["perturbed_pos"].transpose(0, 2, 3, 1).reshape(3, -1))
    _close(neg[:, 0], refs["perturbed_neg"].transpose(0, 2, 3, 1).reshape(3, -1))
    # the paper's row-major order is the transposed square
    pos_row, _ = tve.cell_embeddings(_config(cell_order="row"), flat, None, x, cells)
    assert not np.allclose(pos_row, pos)


def test_loss_and_head_gradients():
    refs = _refs()
    idx = jnp.asarray(refs["center_y"] * S + refs["center_x"])
    rows = jnp.arange(3)

    def loss(params):
        hp, hn = _forward(params, "pos"), _forward(params, "neg")
        t_pos, t_neg = jnp.asarray(refs["target_pos"]), jnp.asarray(refs["target_neg"])
        return tve.tve_loss(hp[rows, idx], hn[rows, idx], t_pos, t_neg)

    value, grads = jax.value_and_grad(loss)(_heads())
    _close(value, refs["loss"])
    for branch in ("pos", "neg"):
        ref = convert_authors_head(_sub(f"grad_head_{branch}/"), LAYERS)
        flat_ref = jax.tree_util.tree_leaves_with_path(ref)
        flat_ours = dict(jax.tree_util.tree_leaves_with_path(grads[branch]))
        assert len(flat_ref) == 18
        # absolute tolerance on the branch's gradient scale: the input layer's token
        # bias feeds a LayerNorm, so its gradient is float noise (≈1e-7) on both sides
        scale = max(float(np.abs(leaf).max()) for _, leaf in flat_ref)
        for path, leaf in flat_ref:
            _close(flat_ours[path], leaf, atol=1e-5 * scale)


@pytest.mark.parametrize("lam_neg", [0, 1])
@pytest.mark.parametrize("pool", [False, True])
def test_heatmap(lam_neg, pool):
    refs = _refs()
    params = _heads()
    pos, neg = _forward(params, "pos")[:, :-1], _forward(params, "neg")[:, :-1]
    head = {"kernel": jnp.asarray(refs["classifier/weight"].T), "bias": refs["classifier/bias"]}
    target = jnp.asarray(refs["class_index_pred"])
    config = _config(lam_neg=float(lam_neg), pool=pool)
    ours = tve.transfer_map(config, pos, neg, head, target)  # image layout
    name = f"heatmap_pooling_lneg{lam_neg}" if pool else f"heatmap_lneg{lam_neg}"
    ref = refs[name].transpose(0, 2, 1)  # theirs is in token layout: heatmap_visual
    _close(ours, ref)
    # the paper's per-map min-max is not their map
    per_map = tve.transfer_map(_config(lam_neg=float(lam_neg), pool=pool, normalise="map"),
                               pos, neg, head, target)  # fmt: skip
    assert np.abs(np.asarray(per_map) - ref).max() > 0.1


def _relative(ours, ref) -> float:
    ref = np.asarray(ref, np.float64)
    return float(np.abs(np.asarray(ours, np.float64) - ref).max() / np.abs(ref).max())


def parity_rows() -> dict[str, float]:
    """Max relative difference (to the reference's largest magnitude) per component."""
    refs, params = _refs(), _heads()
    rows = {f"head forward ({b})": _relative(_forward(params, b), refs[f"head_{b}_out"])
            for b in ("pos", "neg")}  # fmt: skip
    idx, three = jnp.asarray(refs["center_y"] * S + refs["center_x"]), jnp.arange(3)

    def loss(p):
        hp, hn = _forward(p, "pos"), _forward(p, "neg")
        return tve.tve_loss(hp[three, idx], hn[three, idx], refs["target_pos"], refs["target_neg"])

    value, grads = jax.value_and_grad(loss)(params)
    rows["pre-training loss"] = _relative(value, refs["loss"])
    for b in ("pos", "neg"):
        ref = convert_authors_head(_sub(f"grad_head_{b}/"), LAYERS)
        ours = jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(grads[b])])
        rows[f"loss gradient ({b} head)"] = _relative(
            ours, jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(ref)])
        )
    pos, neg = _forward(params, "pos")[:, :-1], _forward(params, "neg")[:, :-1]
    head = {"kernel": jnp.asarray(refs["classifier/weight"].T), "bias": refs["classifier/bias"]}
    for lam in (0, 1):
        for pool, name in ((False, "heatmap"), (True, "heatmap_pooling")):
            ours = tve.transfer_map(_config(lam_neg=float(lam), pool=pool), pos, neg, head,
                                    jnp.asarray(refs["class_index_pred"]))  # fmt: skip
            rows[f"{name}, lambda_neg={lam}"] = _relative(
                ours, refs[f"{name}_lneg{lam}"].transpose(0, 2, 1)
            )
    return rows


if __name__ == "__main__":
    from _refs import print_parity_table

    print_parity_table("TVE", parity_rows)
