"""DAX parity with the authors' code (iiscleap/DAX) on committed references.

``tests/fixtures/parity/dax_refs.npz`` holds what the authors' own modules
computed on fixed inputs (``experiments/parity/dax_refs.py`` says how to
regenerate it); the weights are rebuilt here with the same recipe
(:func:`fixed`). Every row is deterministic: the tolerance is 1e-4 of the
reference's largest magnitude. Print the table with
``PYTHONPATH=. python tests/parity/test_dax_parity.py`` (repository root).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.explainers import dax as dax_lib
from fastxai_jax.explainers._dax_pipeline import (
    combine_snapshots,
    network_inputs,
    smooth_snapshot,
)
from fastxai_jax.explainers._superpixels import superpixel_segments
from fastxai_jax.models.dax_nets import DaxMaskGenerator

REFS = Path(__file__).parents[1] / "fixtures" / "parity" / "dax_refs.npz"
TOLERANCE = 1e-4
# as in experiments/parity/dax_refs.py
BATCH, SIDE, NUM_CLASSES = 8, 32, 5
HSV_GROUPS = np.array([2, 0, 1, 1, 0, 1, 0, 0])  # row 0 alone, rows 2, 3, 5 together
QUICKSHIFT = {"kernel_size": 2, "max_dist": 10, "ratio": 0.5}
SNAPSHOT_BORDER = 7 / SIDE  # their 7 pixels


def fixed(shape: tuple[int, ...], seed: int, scale: float, offset: float = 0.0) -> np.ndarray:
    """The references' weight recipe: ``offset + scale · N(0, 1)`` from ``RandomState(seed)``."""
    values = np.random.RandomState(seed).standard_normal(shape)
    return (offset + scale * values).astype(np.float32)


def _conv(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (2, 3, 1, 0))  # torch OIHW -> flax HWIO


def _authors_weights(seed: int) -> tuple[dict, dict]:
    """The references' StudentModel weights as (generator, student) flax variables."""
    fc1 = fixed((512, 3 * SIDE * SIDE), seed + 4, 0.01)
    # torch flattens [C, H, W]; the flax student flattens [H, W, C]
    fc1 = fc1.reshape(512, 3, SIDE, SIDE).transpose(2, 3, 1, 0).reshape(-1, 512)
    generator = {
        "params": {
            "Conv_0": {"kernel": _conv(fixed((32, 3, 7, 7), seed, 0.05)),
                       "bias": fixed((32,), seed + 1, 0.05)},
            "Conv_1": {"kernel": _conv(fixed((1, 32, 7, 7), seed + 2, 0.05)),
                       "bias": fixed((1,), seed + 3, 0.05)},
        }
    }  # fmt: skip
    student = {
        "params": {
            "Dense_0": {"kernel": fc1, "bias": fixed((512,), seed + 5, 0.05)},
            "BatchNorm_0": {"scale": fixed((512,), seed + 6, 0.1, 1.0),
                            "bias": fixed((512,), seed + 7, 0.1)},
            "Dense_1": {"kernel": fixed((1, 512), seed + 8, 0.05).T,
                        "bias": fixed((1,), seed + 9, 0.05)},
        },
        "batch_stats": {"BatchNorm_0": {"mean": np.zeros(512, np.float32),
                                        "var": np.ones(512, np.float32)}},
    }  # fmt: skip
    return jax.tree.map(jnp.asarray, generator), jax.tree.map(jnp.asarray, student)


def _relative(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-30))


def _partition(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered by first appearance (compares segmentations as partitions)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse].reshape(labels.shape)


@functools.cache
def parity_rows() -> dict[str, float]:
    """Component → max relative difference to the authors' code (``max|Δ| / max|ref|``)."""
    ref = np.load(REFS)
    rows = {}
    image, segments = jnp.asarray(ref["image"]), jnp.asarray(ref["segments"])
    target, num_segments = int(ref["target"]), int(ref["segments"].max()) + 1
    z = jnp.asarray(ref["z"])

    for name, options, expected in [
        ("segments, quickshift (their defaults)", {}, ref["segments_default"]),
        ("segments, quickshift (kernel 2, max_dist 10)", QUICKSHIFT, ref["segments"]),
    ]:
        ours, _ = superpixel_segments(np.asarray(image)[None], "quickshift", **options)
        rows[name] = float(np.mean(_partition(ours[0]) != _partition(expected)))

    fill = dax_lib.segment_fill(image, segments, num_segments, "grey")
    off_fill = np.zeros(image.shape, np.float32)  # their fill, read off the perturbed images
    for k in range(num_segments):
        row = int(np.flatnonzero(ref["z"][:, k] == 0)[0])
        off_fill[ref["segments"] == k] = ref["perturbed"][row][ref["segments"] == k]
    rows["grey fill"] = _relative(fill, off_fill)
    rows["perturbed images"] = _relative(
        dax_lib.perturb(image, segments, fill, z), ref["perturbed"]
    )

    classifier_w = jnp.asarray(fixed((SIDE * SIDE * 3, NUM_CLASSES), 1, 0.05))

    def apply_fn(params, x):
        return jnp.reshape(x, (x.shape[0], -1)) @ params

    probs = dax_lib.query_probabilities(
        apply_fn, classifier_w, image, segments, fill, z, jnp.int32(target), chunk=5
    )
    rows["black-box probabilities"] = _relative(probs, ref["probs"][:, target])
    rows["kernel weights"] = _relative(dax_lib.lime_kernel_weights(z), ref["weights"])

    inputs = network_inputs(
        jnp.asarray(ref["perturbed"][:BATCH]), jnp.asarray(HSV_GROUPS), True, 255.0
    )
    rows["network inputs (÷ max, HSV, × 255)"] = _relative(inputs, ref["net_inputs"])
    net_inputs = jnp.asarray(ref["net_inputs"])  # the later rows start from theirs

    generator_vars, student_vars = _authors_weights(100)
    mask = DaxMaskGenerator(normalise="batch").apply(generator_vars, net_inputs)
    rows["mask generator (batch min-max)"] = _relative(mask, ref["mask"])

    config = dax_lib.DaxConfig(mask_normalise="batch", reduction="mean", dropout=0.0)
    p = jnp.asarray(ref["probs"][:BATCH, target], jnp.float32)
    w = jnp.asarray(ref["weights"][:BATCH], jnp.float32)

    def loss_fn(gen_params, student_params):
        student = {"params": student_params, "batch_stats": student_vars["batch_stats"]}
        loss, _ = dax_lib.dax_loss(gen_params, student, net_inputs, p, w, jax.random.key(0), config)
        return loss

    loss, (g_gen, g_student) = jax.value_and_grad(loss_fn, argnums=(0, 1))(
        generator_vars, student_vars["params"]
    )
    rows["loss on a fixed batch (train mode)"] = _relative(loss, ref["loss"])
    g_gen = g_gen["params"]
    rows["loss gradient: generator conv 1"] = _relative(
        g_gen["Conv_0"]["kernel"], _conv(ref["grad_conv1"])
    )
    rows["loss gradient: generator conv 2"] = _relative(
        g_gen["Conv_1"]["kernel"], _conv(ref["grad_conv2"])
    )
    # (the last conv's bias is left out: the batch min-max cancels a shift, so its
    # gradient is 0 up to float noise in both frameworks, ~1e-10 here)
    rows["loss gradient: student BatchNorm scale"] = _relative(
        g_student["BatchNorm_0"]["scale"], ref["grad_bn_scale"]
    )
    rows["loss gradient: student output layer"] = _relative(
        g_student["Dense_1"]["kernel"], ref["grad_fc2"].T
    )

    raw = jnp.asarray(ref["snapshot_raw"])
    smoothed = jax.vmap(lambda m: smooth_snapshot(m, 8, SNAPSHOT_BORDER))(raw)
    rows["snapshot: max-pool 8, bilinear ×8, min-max, border"] = _relative(
        smoothed, ref["snapshot_smoothed"]
    )
    rows["snapshots combined (mean, min-max)"] = _relative(
        combine_snapshots(raw, "bilinear", 8, SNAPSHOT_BORDER), ref["snapshot_combined"]
    )
    return rows


ROWS = [
    "segments, quickshift (their defaults)",
    "segments, quickshift (kernel 2, max_dist 10)",
    "grey fill",
    "perturbed images",
    "black-box probabilities",
    "kernel weights",
    "network inputs (÷ max, HSV, × 255)",
    "mask generator (batch min-max)",
    "loss on a fixed batch (train mode)",
    "loss gradient: generator conv 1",
    "loss gradient: generator conv 2",
    "loss gradient: student BatchNorm scale",
    "loss gradient: student output layer",
    "snapshot: max-pool 8, bilinear ×8, min-max, border",
    "snapshots combined (mean, min-max)",
]


@pytest.mark.parametrize("component", ROWS)
def test_dax_matches_the_authors_code(component):
    """Segments: the fraction of pixels labelled differently must be 0."""
    rows = parity_rows()
    assert set(rows) == set(ROWS)
    limit = 0.0 if component.startswith("segments") else TOLERANCE
    assert rows[component] <= limit, (component, rows[component])


def test_the_old_colour_fill_is_outside_the_tolerance():
    """The segment's own mean colour (the former default) is not the authors' fill."""
    ref = np.load(REFS)
    image, segments = jnp.asarray(ref["image"]), jnp.asarray(ref["segments"])
    num_segments = int(ref["segments"].max()) + 1
    colour = dax_lib.segment_fill(image, segments, num_segments, "mean")
    perturbed = dax_lib.perturb(image, segments, colour, jnp.asarray(ref["z"]))
    assert _relative(perturbed, ref["perturbed"]) > 100 * TOLERANCE


if __name__ == "__main__":
    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    print("| DAX component | max relative difference to the authors' code |")
    print("|---|---|")
    for name in ROWS:
        print(f"| {name} | {parity_rows()[name]:.1e} |")
