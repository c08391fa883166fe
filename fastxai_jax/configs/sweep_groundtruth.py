"""A small sweep on the embedded benchmark: 4 methods × insertion/deletion, offline.

Command (one process; add ``--coordinator``/``--num-processes``/``--process-id``
or ``--distributed`` for several)::

    fastxai sweep sweep_groundtruth                       # random-weight smoke run
    fastxai sweep sweep_groundtruth:runs/demo/target      # a trained small CNN

Writes ``runs/sweep_groundtruth/results.{csv,json}`` and ``plot_*.png``;
rerunning skips every finished shard.
"""


def get_config(target_workdir: str = "") -> dict:
    """The sweep config; ``target_workdir`` selects trained small-CNN weights."""
    weights = f"target:{target_workdir}" if target_workdir else "random:0"
    return {
        "name": "groundtruth_small",
        "models": [{"name": "small_cnn", "num_classes": 8, "weights": weights, "label": "cnn"}],
        "data": {"source": "groundtruth", "split": "eval", "num_images": 64, "image_size": 64},
        "methods": [
            {"name": "saliency"},
            {"name": "ig", "options": {"num_steps": 16}},
            {"name": "mfaba"},
            {"name": "rise", "options": {"num_masks": 256}},
        ],
        "metrics": [
            {"name": "insertion_deletion", "options": {"step_size": 64}},
            {"name": "sparseness"},
        ],
        "shard_size": 16,
        "output_dir": "runs/sweep_groundtruth",
        "seed": 0,
        "target": "predicted",
    }
