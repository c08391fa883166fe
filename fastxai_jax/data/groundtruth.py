"""The embedded ground-truth benchmark: one planted object decides the class.

Each image is a natural-looking textured background (a smooth two-colour
gradient plus three octaves of low-frequency value noise, muted towards grey,
plus fine per-pixel grain) with

* ONE planted object whose (shape, colour) pair is the class:
  4 shapes {circle, square, triangle, cross} x 2 colours {red, blue} = 8 classes
  (``CLASS_NAMES[k] = f"{colour}_{shape}"``, ``k = colour_index * 4 + shape_index``);
* 1-3 class-irrelevant distractors that never form a class pair: either a
  non-class shape (ring, bar) in any colour, including red and blue, or a class
  shape in a non-class colour (green, yellow, grey, white).

So the class is decided by the conjunction of shape AND colour of exactly one
object: a model (or an explanation) that looks at "anything red" or "any
circle" is wrong on purpose. Objects sit in distinct cells of a 3x3 grid (with
jitter), so they never overlap; the planted object is tilted by at most 22.5
degrees (distractors are freely rotated); the object is drawn last; ``masks`` is
exactly the set of pixels painted with the planted colour (before grain is
added to the whole image). Everything is vectorised numpy and deterministic
given ``seed``: 2000 images of 64x64 take about a second.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "COLOURS",
    "EVAL_SEED",
    "EXPLAINER_SEED",
    "NUM_CLASSES",
    "SHAPES",
    "class_name",
    "make_benchmark",
]

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (0.86, 0.12, 0.12), "blue": (0.12, 0.24, 0.92)}
CLASS_NAMES = tuple(f"{colour}_{shape}" for colour in COLOURS for shape in SHAPES)
# Seed offsets that keep the splits apart: the target trains on seed ``2·s`` and
# is tested on ``2·s + 1``; learned explainers train on ``EXPLAINER_SEED + s``;
# explanations are scored on ``EVAL_SEED + s`` (images no model was fit on).
EXPLAINER_SEED = 1000
EVAL_SEED = 5000

NUM_CLASSES = len(CLASS_NAMES)

_DISTRACTOR_SHAPES = ("ring", "bar")
_DISTRACTOR_COLOURS = {
    "green": (0.16, 0.72, 0.22),
    "yellow": (0.93, 0.86, 0.16),
    "grey": (0.52, 0.52, 0.52),
    "white": (0.95, 0.95, 0.95),
}
_ALL_SHAPES = SHAPES + _DISTRACTOR_SHAPES
_ALL_COLOURS = np.asarray(
    list(COLOURS.values()) + list(_DISTRACTOR_COLOURS.values()), np.float32
)  # [6, 3]; indices 0..1 are class colours
_GRID = 3  # objects occupy distinct cells of a 3x3 grid
_MAX_DISTRACTORS = 3
_MAX_TILT = np.pi / 8  # the planted object is tilted by at most 22.5 degrees


def class_name(label: int) -> str:
    """``CLASS_NAMES[label]`` with a range check."""
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label must lie in [0, {NUM_CLASSES}); got {label}")
    return CLASS_NAMES[int(label)]


def _interp_taps(grid: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps from ``grid`` knots to ``size`` pixels: ``lower, w_lower, w_upper [S]``."""
    pos = np.linspace(0.0, grid - 1.0, size)
    lower = np.clip(np.floor(pos).astype(int), 0, grid - 2)
    frac = pos - lower
    return lower, (1.0 - frac).astype(np.float32), frac.astype(np.float32)


def _upsample(knots: np.ndarray, grid: int, size: int) -> np.ndarray:
    """``[N, C, g, g] -> [N, C, S, S]`` separable bilinear interpolation, element-wise.

    Not a matrix product (``einsum``): BLAS sums in an order that depends on its
    thread count, so the images would differ between machines (issue 17).
    """
    lower, w_lower, w_upper = _interp_taps(grid, size)
    rows = knots[:, :, lower] * w_lower[:, None] + knots[:, :, lower + 1] * w_upper[:, None]
    return rows[..., lower] * w_lower + rows[..., lower + 1] * w_upper


def _backgrounds(rng: np.random.Generator, num: int, size: int) -> np.ndarray:
    """``[N, 3, S, S]`` (channels first: faster numpy) muted textured backgrounds."""
    coords = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi, num).astype(np.float32)
    ramp = (
        np.cos(angle)[:, None, None] * coords[None, None, :]
        + np.sin(angle)[:, None, None] * coords[None, :, None]
    )  # [N, S, S] in [-1.5, 1.5]
    ramp = (0.5 + ramp / 3.0)[:, None]
    colour_a = rng.uniform(0.25, 0.75, (num, 3, 1, 1)).astype(np.float32)
    colour_b = rng.uniform(0.25, 0.75, (num, 3, 1, 1)).astype(np.float32)
    image = colour_a + (colour_b - colour_a) * ramp
    for grid, amplitude in ((4, 0.18), (7, 0.10), (13, 0.06)):
        knots = rng.standard_normal((num, 1, grid, grid), dtype=np.float32)
        tint = 1.0 + 0.25 * rng.standard_normal((num, 3, 1, 1), dtype=np.float32)
        noise = _upsample(knots, grid, size)
        image += (amplitude * noise) * tint
    # Muted towards grey, so that planted colours stand out.
    grey = (image[:, 0:1] + image[:, 1:2] + image[:, 2:3]) * np.float32(0.45 / 3.0)
    image *= np.float32(0.55)
    image += grey
    return np.clip(image, 0.12, 0.88, out=image)


def _shape_predicate(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "square":
        return np.maximum(au, av) <= 0.82
    if name == "triangle":
        return (v >= -0.6) & (v <= 1.2 - np.sqrt(np.float32(3.0)) * au)
    if name == "cross":
        return ((au <= 0.32) & (av <= 1.0)) | ((av <= 0.32) & (au <= 1.0))
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.45)
    if name == "bar":
        return (au <= 1.15) & (av <= 0.22)
    raise ValueError(f"unknown shape {name!r}")


def _shape_masks(shape_index, cy, cx, radius, angle, size):
    """``[N, S, S]`` bool masks of shape ``_ALL_SHAPES[shape_index[n]]`` centred at ``(cy, cx)``."""
    pix = np.arange(size, dtype=np.float32) + 0.5
    out = np.zeros((len(shape_index), size, size), bool)
    for index, name in enumerate(_ALL_SHAPES):
        rows = np.flatnonzero(shape_index == index)
        if rows.size == 0:
            continue
        inv_r = (1.0 / radius[rows]).astype(np.float32)[:, None, None]
        dy = (pix[None, :, None] - cy[rows].astype(np.float32)[:, None, None]) * inv_r
        dx = (pix[None, None, :] - cx[rows].astype(np.float32)[:, None, None]) * inv_r
        cos = np.cos(angle[rows]).astype(np.float32)[:, None, None]
        sin = np.sin(angle[rows]).astype(np.float32)[:, None, None]
        out[rows] = _shape_predicate(name, cos * dx + sin * dy, cos * dy - sin * dx)
    return out


_CHUNK = 256  # images generated together (keeps arrays cache-sized)


def make_benchmark(
    num_examples: int,
    *,
    seed: int,
    image_size: int = 64,
    grain: float = 0.03,
) -> dict[str, np.ndarray]:
    """Generates the planted-object benchmark.

    Args:
      num_examples: N, number of images (classes are balanced: each appears
        ``N // 8`` or ``N // 8 + 1`` times, in shuffled order).
      seed: any int; the output is a deterministic function of it.
      image_size: S >= 24, side of the square images.
      grain: standard deviation of the per-pixel noise added last.

    Returns:
      dict with ``images`` [N, S, S, 3] float32 in [0, 1], ``labels`` [N] int32
      in [0, NUM_CLASSES), ``masks`` [N, S, S] bool (the planted object's
      pixels) and ``boxes`` [N, 4] int32 ``(y_min, x_min, y_max, x_max)`` of the
      mask, max exclusive.
    """
    if not isinstance(num_examples, int | np.integer) or num_examples < 1:
        raise ValueError(f"num_examples must be a positive int; got {num_examples!r}")
    if not isinstance(image_size, int | np.integer) or image_size < 24:
        raise ValueError(f"image_size must be an int >= 24; got {image_size!r}")
    if not 0.0 <= grain <= 0.2:
        raise ValueError(f"grain must lie in [0, 0.2]; got {grain}")
    num, size = int(num_examples), int(image_size)
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, 0x6A7])
    label_seed, *chunk_seeds = root.spawn(1 + -(-num // _CHUNK))
    labels = np.random.default_rng(label_seed).permutation(np.arange(num) % NUM_CLASSES)
    labels = labels.astype(np.int32)
    images, masks = [], []
    for index, chunk_seed in enumerate(chunk_seeds):
        chunk_labels = labels[index * _CHUNK : (index + 1) * _CHUNK]
        chunk_images, chunk_masks = _generate(
            np.random.default_rng(chunk_seed), chunk_labels, size, grain
        )
        images.append(chunk_images)
        masks.append(chunk_masks)
    masks = np.concatenate(masks)
    return {
        "images": np.concatenate(images),
        "labels": labels,
        "masks": masks,
        "boxes": _boxes(masks),
    }


def _generate(rng: np.random.Generator, labels: np.ndarray, size: int, grain: float):
    """Images ``[n, S, S, 3]`` and planted-object masks ``[n, S, S]`` for ``labels``."""
    num = len(labels)
    images = _backgrounds(rng, num, size)

    # Grid cells: slot 0 is the planted object, slots 1..3 distractors.
    cells = np.argsort(rng.random((num, _GRID * _GRID)), axis=1)[:, : 1 + _MAX_DISTRACTORS]
    cell = size / _GRID
    num_distractors = rng.integers(1, _MAX_DISTRACTORS + 1, num)
    radius = rng.uniform(0.28, 0.40, cells.shape) * cell
    jitter = cell / 2 - radius - 1.0
    cy = (cells // _GRID + 0.5) * cell + rng.uniform(-1, 1, cells.shape) * jitter
    cx = (cells % _GRID + 0.5) * cell + rng.uniform(-1, 1, cells.shape) * jitter
    angle = rng.uniform(0, 2 * np.pi, cells.shape)
    angle[:, 0] = rng.uniform(-_MAX_TILT, _MAX_TILT, num)  # planted object: near upright

    # Distractors: a non-class shape in any colour, or a class shape in a non-class colour.
    shape_d = rng.integers(0, len(_ALL_SHAPES), (num, _MAX_DISTRACTORS))
    colour_d = np.where(
        shape_d < len(SHAPES),
        rng.integers(len(COLOURS), len(_ALL_COLOURS), shape_d.shape),
        rng.integers(0, len(_ALL_COLOURS), shape_d.shape),
    )
    for slot in range(_MAX_DISTRACTORS):
        rows = np.flatnonzero(num_distractors > slot)
        k = slot + 1
        drawn = _shape_masks(
            shape_d[rows, slot], cy[rows, k], cx[rows, k], radius[rows, k], angle[rows, k], size
        )
        colour = _ALL_COLOURS[colour_d[rows, slot]][:, :, None, None]
        images[rows] = np.where(drawn[:, None], colour, images[rows])

    # The planted object, drawn last so that its mask is exactly its painted pixels.
    masks = _shape_masks(labels % len(SHAPES), cy[:, 0], cx[:, 0], radius[:, 0], angle[:, 0], size)
    shade = rng.uniform(0.9, 1.05, (num, 1, 1, 1)).astype(np.float32)
    colour = _ALL_COLOURS[labels // len(SHAPES)][:, :, None, None] * shade
    images = np.where(masks[:, None], colour, images)

    images += grain * rng.standard_normal(images.shape, dtype=np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1)), masks


def _boxes(masks: np.ndarray) -> np.ndarray:
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    size_y, size_x = masks.shape[1:]
    y_min = rows.argmax(axis=1)
    y_max = size_y - rows[:, ::-1].argmax(axis=1)
    x_min = cols.argmax(axis=1)
    x_max = size_x - cols[:, ::-1].argmax(axis=1)
    return np.stack([y_min, x_min, y_max, x_max], axis=1).astype(np.int32)
