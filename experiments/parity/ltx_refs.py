"""Reference outputs from the authors' LTX code (LTX-Code/LTX).

The authors' modules are imported from a checkout given on the command line;
none of their code is in this repository. Regenerate with::

    # fetch github:LTX-Code/LTX (commit 8754713ec4ef4d461985b4834fb1ea98d492289c)
    git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/ltx
    /work/main/.venv/bin/python experiments/parity/ltx_refs.py /tmp/ltx \
        --out tests/fixtures/parity

Writes ``ltx_stage_a.npz`` (``ImageClassificationWithTokenClassificationModel``
forward/loss on a fixed batch and three optimiser steps with the authors'
AdamW + linear-warm-up schedule), ``ltx_stage_b.npz`` (per-image fine-tune of
``OptImageClassificationWithTokenClassificationModel``: per-epoch POS AUC,
best-mask selection, the 6.0 stop) and ``ltx_auc.npz`` (the POS perturbation
AUC of ``evaluation/perturbation_tests/seg_cls_perturbation_tests.py`` on
fixed masks). Key layout: /work/notes/refs_spec.md.

What is emulated rather than run (pytorch-lightning, torchvision, cv2,
icecream and pandas are not installable/needed here):

* ``pytorch_lightning`` is a stub: ``LightningModule`` is ``torch.nn.Module``
  plus ``log``/``current_epoch``/``trainer``; the script performs Lightning's
  automatic optimisation for one batch per epoch in Lightning's order:
  ``training_step`` -> ``backward`` -> ``optimizer.step`` -> ``scheduler.step``
  (interval "step") -> ``training_epoch_end([output])``.
* ``utils.vit_utils`` is a stub holding ``get_loss_multipliers`` (identity for
  ``normalize=False``, the authors' config) and no-op plotting functions; the
  real module imports cv2 and the authors' transformers-4.15 ViT copy.
* ``freeze_multitask_model`` (utils/vit_utils.py:115-143) is applied by hand:
  explainee frozen, explainer ``vit.embeddings`` frozen.
* Stage B resumes optimiser state from stage A, as ``resume_from_checkpoint``
  does (run_seg_cls_opt.py:240); the scheduler continues from stage A's step.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from _common import IMG, PATCH, parse_args, state_arrays, tiny_vit_config

LR, WARMUP, TOTAL = 2e-3, 2, 10
MASK_LOSS_MUL, PRED_LOSS_MUL = 50, 1
STAGE_B_EPOCHS = 6


class _Trainer:
    should_stop = False


def _install_stubs() -> None:
    pl = types.ModuleType("pytorch_lightning")

    class LightningModule(torch.nn.Module):
        current_epoch = 0
        trainer = _Trainer()

        def log(self, *a, **k):
            pass

    pl.LightningModule = LightningModule
    pl.seed_everything = lambda *a, **k: None
    sys.modules["pytorch_lightning"] = pl
    tv = types.ModuleType("torchvision")
    tvm = types.ModuleType("torchvision.models")
    tvm.DenseNet = type("DenseNet", (), {})
    tvm.ResNet = type("ResNet", (), {})
    tvt = types.ModuleType("torchvision.transforms")
    for name in ("Compose", "Resize", "CenterCrop", "ToTensor", "Normalize"):
        setattr(tvt, name, lambda *a, **k: None)
    tv.models, tv.transforms = tvm, tvt
    sys.modules.update(
        {"torchvision": tv, "torchvision.models": tvm, "torchvision.transforms": tvt}
    )
    ic = types.ModuleType("icecream")
    ic.ic = lambda *a, **k: None
    sys.modules["icecream"] = ic
    pd = types.ModuleType("pandas")  # only for the import of an annotation; removed after
    pd.DataFrame = type("DataFrame", (), {})
    sys.modules["pandas"] = pd
    vu = types.ModuleType("utils.vit_utils")
    vu.get_loss_multipliers = lambda normalize, mask_loss_mul, prediction_loss_mul: dict(
        prediction_loss_mul=prediction_loss_mul, mask_loss_mul=mask_loss_mul
    )
    vu.plot_vis_on_image = lambda *a, **k: None
    vu.visu = lambda *a, **k: None
    sys.modules["utils.vit_utils"] = vu


def _batch(images: torch.Tensor, target: torch.Tensor) -> dict:
    """The authors' batch dict; pixel_values = ViTFeatureExtractor: (x-0.5)/0.5."""
    px = ((images - 0.5) / 0.5).unsqueeze(1)
    return {
        "pixel_values": px,
        "resized_and_normalized_image": images.clone(),
        "image": images.clone(),
        "target_class": target,
    }


def _freeze(model) -> None:
    for p in model.vit_for_classification_image.parameters():
        p.requires_grad = False
    for p in model.vit_for_patch_classification.vit.embeddings.parameters():
        p.requires_grad = False


def _lightning_step(model, opt, sched, batch):
    """One automatic-optimisation step of Lightning 1.5 (one batch per epoch)."""
    out = model.training_step(batch, 0)
    opt.zero_grad()
    out["loss"].backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    lr = opt.param_groups[0]["lr"]
    opt.step()
    sched.step()
    return out, grads, lr


def main(argv=None) -> int:
    a = parse_args(argv, __doc__, "checkout of LTX-Code/LTX")
    # transformers probes for torchvision at import: import it before the stubs
    from transformers import ViTForImageClassification
    from transformers.models.vit import modeling_vit

    # models/modeling_vit_patch_classification.py:10 imports ViTEncoder, which
    # transformers 5 no longer has; the file never uses it.
    if not hasattr(modeling_vit, "ViTEncoder"):
        modeling_vit.ViTEncoder = None
    _install_stubs()
    sys.path.insert(0, str(a.repo.resolve()))
    from config import config

    tmp = Path(tempfile.mkdtemp(prefix="ltx_refs_"))
    config["vit"].update(img_size=IMG, patch_size=PATCH, activation_function="sigmoid")
    config["vit"]["experiments_path"] = str(tmp)

    import evaluation.perturbation_tests.seg_cls_perturbation_tests as pert
    import main.seg_classification.image_classification_with_token_classification_model_opt as opt_mod  # noqa: E501
    from main.seg_classification.image_classification_with_token_classification_model import (
        ImageClassificationWithTokenClassificationModel,
    )
    from models.modeling_vit_patch_classification import ViTForMaskGeneration

    del sys.modules["pandas"]  # the stub must not reach sklearn/narwhals

    pert.EXPERIMENTS_FOLDER_PATH = str(tmp)
    torch.manual_seed(0)
    # a large init makes the tiny explainee's prediction depend on the pixels
    explainee = ViTForImageClassification(tiny_vit_config(0.5)).eval()
    cfg = tiny_vit_config(0.2)
    explainer = ViTForMaskGeneration(cfg)
    kwargs = dict(
        model_for_classification_image=explainee,
        model_for_mask_generation=explainer,
        warmup_steps=WARMUP,
        total_training_steps=TOTAL,
        plot_path=str(tmp),
        is_explainer_convnet=False,
        is_explainee_convnet=False,
        lr=LR,
        activation_function="sigmoid",
        train_model_by_target_gt_class=True,
        use_logits_only=False,
        img_size=IMG,
        patch_size=PATCH,
        mask_loss="bce",
        mask_loss_mul=MASK_LOSS_MUL,
        prediction_loss_mul=PRED_LOSS_MUL,
    )
    model = ImageClassificationWithTokenClassificationModel(experiment_path=tmp, **kwargs)
    _freeze(model)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, IMG, IMG, generator=g)  # [0,1] NCHW
    target = torch.tensor([0, 3, 1, 4])  # "ground-truth" classes (train_model_by_target_gt_class)
    batch = _batch(images, target)
    arrays = {
        "images": images.numpy(),
        "target_class": target.numpy(),
        "pixel_values": batch["pixel_values"].squeeze(1).numpy(),
    }
    arrays.update(state_arrays(explainee, "explainee/"))
    arrays.update(state_arrays(explainer, "explainer/"))
    with torch.no_grad():
        fwd = model.forward(batch["pixel_values"].squeeze(1), batch["image"].clone(), target)
    lo = fwd.lossloss_output
    arrays.update(
        tokens_mask=fwd.tokens_mask.numpy(),
        interpolated_mask=fwd.interpolated_mask.numpy(),
        masked_image=fwd.masked_image.numpy(),  # normalised in place: (x*m-0.5)/0.5
        masked_logits=fwd.vit_masked_output.logits.numpy(),
        loss=lo.loss.numpy(),
        pred_loss=lo.pred_loss.numpy(),
        mask_loss=lo.mask_loss.numpy(),
    )
    opt_cfg = model.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    losses, lrs = [], []
    for step in range(3):
        out, grads, lr = _lightning_step(model, opt, sched, _batch(images, target))
        losses.append(out["loss"].item())
        lrs.append(lr)
        arrays.update({f"grad{step}/{k}": v for k, v in grads.items()})
    arrays.update(step_loss=np.array(losses), step_lr=np.array(lrs))
    arrays.update(state_arrays(explainer, "after/explainer/"))
    np.savez_compressed(a.out / "ltx_stage_a.npz", **arrays)
    print("ltx stage A losses", losses, "lrs", lrs)

    # ---- stage B: per-image fine-tune from the stage-A weights and optimiser state
    stage_b = {}
    with torch.no_grad():
        clean_pred = explainee(batch["pixel_values"].squeeze(1)).logits.argmax(-1)
    # the authors' stop value 6.0 on every image; then image 2 again with the
    # threshold raised to 40 so that the stop rule fires (no image here reaches 6)
    for run, (i, stop) in enumerate([(0, 6.0), (1, 6.0), (2, 6.0), (3, 6.0), (2, 40.0)]):
        key = f"img{i}" if stop == 6.0 else f"img{i}_stop{stop:g}"
        opt_mod.POS_AUC_STOP_VALUE = stop
        objs = tmp / f"objs_{run}"
        objs.mkdir()
        explainer_b = ViTForMaskGeneration(cfg)
        explainer_b.load_state_dict(explainer.state_dict())
        m = opt_mod.OptImageClassificationWithTokenClassificationModel(
            best_auc_objects_path=str(objs),
            best_auc_plot_path=str(tmp),
            checkpoint_epoch_idx=3,
            n_epochs=3 + STAGE_B_EPOCHS,
            optimize_by_pos=True,
            **{**kwargs, "model_for_mask_generation": explainer_b},
        )
        m.trainer = _Trainer()
        _freeze(m)
        ob = m.configure_optimizers()
        o, s = ob["optimizer"], ob["lr_scheduler"]["scheduler"]
        # deep copy: load_state_dict keeps CPU tensors shared with the source optimiser
        o.load_state_dict(copy.deepcopy(opt.state_dict()))
        s.load_state_dict(sched.state_dict())
        # the explained class is the explainee's prediction so the clean image scores 1
        b = _batch(images[i : i + 1], clean_pred[i : i + 1])
        masks, losses_b, lrs_b, epochs_run = [], [], [], 0
        for epoch in range(3, 3 + STAGE_B_EPOCHS):
            m.current_epoch = epoch
            out, _, lr = _lightning_step(m, o, s, b)
            masks.append(out["image_mask"].detach().numpy())
            losses_b.append(out["loss"].item())
            lrs_b.append(lr)
            m.training_epoch_end([out])
            epochs_run += 1
            if m.trainer.should_stop:
                break
        # per-epoch AUCs again, straight from the authors' evaluation on each
        # mask, recording the pixels torch.topk chose (the masks have ties)
        ep_auc, ep_idx = [], np.full((len(masks), 9, IMG * IMG), -1, np.int16)
        orig_topk = torch.topk
        for e, mk in enumerate(masks):
            chosen = []

            def topk(*args, _orig=orig_topk, _chosen=chosen, **kw):
                out = _orig(*args, **kw)
                _chosen.append(out[1].reshape(-1).numpy())
                return out

            torch.topk = topk
            try:
                ep_auc.append(
                    pert.run_perturbation_test_opt(
                        model=explainee,
                        outputs=[
                            {**b, "image_resized": b["image"], "image_mask": torch.tensor(mk)}
                        ],
                        stage="train",
                        epoch_idx=0,
                        is_convnet=False,
                        verbose=False,
                        img_size=IMG,
                        perturbation_type="POS",
                    )
                )
            finally:
                torch.topk = orig_topk
            for j, c in enumerate(chosen):
                ep_idx[e, j, : len(c)] = c
        stage_b[f"{key}/epoch_topk_idx"] = ep_idx  # [E, 9, H*W] zeroed pixels, -1 padded
        stage_b[f"{key}/image"] = b["image"].numpy()
        stage_b[f"{key}/target_class"] = b["target_class"].numpy()
        stage_b[f"{key}/stop_value"] = np.float64(stop)
        stage_b[f"{key}/epoch_masks"] = np.stack(masks)  # [E, 1, 1, H, W] pre-step masks
        stage_b[f"{key}/epoch_auc"] = np.array(ep_auc)
        stage_b[f"{key}/epoch_loss"] = np.array(losses_b)
        stage_b[f"{key}/epoch_lr"] = np.array(lrs_b)
        stage_b[f"{key}/best_auc"] = np.float64(m.best_auc)
        stage_b[f"{key}/best_epoch"] = np.int64(m.best_auc_epoch - 3)
        stage_b[f"{key}/best_mask"] = m.best_auc_vis.detach().numpy()
        stage_b[f"{key}/epochs_run"] = np.int64(epochs_run)
        stage_b[f"{key}/stopped_early"] = np.bool_(epochs_run < STAGE_B_EPOCHS)
        print(f"ltx stage B {key}: aucs {ep_auc} best {m.best_auc} @ {m.best_auc_epoch - 3}")
    stage_b["authors_pos_auc_stop_value"] = np.float64(6.0)
    np.savez_compressed(a.out / "ltx_stage_b.npz", **stage_b)

    # ---- the POS perturbation AUC on fixed masks (ties-free random masks)
    g = torch.Generator().manual_seed(7)
    vis = torch.rand(4, 1, IMG, IMG, generator=g)
    outs = [
        {
            "image_resized": images[j : j + 1],
            "image_mask": vis[j : j + 1],
            "target_class": clean_pred[j : j + 1],
        }
        for j in range(4)
    ]
    auc_each = [
        pert.eval_perturbation_test(
            Path(tmp), explainee, [o_], img_size=IMG, perturbation_type="POS"
        )
        for o_ in outs
    ]
    auc_all = pert.eval_perturbation_test(Path(tmp), explainee, outs, img_size=IMG)
    np.savez_compressed(
        a.out / "ltx_auc.npz",
        images=images.numpy(),
        vis=vis.numpy(),
        target_class=clean_pred.numpy(),
        auc_each=np.array(auc_each),
        auc_all=np.float64(auc_all),
    )
    print("ltx auc", auc_each, auc_all)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
