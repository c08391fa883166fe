"""Loads the committed parity references and the tiny ResNet they were made with."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.models import convert
from fastxai_jax.models.normalization import normalise
from fastxai_jax.models.resnet import ResNet

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "parity"


def relative(ours, ref) -> float:
    """``max |ours − ref| / max |ref|``."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def print_parity_table(method: str, parity_rows) -> None:
    """Prints ``parity_rows()`` (component → max relative difference to the authors'
    code) as a Markdown table, at the matmul precision of ``tests/conftest.py``."""
    jax.config.update("jax_default_matmul_precision", "highest")
    print(f"| {method} component | max relative difference to the authors' code |")
    print("|---|---|")
    for name, value in parity_rows().items():
        print(f"| {name} | {value:.1e} |")


def load(dtype=jnp.float64):
    """``(apply_fn, variables, images, target, maps)``; call under ``jax.enable_x64``."""
    state = convert.load_state_dict(FIXTURES / "tiny_resnet.safetensors")
    module = ResNet(stage_sizes=(1, 1, 1, 1), block="basic", num_classes=1000, width=8)
    variables = convert.convert_torchvision_resnet(state, 18, module=module)
    variables = jax.tree.map(lambda v: jnp.asarray(v, dtype), variables)
    inputs = np.load(FIXTURES / "inputs.npz")
    maps = dict(np.load(FIXTURES / "authors_maps.npz"))

    def apply_fn(params, x):
        return module.apply(params, normalise(x))[0]

    images = jnp.asarray(inputs["images"], dtype)
    return apply_fn, variables, images, jnp.asarray(inputs["target"]), maps
