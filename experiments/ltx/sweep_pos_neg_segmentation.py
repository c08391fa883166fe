"""LTX's POS/NEG perturbation and segmentation evaluations as sweeps (Barkan et al., ICDM 2023).

Reproduces (SPEC §4, §7):

* ``full``: the POS/NEG perturbation table on ImageNet-val with ViT-B/16 —
  zero the top (POS) or bottom (NEG) 10…90% of pixels, top-1 agreement with
  ŷ, AUC ×100 (lower POS, higher NEG are better): columns ``pos_auc`` and
  ``neg_auc``;
* ``segmentation``: the segmentation table — the map thresholded at its mean
  against the object mask: pixel accuracy, mIoU and AP (Chefer/LTX's AP over
  both classes) per image: columns ``pixel_accuracy``, ``miou``,
  ``average_precision``. The authors use ImageNet-Segmentation, VOC and COCO
  masks; what tfds ships here is VOC 2007 *boxes*, so this variant scores the
  union of object boxes (a box-level stand-in for the paper's masks; the
  dataset figures pool pixels, see ``metrics.pooled_segmentation``, where the
  sweep's summary averages per image).

Commands::

    fastxai sweep experiments/ltx/sweep_pos_neg_segmentation.py:full:/data/tfds
    fastxai sweep experiments/ltx/sweep_pos_neg_segmentation.py:segmentation:/data/tfds
    fastxai sweep experiments/ltx/sweep_pos_neg_segmentation.py:smoke   # offline
    fastxai sweep experiments/ltx/sweep_pos_neg_segmentation.py:smoke:runs/ltx_cnn

Data under ``DIR`` (default ``~/tensorflow_datasets``): ``imagenet2012``
(full) or ``voc/2007`` (segmentation) built as ArrayRecord, the ViT-B/16 as
``DIR/vit-base-patch16-224.safetensors`` and an LTX explainer trained for it
(``fastxai train ltx``) in ``DIR/ltx_vit_b16``, loaded with ``runs.load`` for
the explained model. ``smoke``: the embedded benchmark (exact object masks), a
random-weight small CNN (``random:0``, widths 8, 8; 8 classes, 32²), both
metric families, per-input baselines; ``smoke:WORKDIR`` adds ``ltx`` with an
LTX (``kind="cnn"``) trained for that CNN in ``WORKDIR``.
"""

import os

from fastxai_jax.configs.sweep_protocols import groundtruth, learned, parse_arg, smoke, smoke_cnn

POS_NEG = {"name": "pos_neg", "options": {"substrate": "zeros", "score": "top1"}}
SEGMENTATION = {"name": "segmentation", "options": {"threshold": "mean", "ap_classes": "both"}}


def get_config(arg: str = "full") -> dict:
    """An LTX sweep; ``arg``: ``"full[:DIR]"``, ``"segmentation[:DIR]"`` or ``"smoke"``."""
    variant, root = parse_arg(arg, "ltx", ("full", "segmentation", "smoke"), smoke_explainer=True)
    if variant == "smoke":
        return smoke(
            "ltx_smoke",
            models=[smoke_cnn()],
            data=groundtruth(),
            methods=[*learned("ltx", root), {"name": "saliency"},
                     {"name": "ig", "options": {"num_steps": 8}}],
            metrics=[POS_NEG, SEGMENTATION],
        )  # fmt: skip
    data = {"source": "tfds", "name": "imagenet2012", "split": "validation", "data_dir": root,
            "num_images": 1000, "image_size": 224}  # fmt: skip
    if variant == "segmentation":
        data = {"source": "tfds", "name": "voc/2007", "split": "test", "data_dir": root,
                "image_size": 224}  # fmt: skip
    return {
        "name": f"ltx_{variant}",
        "models": [{"name": "vit_b16",
                    "weights": os.path.join(root, "vit-base-patch16-224.safetensors"),
                    "label": "vit_b16"}],
        "data": data,
        "methods": [
            {"name": "ltx", "explainer": os.path.join(root, "ltx_vit_b16")},
            {"name": "saliency"},
            {"name": "ig", "options": {"num_steps": 50}},
            {"name": "rise"},
        ],
        "metrics": [POS_NEG] if variant == "full" else [SEGMENTATION],
        "shard_size": 64,
        "output_dir": f"runs/ltx_{variant}",
        "seed": 0,
    }  # fmt: skip
