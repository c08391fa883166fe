"""TVE's transfer to new heads as a sweep (Wang et al., ICML 2024).

Reproduces the transfer evaluation (SPEC §5): one TVE explainer, pre-trained
once on the backbone's embeddings, explains downstream models (the same
backbone with a new linear head per task) without task data; fidelity is
scored by insertion/deletion of the explained class (``insertion_auc``,
``deletion_auc`` per model in ``results.json``'s ``summary``), against
per-input baselines on the same heads. The paper's tasks are Cats-vs-Dogs,
Imagenette and CIFAR-10; what tfds ships here are ``imagenette`` (``full``)
and ``cifar10`` (``cifar10``), one sweep each.

Commands::

    fastxai sweep experiments/tve/sweep_transfer.py:full:/data/tfds
    fastxai sweep experiments/tve/sweep_transfer.py:cifar10:/data/tfds
    fastxai sweep experiments/tve/sweep_transfer.py:smoke   # offline
    fastxai sweep experiments/tve/sweep_transfer.py:smoke:runs/tve_cnn

Data under ``DIR`` (default ``~/tensorflow_datasets``): the dataset built as
ArrayRecord, the fine-tuned ViT-B/16 of the task as
``DIR/vit_b16_<task>.safetensors`` (backbone plus that task's head), and the
TVE explainer (``fastxai train tve``) in ``DIR/tve_vit_b16``, loaded with
``runs.load`` for each model (its encoder and head). ``smoke``: the embedded
benchmark with two random-weight small-CNN "heads" and per-input baselines;
``smoke:WORKDIR`` adds ``tve`` with a TVE trained in ``WORKDIR`` for the
first one (``embed_dim`` 8, 32²), explaining both. It checks the pipeline,
not the table.
"""

import os

from fastxai_jax.configs.sweep_protocols import groundtruth, learned, parse_arg, smoke

TASKS = {"full": ("imagenette", "validation", 10), "cifar10": ("cifar10", "test", 10)}


def get_config(arg: str = "full") -> dict:
    """A TVE transfer sweep; ``arg``: ``"full[:DIR]"``, ``"cifar10[:DIR]"`` or ``"smoke"``."""
    variant, root = parse_arg(arg, "tve", ("full", "cifar10", "smoke"), smoke_explainer=True)
    fidelity = {
        "name": "insertion_deletion",
        "options": {"granularity": "patch", "patch_size": 16, "num_steps": 16},
    }
    if variant == "smoke":
        heads = [
            {
                "name": "small_cnn",
                "num_classes": 8,
                "weights": f"random:{seed}",
                "options": {"widths": [8, 8]},
                "label": f"head_{seed}",
            }
            for seed in (0, 1)
        ]
        return smoke(
            "tve_transfer_smoke",
            models=heads,
            data=groundtruth(),
            methods=[*learned("tve", root), {"name": "saliency"},
                     {"name": "ig", "options": {"num_steps": 8}}],
            metrics=[{**fidelity, "options": {**fidelity["options"], "patch_size": 4}}],
        )  # fmt: skip
    name, split, classes = TASKS[variant]
    return {
        "name": f"tve_transfer_{name}",
        "models": [{"name": "vit_b16", "num_classes": classes,
                    "weights": os.path.join(root, f"vit_b16_{name}.safetensors"),
                    "label": f"vit_b16_{name}"}],
        "data": {"source": "tfds", "name": name, "split": split, "data_dir": root,
                 "num_images": 1000, "image_size": 224},
        "methods": [
            {"name": "tve", "explainer": os.path.join(root, "tve_vit_b16")},
            {"name": "saliency"},
            {"name": "ig", "options": {"num_steps": 50}},
            {"name": "rise", "options": {"num_masks": 1000}},
        ],
        "metrics": [fidelity],
        "shard_size": 64,
        "output_dir": f"runs/tve_transfer_{name}",
        "seed": 0,
    }  # fmt: skip
