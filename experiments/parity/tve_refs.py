"""Reference outputs from the authors' TVE code (guanchuwang/TVE).

The authors' modules are imported from a checkout given on the command line;
none of their code is in this repository. Regenerate with::

    # fetch github:guanchuwang/TVE (commit 9fa90a6e27914f269ed50f54418d74aea574057c)
    git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/tve
    /work/main/.venv/bin/python experiments/parity/tve_refs.py /tmp/tve \
        --out tests/fixtures/parity

Writes ``tve_head.npz`` (``ExplainerHead`` forward for the pos and neg
branches from fixed weights, the pre-training loss of ``GenericExplainer.
forward`` on a fixed batch with its random square centres and targets, the
gradients of that loss w.r.t. both heads, and ``generate_attr`` heatmaps for
``lambda_neg`` 0 (heatmap_demo.py:111) and 1 (the function's default)).
Key layout: /work/notes/refs_spec.md.

``models/vit_mae_explainer/explainer.py`` and ``generic_explainer_config.py``
are loaded by file path (``models/__init__`` would import the authors'
transformers-4.x ViT-MAE copy). ``peft`` and ``ipdb`` are stubbed (imported,
unused). The two ViT-MAE backbones are replaced by a tiny seeded token
embedder with the same interface (``.logits`` = ``[B, L+1, D_dec]``, CLS
first, as the authors' decoder returns it: vit_mae_backbone/
modeling_vit_mae.py:829); the backbone outputs are saved so the head can be
checked on its own. The target encoder/model are tiny seeded modules.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
from _common import parse_args
from torch import nn

B, IMG, PATCH, D_DEC, D_TGT, S, R, C = 3, 16, 4, 12, 8, 4, 1, 5
L = (IMG // PATCH) ** 2


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _patchify(x: torch.Tensor) -> torch.Tensor:
    """NCHW -> [B, L, C·p·p], patches row-major, each patch flattened (c, i, j)."""
    b, c, h, w = x.shape
    g = h // PATCH
    x = x.reshape(b, c, g, PATCH, g, PATCH).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, g * g, c * PATCH * PATCH)


class TinyBackbone(nn.Module):
    """Stand-in for ViTMAEForPreTraining: tanh(patches @ W + b), CLS prepended."""

    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(
            image_size=IMG, patch_size=PATCH, decoder_hidden_size=D_DEC
        )
        self.embed = nn.Linear(3 * PATCH * PATCH, D_DEC)
        self.cls = nn.Parameter(torch.zeros(1, 1, D_DEC))

    def forward(self, pixel_values, *unused):
        tok = torch.tanh(self.embed(_patchify(pixel_values)))
        return types.SimpleNamespace(logits=torch.cat([self.cls.expand(len(tok), -1, -1), tok], 1))


class TinyEncoder(nn.Module):
    """Target encoder: mean over patches of tanh(patches @ W + b); embedding [B, D_TGT]."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3 * PATCH * PATCH, D_TGT)
        self.config = types.SimpleNamespace(get_embedding=lambda out: out)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return torch.tanh(self.embed(_patchify(x))).mean(1)


class TinyTarget(nn.Module):
    """Target model: classifier (Linear D_TGT -> C) on TinyEncoder's embedding."""

    def __init__(self, encoder: TinyEncoder):
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(D_TGT, C)

    def forward(self, x):
        return types.SimpleNamespace(logits=self.classifier(self.encoder(x)))


def _seeded(module: nn.Module, gen: torch.Generator, std: float = 0.5) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))


def main(argv=None) -> int:
    a = parse_args(argv, __doc__, "checkout of guanchuwang/TVE")
    import transformers  # noqa: F401  (before the stubs)

    peft = types.ModuleType("peft")
    for name in ("get_peft_config", "get_peft_model", "LoraConfig", "TaskType"):
        setattr(peft, name, None)
    sys.modules["peft"] = peft
    sys.modules["ipdb"] = types.ModuleType("ipdb")
    root = a.repo.resolve() / "models" / "vit_mae_explainer"
    expl = _load(root / "explainer.py", "tve_explainer")
    cfg_mod = _load(root / "generic_explainer_config.py", "tve_config")

    gen = torch.Generator().manual_seed(0)
    cfg = cfg_mod.GenericExplainerConfig(
        explainerhead_layernum=3,
        target_hidden_size=D_TGT,
        heatmap_size=S,
        image_size=IMG,
        perturb_radius=R,
        initializer_range=0.02,
    )
    bpos, bneg, enc = TinyBackbone(), TinyBackbone(), TinyEncoder()
    model = expl.GenericExplainer(cfg, backbone_pos=bpos, backbone_neg=bneg, target_encoder=enc)
    for m in (bpos, bneg, enc, model.explainer_head_pos, model.explainer_head_neg):
        _seeded(m, gen)
    target = TinyTarget(enc)
    _seeded(target.classifier, gen)
    x = torch.randn(B, 3, IMG, IMG, generator=gen)  # NCHW, normalised space

    heads = {}
    model.explainer_head_pos.register_forward_hook(lambda m, i, o: heads.__setitem__("pos", o))
    model.explainer_head_neg.register_forward_hook(lambda m, i, o: heads.__setitem__("neg", o))
    torch.manual_seed(1)
    draws = []
    orig_randint = torch.randint

    def randint(*args, **kw):
        out = orig_randint(*args, **kw)
        draws.append(out.numpy().copy())
        return out

    torch.randint = randint
    try:
        enc.inputs.clear()
        res = model(pixel_values=x)
    finally:
        torch.randint = orig_randint
    res.loss.backward()
    with torch.no_grad():
        b_pos, b_neg = bpos(x).logits, bneg(x).logits
        t_pos, t_neg = enc(enc.inputs[0]), enc(enc.inputs[1])
        arrays = {
            "pixel_values": x.numpy(),
            "backbone_pos_out": b_pos.numpy(),  # [B, L+1, D_dec], CLS first
            "backbone_neg_out": b_neg.numpy(),
            "head_pos_out": heads["pos"].detach().numpy(),  # [B, S*S+1, D_tgt]
            "head_neg_out": heads["neg"].detach().numpy(),
            "center_x": draws[0],  # compared with the ROW index of the S×S grid
            "center_y": draws[1],  # compared with the COLUMN index
            "perturbed_pos": enc.inputs[0].numpy(),  # x · square (nearest-upsampled)
            "perturbed_neg": enc.inputs[1].numpy(),  # x · (1 − square)
            "target_pos": t_pos.numpy(),  # [B, D_tgt]
            "target_neg": t_neg.numpy(),
            "loss": res.loss.detach().numpy(),
            "perturb_radius": np.int64(R),
            "heatmap_size": np.int64(S),
        }
    for br, head in (("pos", model.explainer_head_pos), ("neg", model.explainer_head_neg)):
        for k, v in head.state_dict().items():
            arrays[f"head_{br}/{k}"] = v.numpy().copy()
        for k, prm in head.named_parameters():
            arrays[f"grad_head_{br}/{k}"] = prm.grad.numpy().copy()
    for name, mod in (("backbone_pos", bpos), ("backbone_neg", bneg), ("encoder", enc)):
        for k, v in mod.state_dict().items():
            arrays[f"{name}/{k}"] = v.numpy().copy()
    for k, v in target.classifier.state_dict().items():
        arrays[f"classifier/{k}"] = v.numpy().copy()
    model.target_encoder = None
    for lam_neg in (0, 1):
        out = model.generate_attr(
            pixel_values=x, target_model=target, lambda_pos=1, lambda_neg=lam_neg
        )
        arrays[f"heatmap_lneg{lam_neg}"] = out.heatmap.numpy()
        arrays[f"heatmap_pooling_lneg{lam_neg}"] = out.heatmap_pooling.numpy()
    arrays["class_index_pred"] = model.class_index_pred.numpy()
    np.savez_compressed(a.out / "tve_head.npz", **arrays)
    print("tve loss", float(res.loss), "centres", draws, "pred", arrays["class_index_pred"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
