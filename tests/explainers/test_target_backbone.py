"""``backbone="target"`` for FastSHAP and TVE, and TVE's ``cells_per_image``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fastxai_jax.explainers._masks import apply_mask, fill_value_01
from fastxai_jax.explainers.learned import _backbone, fastshap, make_trainer, runs, tve
from fastxai_jax.models import make_apply_fn


class TinyBnCnn(nn.Module):
    """Conv → BatchNorm → ReLU → 2×2 pool (4×4 map for 8×8 input) → mean → Dense."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Conv(4, (3, 3), name="conv")(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(h))
        h = nn.avg_pool(h, (2, 2), (2, 2))
        pooled = jnp.mean(h, axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="head")(pooled)
        return logits, {"features": {"conv_last": h}, "pre_logits": pooled}


@pytest.fixture(scope="module")
def target():
    module = TinyBnCnn()
    x = jax.random.uniform(jax.random.key(0), (6, 8, 8, 3))
    variables = module.init(jax.random.key(1), x)
    # non-trivial running statistics, to see that they are copied and then frozen
    variables = {
        "params": variables["params"],
        "batch_stats": {"bn": {"mean": jnp.full((4,), 0.1), "var": jnp.full((4,), 2.0)}},
    }
    return module, variables, make_apply_fn(module, "half"), x


def _fastshap_config(**overrides):
    options = dict(
        num_classes=3, image_size=8, patch_size=2, backbone="target", target_family="half",
        num_samples=4,
    )  # fmt: skip
    return fastshap.FastShapConfig(**{**options, **overrides})


def test_fastshap_target_backbone_copies_and_freezes_statistics(target):
    module, variables, apply_fn, x = target
    config = _fastshap_config()
    learned = fastshap.make(config, apply_fn, variables, module=module)
    init, update = make_trainer(
        learned, fastshap.default_optimizer(5, learning_rate=1e-2, warmup_frac=0.0)
    )
    state = init(jax.random.key(2), x)
    # the backbone starts as an exact copy of the target's variables
    for a, b in zip(
        jax.tree.leaves(state.params["backbone"]), jax.tree.leaves(variables), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # players = the 4×4 feature cells; φ is the head on those cells' features
    tokens, hw = _backbone.feature_tokens(module, variables, x, "half", "conv_last")
    assert hw == (4, 4) and tokens.shape == (6, 16, 4)
    phi = fastshap.player_values(config, state.params, x, module)
    assert phi.shape == (6, 16, 3)
    maps = learned.explain(state.params, x, jnp.zeros((6,), jnp.int32), upsample="none")
    np.testing.assert_allclose(
        np.asarray(maps), np.asarray(phi[:, :, 0]).reshape(6, 4, 4), rtol=1e-5, atol=1e-6
    )
    new, _ = update(state, x, jax.random.key(3))
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new.params, state.params)
    assert moved["backbone"]["params"]["conv"]["kernel"] > 0  # the trunk is fine-tuned
    assert moved["backbone"]["batch_stats"]["bn"]["mean"] == 0.0  # statistics are not
    assert moved["backbone"]["batch_stats"]["bn"]["var"] == 0.0


def test_target_backbone_errors(target):
    module, variables, apply_fn, x = target
    with pytest.raises(ValueError, match="module="):
        fastshap.make(_fastshap_config(), apply_fn, variables)
    with pytest.raises(ValueError, match="backbone"):
        _fastshap_config(backbone="resnet").validate()
    # a player grid that is not the feature grid names patch_size and the stride
    learned = fastshap.make(_fastshap_config(patch_size=4), apply_fn, variables, module=module)
    with pytest.raises(ValueError, match=r"patch_size to the feature stride \(2\)"):
        learned.init_params(jax.random.key(0), x)
    with pytest.raises(ValueError, match="feature 'nope'"):
        _backbone.feature_tokens(module, variables, x, "half", "nope")
    config = tve.TveConfig(embed_dim=4, image_size=8, grid=4, patch_size=2, backbone="target")
    with pytest.raises(ValueError, match="module="):
        tve.init_params(config, jax.random.key(0), variables=variables)


def _encoder(module):
    return tve.encoder_from_module(module, "half")


def test_tve_all_cells_loss_equals_hand_computed_mean(target):
    # cells_per_image = S² supervises every cell: the loss is deterministic and equals
    # the mean over cells of the squared errors of both branches.
    module, variables, _, x = target
    config = tve.TveConfig(
        embed_dim=4, image_size=8, grid=4, radius=1, patch_size=2, backbone="target",
        encoder_family="half", head_hidden=8, head_layers=2, cells_per_image=16,
    )  # fmt: skip
    encoder = _encoder(module)
    learned = tve.make(config, encoder, variables, module=module)
    init, update = make_trainer(
        learned, tve.default_optimizer(2, learning_rate=1e-3, warmup_frac=0.0)
    )
    state = init(jax.random.key(4), x)
    _, metrics = update(state, x, jax.random.key(5))
    pos, neg = tve.predict_embeddings(config, state.params, x, module)
    fill = fill_value_01(0.0, "half")
    errors_pos, errors_neg = [], []
    for cell in range(16):
        square = tve.square_masks(jnp.full((6,), cell), 4, 1, 8)
        errors_pos.append((pos[:, cell] - encoder(variables, apply_mask(x, square, fill))) ** 2)
        errors_neg.append((neg[:, cell] - encoder(variables, apply_mask(x, 1 - square, fill))) ** 2)
    expected = np.mean(errors_pos) + np.mean(errors_neg)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
    # a different key draws the same (complete) set of cells: same loss
    _, again = update(state, x, jax.random.key(6))
    np.testing.assert_allclose(float(again["loss"]), expected, rtol=1e-5)
    # the transfer map runs through the copied trunk
    head = tve.linear_head(variables)
    maps = tve.explain_with_head(config, state.params, x, head, jnp.zeros((6,), jnp.int32),
                                 module=module)  # fmt: skip
    assert maps.shape == (6, 8, 8) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0


def test_tve_cells_are_distinct_and_validated(target):
    with pytest.raises(ValueError, match="cells_per_image"):
        tve.TveConfig(embed_dim=4, image_size=8, grid=4, patch_size=2,
                      cells_per_image=17).validate()  # fmt: skip
    with pytest.raises(ValueError, match="cells_per_image"):
        tve.TveConfig(embed_dim=4, image_size=8, grid=4, patch_size=2,
                      cells_per_image=0).validate()  # fmt: skip


def test_freeze_non_params_labels():
    params = {
        "backbone": {"params": {"w": jnp.ones(2)}, "batch_stats": {"m": jnp.ones(2)}},
        "head": {"w": jnp.ones(2)},
    }
    opt = _backbone.freeze_non_params(optax.sgd(1.0), params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_array_equal(updates["backbone"]["batch_stats"]["m"], [0.0, 0.0])
    np.testing.assert_array_equal(updates["backbone"]["params"]["w"], [-1.0, -1.0])
    np.testing.assert_array_equal(updates["head"]["w"], [-1.0, -1.0])


@pytest.mark.parametrize("method", ["tve", "fastshap"])
def test_cli_trains_target_backbone_and_explain_loads_it(tmp_path, method):
    # train-explainer → checkpoint → the explain CLI's loader gives the maps of the
    # trained params (the copied trunk included) on the target it was trained for.
    from fastxai_jax.cli import build_parser
    from fastxai_jax.data.groundtruth import NUM_CLASSES
    from fastxai_jax.models.small_cnn import SmallCNN
    from fastxai_jax.train.checkpoint import save_params

    module = SmallCNN(num_classes=NUM_CLASSES)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    save_params(tmp_path / "target", variables, {"num_classes": NUM_CLASSES})
    argv = [
        "train-explainer", "--method", method, "--target", "small_cnn",
        "--target-weights", str(tmp_path / "target"), "--workdir", str(tmp_path / method),
        "--steps", "2", "--batch-size", "4", "--num-train", "8", "--no-progress",
        "--explainer-backbone", "target", "--fastshap-samples", "4", "--tve-cells", "2",
        "--lr", "1e-2",
    ]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert args.func(args) == 0
    apply_fn = make_apply_fn(module, "imagenet")
    trained = runs.load(
        tmp_path / method, apply_fn=apply_fn, target_params=variables, module=module
    )
    explain = trained.explain
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    maps = np.asarray(explain(x))
    assert maps.shape == (2, 64, 64) and np.all(np.isfinite(maps))
    # the trained trunk moved away from the target's (so the loader really restored it)
    from fastxai_jax.train.checkpoint import load_params

    saved, _ = load_params(tmp_path / method / "explainer")
    moved = np.abs(
        np.asarray(saved["backbone"]["params"]["conv0"]["kernel"])
        - np.asarray(variables["params"]["conv0"]["kernel"])
    ).max()
    assert moved > 0


def test_demo_recipes_parse_into_the_benchmark_settings():
    # `fastxai demo --learned tve,fastshap` trains with the recipes measured by
    # experiments/benchmarks/bench_learned.py: the target trunk, 1000 / 900 steps at 3e-3,
    # FastSHAP's players masked black (-1 under "half").
    from fastxai_jax.cli import build_parser
    from fastxai_jax.configs.demo import LEARNED_RECIPES
    from fastxai_jax.configs.learned import fastshap_config as _fastshap_config
    from fastxai_jax.configs.learned import optimizer_settings
    from fastxai_jax.configs.learned import tve_config as _tve_config

    def parse(method):
        argv = ["train-explainer", "--method", method, "--workdir", "unused"]
        return build_parser().parse_args(argv + LEARNED_RECIPES[method])

    tve_config = _tve_config(parse("tve"), "half", embed_dim=64)
    tve_optimizer = optimizer_settings("tve", parse("tve"))
    assert (tve_config.backbone, tve_config.head_init, tve_optimizer["total_steps"]) == (
        "target", "local", 1000,
    )  # fmt: skip
    assert tve_optimizer["lr"] == 3e-3 and tve_config.grid == 8
    fex_args = parse("fex")  # the recipe measured on the demo's calibrated target
    assert (fex_args.num_masks, fex_args.initial_keep, fex_args.steps) == (10, 0.88, 700)
    fs_config = _fastshap_config(parse("fastshap"), "half", num_classes=8)
    fs_optimizer = optimizer_settings("fastshap", parse("fastshap"))
    assert (fs_config.backbone, fs_config.patch_size, fs_optimizer["total_steps"]) == (
        "target", 8, 900,
    )  # fmt: skip
    assert fs_config.num_samples == 16 and fs_optimizer["lr"] == 3e-3
    assert fs_config.fill == -1.0


def test_benchmark_time_to_quality_picks_the_first_snapshot_beating_random():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "experiments/benchmarks/bench_learned.py"
    spec = importlib.util.spec_from_file_location("bench_learned", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    reference = {"deletion_auc": 0.2, "pointing_game": 0.1}
    scores = {  # maps stand in as keys: (deletion, pointing) per snapshot
        "a": (0.3, 0.5),  # pointing beats random, deletion does not
        "b": (0.15, 0.1),  # deletion beats random, pointing only ties
        "c": (0.19, 0.2),  # both: the first to count
        "d": (0.1, 0.9),
    }
    snapshots = [(100 * (i + 1), 10.0 * (i + 1), name) for i, name in enumerate(scores)]
    out = bench.time_to_quality(
        snapshots,
        lambda m: {"deletion_auc": scores[m][0], "pointing_game": scores[m][1]},
        reference,
    )
    assert out["first_beats_random"] == {"step": 300, "train_seconds": 30.0}
    assert [t["step"] for t in out["quality_trajectory"]] == [100, 200, 300, 400]
    assert out["quality_trajectory"][1]["deletion_auc"] == 0.15
    never = bench.time_to_quality(snapshots[:2], lambda m: dict(
        deletion_auc=scores[m][0], pointing_game=scores[m][1]), reference)  # fmt: skip
    assert never["first_beats_random"] is None
