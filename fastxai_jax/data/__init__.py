"""Data: the embedded ground-truth benchmark, TFDS sources, preprocessing, batching."""

from fastxai_jax.data.batching import (
    ArraySource,
    batch_indices,
    iterate_batches,
    num_batches,
    stack_examples,
)
from fastxai_jax.data.groundtruth import CLASS_NAMES, NUM_CLASSES, class_name, make_benchmark
from fastxai_jax.data.preprocess import (
    boxes_to_mask,
    make_preprocess,
    normalise_np,
    resize_and_center_crop,
)
from fastxai_jax.data.tfds_sources import DATASETS, load_split

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "NUM_CLASSES",
    "ArraySource",
    "batch_indices",
    "boxes_to_mask",
    "class_name",
    "iterate_batches",
    "load_split",
    "make_benchmark",
    "make_preprocess",
    "normalise_np",
    "num_batches",
    "resize_and_center_crop",
    "stack_examples",
]
