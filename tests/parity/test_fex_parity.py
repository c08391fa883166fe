"""FEX against the authors' code (pd90506/FastExplanation, ``maskgen/trainer.py``).

References: ``tests/fixtures/parity/fex_{loss,update,egreedy,explain}.npz``, made
by ``experiments/parity/fex_refs.py`` from the authors' modules on tiny Hugging
Face ViTs (key layout: the script's docstring). Images are NCHW there, already
normalised: our side reads them NHWC with ``explainer_family`` and
``target_family`` ``"identity"`` (masked pixels = 0 in that space, as theirs).
Tolerance: 1e-4 relative (deterministic float32 on both sides).
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fastxai_jax.core import non_image_inputs
from fastxai_jax.explainers.learned import _fex_losses as losses
from fastxai_jax.explainers.learned import _fex_ppo, fex
from fastxai_jax.explainers.learned._update import RolloutRows, make_rollout_update, make_update
from fastxai_jax.models.convert_transformers import convert_hf_vit, hf_vit_module_for
from fastxai_jax.train.loop import init_state

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "parity"
RTOL, ATOL = 1e-4, 1e-6


def load(name):
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


# parity_rows() sets this to record, per component, max |ours − theirs| / max |theirs|.
_RECORD: dict[str, float] | None = None
_COMPONENT = ""


def assert_close(ours, theirs, rtol=RTOL, atol=ATOL):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    if _RECORD is not None and scale >= 10 * atol:  # arrays at float noise: atol only
        diff = float(np.max(np.abs(ours - theirs))) / scale
        _RECORD[_COMPONENT] = max(_RECORD.get(_COMPONENT, 0.0), diff)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


def sub(ref, prefix):
    return {k[len(prefix) :]: v for k, v in ref.items() if k.startswith(prefix)}


def nhwc(x):
    return jnp.asarray(x.transpose(0, 2, 3, 1))


def target_of(ref):
    """The authors' target ViT as ``apply_fn(params, x) -> logits``."""
    state = sub(ref, "target/")
    module = hf_vit_module_for(state, num_heads=2)
    return (lambda params, x: module.apply(params, x)[0]), convert_hf_vit(state, num_heads=2)


def explainer_params(state):
    """The authors' maskgen state dict (``base_model.*``, ``actor.*``, ``critic.*``)
    as FEX params: HF ViT -> ``backbone``; ``Linear`` ``[out, in]`` -> ``kernel.T``."""
    vit = {"vit." + k[len("base_model.") :]: v for k, v in state.items() if "base_model." in k}
    hidden = state["base_model.embeddings.cls_token"].shape[-1]
    vit["classifier.weight"] = np.zeros((1, hidden), np.float32)  # the converter reads C here
    vit["classifier.bias"] = np.zeros((1,), np.float32)
    backbone = convert_hf_vit(vit, num_heads=2)["params"]

    def head(name):
        return {
            f"dense{i}": {
                "kernel": jnp.asarray(state[f"{name}.{2 * i}.weight"].T),
                "bias": jnp.asarray(state[f"{name}.{2 * i}.bias"]),
            }
            for i in range(3)
        }

    return {"backbone": backbone, "heads": {"actor": head("actor"), "critic": head("critic")}}


def config_for(ref_config=None, **overrides):
    options = dict(
        num_classes=5, image_size=16, patch_size=4, hidden_size=16, depth=1, num_heads=2,
        mlp_dim=32, layer_norm_eps=1e-12, explainer_family="identity",
        target_family="identity", entropy_reduction="mean",
    )  # fmt: skip
    if ref_config is not None:
        options.update(
            num_masks=ref_config["num_steps"],
            ppo_minibatch_size=ref_config["mini_batch_size"],
            ppo_epochs=ref_config["ppo_epochs"],
            epsilon=ref_config["epsilon"],
            clip_eps=ref_config["clip_param"],
            kl_coef=ref_config["l_kl"],
            actor_coef=ref_config["l_actor"],
            entropy_coef=ref_config["l_entropy"],
        )
    options.update(overrides)
    return fex.FexConfig(**options)


def authors_config(ref):
    return json.loads(str(ref["config_json"]).replace("'", '"'))


# ------------------------------------------------------------------ the loss


def test_loss_terms_and_gradient_match_the_authors():
    """``compute_losses`` + their sum on fixed actor/critic outputs: every term,
    the ratio, μ, and d loss / d (actor logits, critic values)."""
    ref = load("fex_loss")
    config = fex.FexConfig(
        num_classes=5, clip_eps=float(ref["clip_param"]), actor_coef=float(ref["l_actor"]),
        entropy_coef=float(ref["l_entropy"]), kl_coef=float(ref["l_kl"]),
    )  # fmt: skip
    n = ref["labels"].shape[0]
    rollout = _fex_ppo.Rollout(
        images=jnp.zeros((n, 1, 1, 3)),  # forward_fn below ignores the images
        classes=jnp.asarray(ref["labels"][:, 0]),
        target_logits=jnp.asarray(ref["target_logits"]),
        actions=jnp.asarray(ref["actions"]),
        old_log_probs=jnp.asarray(ref["old_log_probs"][:, 0]),
        values=jnp.zeros(n),
        returns=jnp.asarray(ref["returns"][:, 0]),
        advantages=jnp.asarray(ref["advantages"][:, 0]),
    )
    leaves = {"actor": jnp.asarray(ref["mu_logits"]), "value": jnp.asarray(ref["value"])}
    forward_fn = lambda p, x: (p["actor"], p["value"])

    def loss_fn(params):
        return _fex_ppo.minibatch_loss(config, forward_fn, params, rollout, jnp.arange(n))

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(leaves)
    assert_close(loss, ref["loss"])
    assert_close(terms["actor_loss"], ref["actor_loss"])
    assert_close(terms["value_loss"], ref["critic_loss"])  # 0.5 applied in the total only
    assert_close(terms["entropy"], ref["entropy"])
    assert_close(terms["kl"], ref["kl_loss"])
    assert_close(grads["actor"], ref["grad_mu_logits"], atol=1e-7)
    assert_close(grads["value"], ref["grad_value"], atol=1e-7)
    logits = _fex_ppo.policy_logits(leaves["actor"], rollout.classes)
    log_prob = jax.vmap(losses.policy_log_prob)(logits, rollout.actions)
    assert_close(jnp.exp(log_prob - rollout.old_log_probs), ref["ratio"][:, 0])
    mu = jnp.exp(jax.vmap(losses.token_class_distribution)(leaves["actor"]))
    assert_close(mu, ref["mu_mean_prob"])
    # The paper-style sum of the entropy is L times the authors' mean here.
    summed = config_for(entropy_reduction="sum")
    _, terms_sum = _fex_ppo.minibatch_loss(summed, forward_fn, leaves, rollout, jnp.arange(n))
    assert_close(terms_sum["entropy"], 16 * ref["entropy"])


def test_epsilon_greedy_randomises_whole_masks_with_the_saved_draws():
    ref = load("fex_egreedy")
    coins = jnp.asarray(ref["coins"])
    ours = _fex_ppo.epsilon_greedy(
        jnp.asarray(ref["sampled_actions"]), jnp.asarray(ref["random_actions"]), coins,
        float(ref["epsilon"]),
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(ours), ref["actions"])
    explored = np.asarray(coins) < float(ref["epsilon"])
    assert 0 < explored.sum() < len(explored)  # both kinds of row are present


def test_explain_from_fixed_weights_matches_attribute_img():
    ref = load("fex_explain")
    config = config_for()
    params = explainer_params(sub(ref, "maskgen/"))
    x = nhwc(ref["pixel_values"])
    actor, values = fex.forward(config, params, x)
    assert_close(actor, ref["mu_logits"], atol=1e-6)
    assert_close(values, ref["value"], atol=1e-6)
    labels = jnp.asarray(ref["labels"][:, 0], jnp.int32)
    assert_close(fex.explain_grid(config, params, x, labels), ref["heatmap"])
    learned = fex.make(config, None, None)
    # The authors' inputs are already normalised (outside [0, 1]); the public
    # explain refuses that unless told these are not [0, 1] images.
    with non_image_inputs():
        assert_close(learned.explain_grid(params, x, labels), ref["heatmap"])
    with pytest.raises(ValueError, match="x must lie in"):
        learned.explain_grid(params, x, labels)


# ---------------------------------------------------------- one full PPO batch


def comparable(params):
    """Params without two leaves whose "after" values are float noise on both sides:
    the unused classifier ``head`` (ours only), and the attention key bias, whose
    gradient is exactly 0 in exact arithmetic (softmax ignores a per-query
    constant); both sides hold ~1e-10 rounding there, which Adam's first step
    turns into ``lr·g/(|g| + 1e-8)``. Its gradient is still checked (atol 1e-6)."""
    backbone = {k: v for k, v in params["backbone"].items() if k != "head"}
    block = dict(backbone["block_0"])
    block["attn"] = {k: v for k, v in block["attn"].items() if k != "key"} | {
        "key": {"kernel": block["attn"]["key"]["kernel"]}
    }
    return {**params, "backbone": {**backbone, "block_0": block}}


@pytest.fixture(scope="module")
def update_case():
    ref = load("fex_update")
    settings = authors_config(ref)
    config = config_for(settings)
    apply_fn, target_params = target_of(ref)
    learned = fex.make(config, apply_fn, target_params)
    x = nhwc(ref["pixel_values"])
    params = explainer_params(sub(ref, "before/"))
    forward_fn = lambda p, z: fex.forward(config, p, z)
    saved = jnp.asarray(ref["actions"])  # [K, B, L], their ε-greedy draws
    rollout, _ = _fex_ppo.run_rollout(
        config, forward_fn, apply_fn, target_params, params, x, lambda logits: saved
    )
    rows = jnp.asarray(ref["rand_ids"], jnp.int32)
    optimizer = optax.adam(settings["lr"])  # torch Adam defaults = optax's
    return ref, learned, params, rollout, rows, optimizer


def test_rollout_matches_the_authors(update_case):
    ref, _, _, rollout, _, _ = update_case
    k, b = ref["actions"].shape[:2]
    flat = lambda a: a.reshape(k * b)  # step-major rows r = k·B + b
    assert_close(rollout.target_logits, ref["target_logits"], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(rollout.classes), ref["pseudo_labels"][:, 0])
    assert_close(rollout.returns, flat(ref["rewards"]))
    assert_close(rollout.values, flat(ref["values"]))
    assert_close(rollout.old_log_probs, flat(ref["old_log_probs"]))
    assert_close(rollout.advantages, flat(ref["rewards"] - ref["values"]), atol=1e-5)
    # ε-greedy with their draws reproduces their actions (whole-mask coins).
    actions = _fex_ppo.epsilon_greedy(
        jnp.asarray(ref["sampled_actions"]), jnp.asarray(ref["random_actions"]),
        jnp.asarray(ref["coins"]), authors_config(ref)["epsilon"],
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(actions), ref["actions"])


def test_minibatch_steps_match_the_authors_losses_gradients_and_params(update_case):
    """Two minibatch steps with the saved index sequence: per step the four
    losses, the ratios and the gradient Adam received, then the params after."""
    ref, learned, params, rollout, rows, optimizer = update_case
    key = jax.random.key(0)
    grad_fn = jax.jit(jax.value_and_grad(learned.loss_fn, has_aux=True))
    step = jax.jit(make_update(learned.loss_fn, optimizer))
    state = init_state(params, optimizer)
    for i in range(rows.shape[0]):
        (_, terms), grads = grad_fn(state.params, RolloutRows(rollout, rows[i]), key)
        assert_close(terms["actor_loss"], ref["mb_actor_loss"][i], atol=1e-6)
        assert_close(terms["value_loss"], ref["mb_critic_loss"][i])
        assert_close(terms["entropy"], ref["mb_entropy"][i])
        assert_close(terms["kl"], ref["mb_kl_loss"][i])
        assert_close(terms["ratio"], ref["mb_ratio"][i].mean())
        theirs = explainer_params(sub(ref, f"grad{i}/"))
        for ours_leaf, their_leaf in zip(
            jax.tree.leaves(grads["heads"]), jax.tree.leaves(theirs["heads"]), strict=True
        ):
            assert_close(ours_leaf, their_leaf, atol=1e-6)
        for ours_leaf, their_leaf in zip(
            jax.tree.leaves(grads["backbone"]), jax.tree.leaves(theirs["backbone"]), strict=True
        ):
            assert_close(ours_leaf, their_leaf, atol=1e-6)
        state, _ = step(state, RolloutRows(rollout, rows[i]), key)
    # The same through the training step (rollout then a scan over the minibatches).
    update = make_rollout_update(
        learned.loss_fn, lambda p, batch, k: (rollout, rows, {}), optimizer
    )
    new_state, metrics = jax.jit(update)(init_state(params, optimizer), None, key)
    after = explainer_params(sub(ref, "after/"))
    for ours_leaf, their_leaf in zip(
        jax.tree.leaves(comparable(new_state.params)),
        jax.tree.leaves(comparable(after)),
        strict=True,
    ):
        assert_close(ours_leaf, their_leaf)
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params), strict=True):
        assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert_close(metrics["actor_loss"], ref["mb_actor_loss"].mean(), atol=1e-6)


def test_reinforce_is_the_first_ppo_gradient_and_the_updates_differ(update_case):
    """``loss="reinforce"`` has the authors' PPO gradient at ratio 1 (``grad0``);
    one reinforce step per rollout and PPO's minibatch steps give other params."""
    ref, learned, params, rollout, rows, optimizer = update_case
    settings = authors_config(ref)
    reinforce = fex.make(config_for(settings, loss="reinforce"), *target_of(ref))
    key = jax.random.key(0)
    grad_fn = jax.jit(jax.grad(lambda p, r: reinforce.loss_fn(p, RolloutRows(rollout, r), key)[0]))
    grads = grad_fn(params, rows[0])
    theirs = explainer_params(sub(ref, "grad0/"))
    for ours_leaf, their_leaf in zip(
        jax.tree.leaves(grads["heads"]), jax.tree.leaves(theirs["heads"]), strict=True
    ):
        assert_close(ours_leaf, their_leaf, atol=1e-6)
    # Same rollout, same first minibatch: PPO makes a second (clipped) step.
    ppo_update = make_rollout_update(
        learned.loss_fn, lambda p, b, k: (rollout, rows, {}), optimizer
    )
    one_update = make_rollout_update(
        reinforce.loss_fn, lambda p, b, k: (rollout, rows[:1], {}), optimizer
    )
    ppo_state, _ = jax.jit(ppo_update)(init_state(params, optimizer), None, key)
    one_state, _ = jax.jit(one_update)(init_state(params, optimizer), None, key)
    gap = max(
        float(jnp.abs(a - b).max())
        for a, b in zip(
            jax.tree.leaves(ppo_state.params["heads"]),
            jax.tree.leaves(one_state.params["heads"]),
            strict=True,
        )
    )
    assert gap > 1e-2  # lr 5e-2: a second Adam step moves weights by ~lr
    # The training-time row sets: reinforce uses every row once, in one step;
    # PPO draws B·K // m minibatches with replacement.
    data_key = jax.random.key(1)
    x = nhwc(ref["pixel_values"])
    rows_of = lambda learned_fex: jax.eval_shape(learned_fex.loss_fn.rollout, params, x, data_key)[
        1
    ]
    assert rows_of(reinforce).shape == (1, 8)
    _, ppo_rows, _ = jax.jit(learned.loss_fn.rollout)(params, x, data_key)
    assert ppo_rows.shape == (2, 4) and int(ppo_rows.max()) < 8


def parity_rows() -> dict[str, float]:
    """Component -> max relative difference to the authors' code, for the README's
    table (``experiments/parity/table.py``): runs the tests above, recording
    ``max |ours − theirs| / max |theirs|`` per compared array (arrays whose
    reference is at float noise, below 10·atol, are held to atol only)."""
    global _RECORD, _COMPONENT
    _RECORD = {}
    case = update_case.__wrapped__()
    runs = [
        ("loss terms, gradients w.r.t. actor and critic",
         test_loss_terms_and_gradient_match_the_authors, ()),
        ("explain from fixed weights (actor, critic, heatmap)",
         test_explain_from_fixed_weights_matches_attribute_img, ()),
        ("rollout (rewards, values, old log-probs)", test_rollout_matches_the_authors, (case,)),
        ("two PPO minibatch steps (losses, gradients, params after)",
         test_minibatch_steps_match_the_authors_losses_gradients_and_params, (case,)),
        ("reinforce = the first PPO gradient",
         test_reinforce_is_the_first_ppo_gradient_and_the_updates_differ, (case,)),
    ]  # fmt: skip
    try:
        for name, test, args in runs:
            _COMPONENT = name
            test(*args)
        return dict(_RECORD)
    finally:
        _RECORD = None
