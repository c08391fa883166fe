"""Per-family input normalisation: models take [0, 1] NHWC images and
normalise them with these constants before the network proper."""

from __future__ import annotations

import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Hugging Face ViT image processors (google/vit-*) and timm's augreg ViTs.
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

FAMILY_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "half": (HALF_MEAN, HALF_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "identity": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def normalise(x: jnp.ndarray, family: str = "imagenet") -> jnp.ndarray:
    """Maps ``x: [..., C]`` in [0, 1] to the family's normalised space."""
    if family not in FAMILY_NORMALISATION:
        raise ValueError(
            f"unknown normalisation family {family!r}; known: {sorted(FAMILY_NORMALISATION)}"
        )
    mean, std = _constants(family, x)
    return (x - mean) / std


def denormalise(x: jnp.ndarray, family: str = "imagenet") -> jnp.ndarray:
    """Inverse of :func:`normalise`."""
    mean, std = _constants(family, x)
    return x * std + mean


def _constants(family: str, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean and std shaped ``[1, ..., 1, C]`` to match ``x``'s rank (no rank promotion)."""
    mean, std = FAMILY_NORMALISATION[family]
    shape = (1,) * (x.ndim - 1) + (len(mean),)
    return jnp.asarray(mean, x.dtype).reshape(shape), jnp.asarray(std, x.dtype).reshape(shape)
