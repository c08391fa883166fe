"""What a removed pixel becomes: one vocabulary for explainers and metrics (SPEC §7).

A :class:`Substrate` lives in ``[0, 1]`` pixel space, the space every
``apply_fn`` takes. Kinds:

* ``"constant"``: the colour ``value`` (one number or one per channel) in
  ``[0, 1]``; ``Substrate("constant", 0.0)`` is black (MFABA's and RISE's
  deletion, LIME's ``hide_color=0``).
* ``"family_mean"``: the pixel whose normalisation is 0 under the target's
  family, i.e. the family's mean colour (FEX's and FastSHAP's fill 0, the FEX
  paper's gray patches).
* ``"blur"``: RISE's insertion canvas, a Gaussian of size 11 and σ 5 per
  channel with "same" padding by the family's mean (0 without a family).
* ``"image_mean"``: each image's own per-channel mean colour.

Explainers state their ``fill`` in one of two spaces: ``[0, 1]`` pixels (DAX)
or the target's normalised space (FEX, FastSHAP, RISE with ``family``);
:func:`to_fill` converts a substrate to either. The metrics' legacy names
(``"zeros"``, ``"zeros_normalised"``, ``"blur"``, ``"mean"``) map onto kinds
through :func:`as_substrate`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.models.normalization import FAMILY_NORMALISATION

KINDS = ("constant", "family_mean", "blur", "image_mean")
FILL_SPACES = ("pixel", "normalised")
# The metrics' earlier names for the same substrates.
LEGACY_NAMES = {
    "zeros": ("constant", 0.0),
    "zeros_normalised": ("family_mean", 0.0),
    "blur": ("blur", 0.0),
    "mean": ("image_mean", 0.0),
}


class _SubstrateFields(NamedTuple):
    kind: str
    value: float | tuple[float, ...]


class Substrate(_SubstrateFields):
    """What a removed pixel becomes, in ``[0, 1]`` pixel space.

    Attributes:
      kind: one of :data:`KINDS`.
      value: the colour of a ``"constant"`` substrate, a number or a per-channel
        tuple in ``[0, 1]`` (ignored, and 0, for the other kinds).
    """

    __slots__ = ()

    def __new__(cls, kind: str = "constant", value: Any = 0.0) -> Substrate:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        if np.ndim(value) > 1:
            raise ValueError(f"value must be a number or a per-channel tuple; got {value!r}")
        values = np.atleast_1d(np.asarray(value, np.float64))
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError(f"value must be finite numbers; got {value!r}")
        if kind == "constant" and (values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(f"value must lie in [0, 1] (a pixel colour); got {value!r}")
        value = float(values[0]) if np.ndim(value) == 0 else tuple(float(v) for v in values)
        return super().__new__(cls, kind, value)

    def pixel_value(self, family: str | None, channels: int = 3) -> np.ndarray:
        """``[C]`` float64 colour in ``[0, 1]`` of a constant-colour substrate.

        Raises ``ValueError`` for kinds that depend on the image (blur, image mean).
        """
        if self.kind == "constant":
            return np.broadcast_to(np.asarray(self.value, np.float64), (channels,)).copy()
        if self.kind == "family_mean":
            if family is None:
                raise ValueError('kind "family_mean" needs a normalisation family; got None')
            return np.asarray(_family(family, channels)[0], np.float64)
        raise ValueError(f"kind {self.kind!r} depends on the image; it has no single colour")

    def to_normalised(self, family: str, channels: int = 3) -> np.ndarray:
        """``[C]`` float64 value of a constant-colour substrate in ``family``'s normalised
        space: ``(pixel - mean) / std``."""
        mean, std = _family(family, channels)
        return (self.pixel_value(family, channels) - np.asarray(mean)) / np.asarray(std)

    def image(self, x: jax.Array, family: str | None = None) -> jax.Array:
        """The substrate image for ``x: [B, H, W, C]`` in ``[0, 1]``.

        Returns:
          ``[B, H, W, C]`` images of ``x``'s dtype.
        """
        channels = x.shape[-1]
        if self.kind == "constant":
            if self.value == 0.0:
                return jnp.zeros_like(x)
            colour = jnp.asarray(self.pixel_value(family, channels), x.dtype)
            return jnp.broadcast_to(colour.reshape(1, 1, 1, channels), x.shape)
        if self.kind == "family_mean":
            colour = jnp.asarray(self.pixel_value(family, channels), x.dtype)
            return jnp.broadcast_to(colour.reshape(1, 1, 1, channels), x.shape)
        if self.kind == "blur":
            return gaussian_blur(x, fill_for(family, channels, x.dtype))
        return jnp.broadcast_to(jnp.mean(x, axis=(1, 2), keepdims=True), x.shape)


def _family(family: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if family not in FAMILY_NORMALISATION:
        raise ValueError(
            f"normalisation must be one of {sorted(FAMILY_NORMALISATION)}; got {family!r}"
        )
    mean, std = FAMILY_NORMALISATION[family]
    if len(mean) != channels:
        raise ValueError(f"normalisation {family!r} has {len(mean)} channels; x has {channels}")
    return mean, std


def as_substrate(spec: Any) -> Substrate:
    """A :class:`Substrate` from itself, a legacy name or a ``[0, 1]`` colour.

    Args:
      spec: a ``Substrate``; ``"zeros"``, ``"zeros_normalised"``, ``"blur"`` or
        ``"mean"`` (the metrics' names); or a number / per-channel tuple (constant).
    """
    if isinstance(spec, Substrate):
        return spec
    if isinstance(spec, str):
        if spec not in LEGACY_NAMES:
            raise ValueError(f"substrate must be one of {tuple(LEGACY_NAMES)}; got {spec!r}")
        return Substrate(*LEGACY_NAMES[spec])
    return Substrate("constant", spec)


def to_fill(substrate: Any, space: str, family: str | None = None) -> float:
    """An explainer's scalar ``fill`` option for ``substrate``.

    Args:
      substrate: anything :func:`as_substrate` takes (constant colour or family mean).
      space: ``"pixel"`` (a ``[0, 1]`` colour: DAX's ``fill``) or ``"normalised"``
        (the target's normalised space: FEX's, FastSHAP's and RISE's ``fill``).
      family: the target's normalisation family (needed for ``"normalised"`` and
        for a ``"family_mean"`` substrate).

    Returns:
      The fill as a float; ``ValueError`` if the channels would need different values.
    """
    substrate = as_substrate(substrate)
    if space not in FILL_SPACES:
        raise ValueError(f"space must be one of {FILL_SPACES}; got {space!r}")
    if space == "normalised":
        if family is None:
            raise ValueError('space "normalised" needs family= (e.g. "imagenet")')
        values = substrate.to_normalised(family)
    else:
        values = substrate.pixel_value(family)
    if not np.allclose(values, values[0], rtol=0.0, atol=1e-9):
        raise ValueError(
            f"substrate {substrate} gives per-channel fills {values.tolist()} in {space} "
            "space; the explainer's fill takes one number"
        )
    return float(values[0])


def explainer_fill(fill: Any, space: str, family: str | None = None) -> Any:
    """An explainer's ``fill`` option as it always took it: a :class:`Substrate`
    converted with :func:`to_fill`, anything else unchanged (the method checks it).

    Raises:
      ValueError: naming ``fill`` if the substrate has no single value in ``space``.
    """
    if not isinstance(fill, Substrate):
        return fill
    try:
        return to_fill(fill, space, family)
    except ValueError as err:
        raise ValueError(f"fill={fill} cannot be used here: {err}") from err


@functools.lru_cache(maxsize=8)
def gaussian_kernel_1d(size: int = 11, sigma: float = 5.0, truncate: float = 4.0) -> np.ndarray:
    """RISE's 1-D blur kernel: a Gaussian filter (reflect boundary) of a centred delta.

    Equals one factor of ``scipy.ndimage.gaussian_filter(delta_{size×size}, sigma)``,
    the 2-D kernel RISE convolves with. Sums to 1.

    Returns:
      ``[size]`` float64 weights.
    """
    radius = int(truncate * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / float(sigma)) ** 2)
    weights /= weights.sum()
    delta = np.zeros(size)
    delta[size // 2] = 1.0
    padded = np.pad(delta, radius, mode="symmetric")  # numpy 'symmetric' == scipy 'reflect'
    return np.array([np.dot(weights, padded[i : i + 2 * radius + 1]) for i in range(size)])


def fill_for(normalisation: str | None, channels: int, dtype) -> jax.Array:
    """``[C]`` pixel value whose normalisation is 0 (0 when no family is given)."""
    if normalisation is None:
        return jnp.zeros((channels,), dtype)
    return jnp.asarray(_family(normalisation, channels)[0], dtype)


def gaussian_blur(x: jax.Array, fill: jax.Array, size: int = 11, sigma: float = 5.0) -> jax.Array:
    """Separable per-channel Gaussian blur with constant padding ``fill``.

    Args:
      x: ``[B, H, W, C]`` images.
      fill: ``[C]`` padding value (the blur is ``blur0(x − fill) + fill`` with zero padding).
      size: kernel size.
      sigma: kernel σ.

    Returns:
      ``[B, H, W, C]`` blurred images.
    """
    channels = x.shape[-1]
    kernel = jnp.asarray(gaussian_kernel_1d(size, sigma), x.dtype)
    shifted = x - fill.reshape(1, 1, 1, channels)
    pad = size // 2
    dims = ("NHWC", "HWIO", "NHWC")
    vertical = jnp.tile(kernel.reshape(size, 1, 1, 1), (1, 1, 1, channels))
    horizontal = jnp.tile(kernel.reshape(1, size, 1, 1), (1, 1, 1, channels))
    out = jax.lax.conv_general_dilated(
        shifted,
        vertical,
        (1, 1),
        ((pad, pad), (0, 0)),
        dimension_numbers=dims,
        feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST,
    )
    out = jax.lax.conv_general_dilated(
        out,
        horizontal,
        (1, 1),
        ((0, 0), (pad, pad)),
        dimension_numbers=dims,
        feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST,
    )
    return out + fill.reshape(1, 1, 1, channels)
