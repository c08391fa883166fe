"""Reference outputs from the authors' FEX code (pd90506/FastExplanation).

The authors' modules are imported from a checkout given on the command line;
none of their code is in this repository. Regenerate with::

    # fetch github:pd90506/FastExplanation (commit 6f024bcf368ef811794d0bd86e6a5a7b9a424563)
    git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/fex
    /work/main/.venv/bin/python experiments/parity/fex_refs.py /tmp/fex \
        --out tests/fixtures/parity

Writes ``fex_loss.npz`` (loss terms and gradients w.r.t. the actor logits and
critic values on a fixed batch), ``fex_update.npz`` (one full PPO batch of
``maskgen/trainer.py: PPOTrainer.train_epoch``: rollout, minibatch index
sequence, per-minibatch losses and gradients, parameters before/after),
``fex_egreedy.npz`` (whole-mask ε-greedy with its random draws) and
``fex_explain.npz`` (``MaskGeneratingModel.attribute_img``). The key layout
is described in /work/notes/refs_spec.md.

Stubs (sys.modules): ``wandb`` (logging only), ``peft`` (LoRA is not used:
the tiny backbone is trained in full, ``freeze_base=False``) and
``maskgen.utils`` (its ``__init__`` imports accelerate/datasets; the trainer
only imports ``idx_to_selector`` from it, which it never calls). The models
are tiny HF ``ViTModel``/``ViTForImageClassification`` built from a seeded
config, so the JAX side can load them with ``models.convert_transformers``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch
from _common import HIDDEN, IMG, NUM_CLASSES, PATCH, parse_args, state_arrays, tiny_vit_config

B, K, MINI_BATCH = 4, 2, 4  # B·K // MINI_BATCH = 2 minibatch steps
CONFIG = {
    "num_steps": K,
    "mini_batch_size": MINI_BATCH,
    "ppo_epochs": 1,
    "epsilon": 0.5,
    "lr": 5e-2,
    "clip_param": 0.2,
    "l_kl": 1.0,
    "l_actor": 1.0,
    "l_entropy": 0.1,
    "save_interval": 10**9,
}


def _install_stubs() -> None:
    """Minimal stand-ins for modules the authors import but we never exercise."""
    wandb = types.ModuleType("wandb")
    wandb.log = lambda *a, **k: None
    wandb.init = lambda *a, **k: None
    wandb.finish = lambda *a, **k: None
    sys.modules["wandb"] = wandb
    peft = types.ModuleType("peft")
    for name in ("get_peft_model", "LoraConfig", "TaskType", "PeftModel"):
        setattr(peft, name, type(name, (), {}))
    sys.modules["peft"] = peft
    mu = types.ModuleType("maskgen.utils")
    mu.idx_to_selector = None
    sys.modules["maskgen.utils"] = mu


def _build(seed: int):
    from maskgen.vision_models.vision_maskgen import MaskGeneratingModel
    from transformers import ViTForImageClassification, ViTModel

    torch.manual_seed(seed)
    # a large init makes the tiny target's prediction depend on the pixels
    target = ViTForImageClassification(tiny_vit_config(0.5)).eval()
    base = ViTModel(tiny_vit_config(0.2), add_pooling_layer=False)
    maskgen = MaskGeneratingModel(base, hidden_size=HIDDEN, num_classes=NUM_CLASSES)
    with torch.no_grad():  # values near the rewards' mean: advantages of both signs
        maskgen.critic[4].bias.fill_(0.6)
    return target, maskgen


class _Recorder:
    """Records the torch RNG draws the authors' trainer makes, in call order."""

    def __init__(self):
        self.log: list[tuple[str, np.ndarray]] = []
        self._orig = {}

    def __enter__(self):
        rec = self
        self._orig = {
            "rand": torch.rand,
            "randint_like": torch.randint_like,
            "randint": torch.randint,
            "sample": torch.distributions.Bernoulli.sample,
        }
        o = self._orig

        def rand(*a, **k):
            out = o["rand"](*a, **k)
            rec.log.append(("rand", out.numpy().copy()))
            return out

        def randint_like(*a, **k):
            out = o["randint_like"](*a, **k)
            rec.log.append(("randint_like", out.numpy().copy()))
            return out

        def randint(*a, **k):
            out = o["randint"](*a, **k)
            rec.log.append(("randint", out.numpy().copy()))
            return out

        def sample(self_, *a, **k):
            out = o["sample"](self_, *a, **k)
            rec.log.append(("sample", out.numpy().copy()))
            return out

        torch.rand, torch.randint_like, torch.randint = rand, randint_like, randint
        torch.distributions.Bernoulli.sample = sample
        return self

    def __exit__(self, *exc):
        o = self._orig
        torch.rand, torch.randint_like, torch.randint = o["rand"], o["randint_like"], o["randint"]
        torch.distributions.Bernoulli.sample = o["sample"]

    def of(self, kind: str) -> np.ndarray:
        return np.stack([v for k, v in self.log if k == kind])


def _inputs(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, IMG, IMG, generator=g)  # NCHW, already "normalised"


def make_loss_ref(trainer_mod, out: Path) -> None:
    """Loss terms and gradients w.r.t. actor logits / critic values (leaves)."""
    target, maskgen = _build(0)
    trainer = trainer_mod.PPOTrainer(maskgen, target, CONFIG, device="cpu")
    g = torch.Generator().manual_seed(1)
    n, L, C = 6, (IMG // PATCH) ** 2, NUM_CLASSES
    mu_logits = (2.0 * torch.randn(n, L, C, generator=g)).requires_grad_(True)
    value = torch.randn(n, C, generator=g).requires_grad_(True)
    labels = torch.randint(0, C, (n, 1), generator=g)
    actions = torch.bernoulli(torch.full((n, L), 0.5), generator=g)
    target_logits = torch.randn(n, C, generator=g)
    returns = torch.rand(n, 1, generator=g) * 3.0
    # old log-probs: those of a perturbed policy, so that ratios span the clip range
    old_logits = mu_logits.detach().gather(-1, labels.unsqueeze(1).expand(-1, L, -1)).squeeze(-1)
    old_logits = old_logits + 0.3 * torch.randn(n, L, generator=g)
    old_log_probs = (
        torch.distributions.Bernoulli(logits=old_logits).log_prob(actions).sum(-1, keepdim=True)
    )
    old_values = torch.randn(n, 1, generator=g)
    advantages = returns - old_values
    # the authors' get_dist_critic, with the network replaced by the leaves above
    maskgen.forward = lambda pixel_values: (mu_logits, value)
    dist, true_value, mu_mean_prob = maskgen.get_dist_critic(None, labels)
    actor, critic, entropy, kl = trainer.compute_losses(
        dist, true_value, mu_mean_prob, actions, returns, advantages, old_log_probs, target_logits
    )
    # the combination of maskgen/trainer.py:238-241
    c = CONFIG
    loss = 0.5 * critic + c["l_actor"] * actor - c["l_entropy"] * entropy + c["l_kl"] * kl
    loss.backward()
    new_lp = dist.log_prob(actions).sum(-1, keepdim=True)
    np.savez_compressed(
        out / "fex_loss.npz",
        mu_logits=mu_logits.detach().numpy(),
        value=value.detach().numpy(),
        labels=labels.numpy(),
        actions=actions.numpy(),
        target_logits=target_logits.numpy(),
        returns=returns.numpy(),
        advantages=advantages.numpy(),
        old_log_probs=old_log_probs.numpy(),
        ratio=(new_lp - old_log_probs).exp().detach().numpy(),
        mu_mean_prob=mu_mean_prob.detach().numpy(),
        actor_loss=actor.detach().numpy(),
        critic_loss=critic.detach().numpy(),
        entropy=entropy.detach().numpy(),
        kl_loss=kl.detach().numpy(),
        loss=loss.detach().numpy(),
        grad_mu_logits=mu_logits.grad.numpy(),
        grad_value=value.grad.numpy(),
        clip_param=np.float32(c["clip_param"]),
        l_actor=np.float32(c["l_actor"]),
        l_entropy=np.float32(c["l_entropy"]),
        l_kl=np.float32(c["l_kl"]),
    )


def make_update_ref(trainer_mod, out: Path) -> None:
    """One batch of PPOTrainer.train_epoch: rollout + B·K//mini_batch steps."""
    target, maskgen = _build(0)
    trainer = trainer_mod.PPOTrainer(maskgen, target, CONFIG, device="cpu")
    x = _inputs(2)
    before = state_arrays(maskgen, "")
    traj, mb_losses, mb_grads = {}, [], []
    orig_collect, orig_losses = trainer.collect_trajectories, trainer.compute_losses

    def collect(pixel_values):
        t = orig_collect(pixel_values)
        traj.update(t)
        return t

    def losses(*a):
        res = orig_losses(*a)
        dist, actions, old_lp = a[0], a[3], a[6]
        ratio = (dist.log_prob(actions).sum(-1, keepdim=True) - old_lp).exp()
        mb_losses.append([r.detach().numpy().copy() for r in res] + [ratio.detach().numpy()])
        return res

    orig_step = trainer.optimizer.step

    def step(*a, **k):
        mb_grads.append(
            {n: p.grad.numpy().copy() for n, p in maskgen.named_parameters() if p.grad is not None}
        )
        return orig_step(*a, **k)

    trainer.collect_trajectories, trainer.compute_losses = collect, losses
    trainer.optimizer.step = step
    maskgen.train()
    torch.manual_seed(3)
    with _Recorder() as rec:
        trainer.train_epoch([{"pixel_values": x}], epoch=0, save_path="/nonexistent")
    after = state_arrays(maskgen, "")
    n_mb = B * K // MINI_BATCH
    assert len(mb_losses) == n_mb and len(mb_grads) == n_mb
    rand_ids = rec.of("randint")
    assert rand_ids.shape == (n_mb, MINI_BATCH)
    arrays = {
        "pixel_values": x.numpy(),
        "coins": rec.of("rand"),  # [K, B] uniform; randomise image b iff coin < epsilon
        "random_actions": rec.of("randint_like"),  # [K, B, L]
        "sampled_actions": rec.of("sample"),  # [K, B, L] Bernoulli draws of the policy
        "rand_ids": rand_ids,  # [n_minibatches, mini_batch_size] rows of the flat rollout
        "actions": torch.stack(traj["actions"]).numpy(),  # [K, B, L]
        "old_log_probs": torch.stack(traj["log_probs"]).numpy(),  # [K, B, 1]
        "values": torch.stack(traj["values"]).numpy(),  # [K, B, 1]
        "rewards": torch.stack(traj["rewards"]).numpy(),  # [K, B, 1]
        "target_logits": traj["logits"][0].numpy(),  # [B, C]
        "pseudo_labels": traj["pseudo_labels"][0].numpy(),  # [B, 1]
        "rollout_entropy": np.float32(traj["entropy"]),
        "mb_actor_loss": np.array([m[0] for m in mb_losses]),
        "mb_critic_loss": np.array([m[1] for m in mb_losses]),
        "mb_entropy": np.array([m[2] for m in mb_losses]),
        "mb_kl_loss": np.array([m[3] for m in mb_losses]),
        "mb_ratio": np.array([m[4] for m in mb_losses]),  # [n_minibatches, mini_batch_size, 1]
        "config_json": np.array(repr(CONFIG)),
    }
    arrays.update(state_arrays(target, "target/"))
    for k, v in before.items():
        arrays[f"before/{k}"] = v
    for k, v in after.items():
        arrays[f"after/{k}"] = v
    for i, gr in enumerate(mb_grads):
        for k, v in gr.items():
            arrays[f"grad{i}/{k}"] = v
    np.savez_compressed(out / "fex_update.npz", **arrays)
    d = {k: np.abs(after[k] - before[k]).max() for k in before}
    print("fex update: max |Δparam| =", max(d.values()), "rand_ids", rand_ids.tolist())


def make_egreedy_ref(trainer_mod, out: Path) -> None:
    target, maskgen = _build(0)
    trainer = trainer_mod.PPOTrainer(maskgen, target, CONFIG, device="cpu")
    g = torch.Generator().manual_seed(4)
    n, L = 8, (IMG // PATCH) ** 2
    logits = torch.randn(n, L, generator=g)
    dist = torch.distributions.Bernoulli(logits=logits)
    torch.manual_seed(5)
    with _Recorder() as rec:
        act = trainer.get_epsilon_greedy_action(dist, epsilon=0.5)
    coins = rec.of("rand")[0]
    assert 0 < (coins < 0.5).sum() < n, "want both randomised and policy rows"
    np.savez_compressed(
        out / "fex_egreedy.npz",
        logits=logits.numpy(),
        epsilon=np.float32(0.5),
        coins=coins,
        random_actions=rec.of("randint_like")[0],
        sampled_actions=rec.of("sample")[0],
        actions=act.numpy(),
    )


def make_explain_ref(out: Path) -> None:
    target, maskgen = _build(0)
    x = _inputs(6)
    with torch.no_grad():
        labels = target(x).logits.argmax(-1, keepdim=True)
        mu_logits, value = maskgen(x)
        heat = maskgen.attribute_img(x, labels, image_size=IMG, patch_size=PATCH)
    arrays = {
        "pixel_values": x.numpy(),
        "labels": labels.numpy(),
        "mu_logits": mu_logits.numpy(),
        "value": value.numpy(),
        "heatmap": heat.numpy(),
    }
    arrays.update(state_arrays(maskgen, "maskgen/"))
    arrays.update(state_arrays(target, "target/"))
    np.savez_compressed(out / "fex_explain.npz", **arrays)


def main(argv=None) -> int:
    a = parse_args(argv, __doc__, "checkout of pd90506/FastExplanation")
    _install_stubs()
    sys.path.insert(0, str(a.repo.resolve()))
    import maskgen.trainer as trainer_mod

    torch.set_default_dtype(torch.float32)
    make_loss_ref(trainer_mod, a.out)
    make_update_ref(trainer_mod, a.out)
    make_egreedy_ref(trainer_mod, a.out)
    make_explain_ref(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
