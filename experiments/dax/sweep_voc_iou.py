"""DAX's Pascal VOC localisation table as a sweep (Bhattacharya et al., 2024).

Reproduces DAX's VOC IoU@0.2 comparison (SPEC §3): a ResNet-18 fine-tuned on
VOC, each map min-max normalised and thresholded at 0.2, IoU with the
ground-truth box mask (here the union of the image's object boxes after the
resize-and-centre-crop); DAX against the gradient and perturbation baselines.
Read the ``iou`` column's means in ``results.json``'s ``summary``; pointing
game and relevance mass are reported alongside on the same masks.

Commands::

    fastxai sweep experiments/dax/sweep_voc_iou.py:full:/data/tfds
    fastxai sweep experiments/dax/sweep_voc_iou.py:smoke   # offline, embedded benchmark

Data for ``full:DIR`` (``DIR`` defaults to ``~/tensorflow_datasets``):
``voc/2007`` built as ArrayRecord under ``DIR`` (``tfds build voc/2007
--data_dir=DIR --file_format=array_record``) and the fine-tuned ResNet-18 as
``DIR/dax_resnet18_voc.pth`` (a torchvision-layout state dict whose ``fc`` has
VOC's classes; the authors fine-tune torchvision's ImageNet ResNet-18). The
label of an image is the class of its largest object.

``smoke``: the embedded benchmark (object masks exact), a random-weight small
CNN, Saliency and a small DAX; it checks the pipeline, not the table.
"""

import os

from fastxai_jax.configs.sweep_protocols import groundtruth, parse_arg, smoke, smoke_cnn

LOCALISATION = [
    {"name": "iou", "options": {"threshold": 0.2}},
    {"name": "pointing_game"},
    {"name": "relevance_mass"},
]


def get_config(arg: str = "full") -> dict:
    """The DAX VOC sweep; ``arg``: ``"full"``, ``"full:DIR"`` or ``"smoke"``."""
    variant, root = parse_arg(arg, "dax")
    if variant == "smoke":
        return smoke(
            "dax_voc_iou_smoke",
            models=[smoke_cnn()],
            data=groundtruth(),
            methods=[
                {"name": "saliency"},
                {"name": "dax", "options": {"num_samples": 16, "epochs": 1, "batch_size": 8}},
            ],
            metrics=LOCALISATION,
        )  # fmt: skip
    return {
        "name": "dax_voc_iou",
        "models": [{"name": "resnet18", "weights": os.path.join(root, "dax_resnet18_voc.pth"),
                    "num_classes": 20, "label": "resnet18_voc"}],
        "data": {"source": "tfds", "name": "voc/2007", "split": "test", "data_dir": root,
                 "image_size": 224},
        "methods": [
            {"name": "dax"},
            {"name": "saliency"},
            {"name": "input_x_gradient"},
            {"name": "ig", "options": {"num_steps": 50}},
            {"name": "smoothgrad"},
            {"name": "gradient_shap"},
            {"name": "rise"},
            {"name": "random"},
        ],
        "metrics": LOCALISATION + [{"name": "insertion_deletion", "options": {"step_size": 224}}],
        "shard_size": 32,
        "output_dir": "runs/dax_voc_iou",
        "seed": 0,
    }  # fmt: skip
