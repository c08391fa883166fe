"""The harness: its per-image scores are the metric functions' numbers, its costs
the declared ones, and it validates once, outside the method's compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax import metrics
from fastxai_jax.core import Cost, Substrate
from fastxai_jax.evaluation import PatchProtocol, Protocol, evaluate_methods, run
from fastxai_jax.explainers import registry


def test_per_image_scores_are_the_metric_functions(tiny_eval):
    apply_fn, params, x, masks = tiny_eval
    protocol = Protocol(
        step_size=16, normalisation="half", patch=PatchProtocol(4, 4, Substrate("family_mean"))
    )
    summary, curves = evaluate_methods(
        apply_fn, params, x, masks, ["saliency", "random"], key=jax.random.key(0),
        batch_size=2, protocol=protocol, progress=False,
    )  # fmt: skip
    saliency = registry.attribute("saliency", apply_fn, params, x)
    curves_direct = metrics.insertion_deletion(
        apply_fn, params, x, saliency, step_size=16, normalisation="half"
    )
    got = summary["saliency"]["per_input"]
    np.testing.assert_allclose(got["insertion_auc"], curves_direct["insertion"].auc, atol=1e-6)
    np.testing.assert_allclose(got["deletion_auc"], curves_direct["deletion"].auc, atol=1e-6)
    patch_deletion = metrics.deletion(
        apply_fn, params, x, saliency, granularity="patch", patch_size=4, num_steps=4,
        substrate="zeros_normalised", normalisation="half",
    )  # fmt: skip
    np.testing.assert_allclose(got["patch_deletion_auc"], patch_deletion.auc, atol=1e-6)
    pos_neg = metrics.pos_neg_perturbation(apply_fn, params, x, saliency)
    np.testing.assert_allclose(got["pos_auc"], pos_neg["pos"].auc, atol=1e-6)
    np.testing.assert_allclose(got["pointing_game"], metrics.pointing_game(saliency, masks))
    np.testing.assert_allclose(got["iou"], metrics.iou(saliency, masks), atol=1e-6)
    np.testing.assert_allclose(got["entropy"], metrics.entropy(saliency), atol=1e-5)
    # the means are the means of the per-image scores, the curve the mean curve
    assert summary["saliency"]["relevance_mass"] == pytest.approx(np.mean(got["relevance_mass"]))
    np.testing.assert_allclose(
        curves["saliency"]["deletion"]["mean"], curves_direct["deletion"].curve.mean(0), atol=1e-6
    )
    assert len(curves["saliency"]["insertion"]["mean"]) == 5  # ceil(64 pixels / 16) + 1 points
    # the declared costs: saliency one forward and one backward, random none
    assert (summary["saliency"]["forward_passes"], summary["saliency"]["backward_passes"]) == (1, 1)
    assert (summary["random"]["forward_passes"], summary["random"]["backward_passes"]) == (0, 0)


def test_learned_explainers_are_booked_at_their_declared_cost(tiny_eval):
    apply_fn, params, x, masks = tiny_eval
    explain = lambda z, t: jnp.sum(z, axis=-1)  # noqa: E731
    summary, _ = evaluate_methods(
        apply_fn, params, x, masks, [], key=jax.random.key(0), progress=False,
        explainers={"tve": explain, "fex": explain, "mine": explain},
        explainer_costs={"mine": Cost(2, 1)},
    )  # fmt: skip
    passes = {m: (r["forward_passes"], r["backward_passes"]) for m, r in summary.items()}
    assert passes == {"tve": (1, 0), "fex": (0, 0), "mine": (2, 1)}
    direct = metrics.deletion(apply_fn, params, x, jnp.sum(x, axis=-1))
    np.testing.assert_allclose(summary["fex"]["per_input"]["deletion_auc"], direct.auc, atol=1e-6)


def test_validation_runs_once_and_the_compute_gets_resolved_targets(tiny_eval, monkeypatch):
    apply_fn, params, x, masks = tiny_eval
    calls = {"check_images": 0, "compute": []}
    check_images = run.check_images

    def counting_check(*args, **kwargs):
        calls["check_images"] += 1
        return check_images(*args, **kwargs)

    def probe(apply_fn_, params_, x_, target, *, key=None):
        calls["compute"].append((x_.shape[0], target, key))
        return jnp.mean(x_, axis=-1)

    monkeypatch.setattr(run, "check_images", counting_check)
    monkeypatch.setitem(
        registry.METHODS, "probe", registry.MethodSpec(probe, lambda: Cost(0, 0), True, False)
    )
    evaluate_methods(
        apply_fn, params, x, masks, ["probe", "random"], key=jax.random.key(0), batch_size=2,
        progress=False,
    )  # fmt: skip
    assert calls["check_images"] == 1  # once for the whole run, not per batch or method
    # batch 1 compiled (untimed warm-up) then timed, batch 2 (same shape) timed only;
    # each call gets the class already resolved
    assert len(calls["compute"]) == 3
    predicted = np.asarray(jnp.argmax(apply_fn(params, x), axis=-1))
    for (size, target, key), start in zip(calls["compute"], (0, 0, 2), strict=True):
        assert size == 2 and key is not None
        np.testing.assert_array_equal(np.asarray(target), predicted[start : start + 2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"masks": np.zeros((4, 8, 7), bool)}, "masks"),
        ({"methods": ["nope"]}, "unknown method"),
        ({"methods": []}, "at least one"),
        ({"images": np.full((4, 8, 8, 3), 2.0, np.float32)}, "images"),
        ({"images": np.zeros((0, 8, 8, 3), np.float32)}, "images"),
        ({"batch_size": 0}, "batch_size"),
        ({"protocol": {"granularity": "pixel"}}, "protocol"),
    ],
)
def test_bad_input_is_refused_before_any_work(tiny_eval, kwargs, match):
    apply_fn, params, x, masks = tiny_eval
    call = {"images": x, "masks": masks, "methods": ["random"], **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_methods(
            apply_fn, params, call.pop("images"), call.pop("masks"), call.pop("methods"),
            key=jax.random.key(0), progress=False, **call,
        )  # fmt: skip
