"""DAX's static options (SPEC §3); re-exported by :mod:`fastxai_jax.explainers.dax`."""

from __future__ import annotations

from typing import Any, NamedTuple

from fastxai_jax.core import check_choice
from fastxai_jax.models.dax_nets import MASK_NORMALISATIONS


class DaxConfig(NamedTuple):
    """Static DAX options (the paper/SPEC's values as defaults; scale down for speed).

    :data:`AUTHORS_CODE` lists the options that reproduce the authors' code
    where it departs from the paper's formula.

    Attributes:
      num_samples: perturbations ``N`` per input (first all-ones).
      epochs: training epochs over the train split.
      batch_size: SGD minibatch.
      learning_rate: SGD step size.
      momentum: Nesterov momentum.
      lam: weight ``λ`` of the complement term.
      l1: optional weight of an L1 (mean) mask penalty (0 = off).
      snapshot_epochs: masks of the first this many epochs are averaged.
      val_fraction: held-out fraction (validation loss reported, not used).
      kernel_width: LIME kernel width.
      hidden: student hidden width.
      dropout: student dropout rate (authors: 0.1).
      features: mask-generator conv channels.
      pool: mask-generator pool factor.
      mask_normalise: the generator's min-max per image (``"image"``) or over
        the minibatch (``"batch"``, the authors' code).
      net_size: side the networks see (``None``: the input size).
      input_scale: the networks see pixels times this (authors: 255, i.e. 0..255).
      border: fraction of the side zeroed at each border of the explanation
        (authors: 7/128, "suppress border noise" of the zero-padded convolutions).
      complement_trains_student: whether the complement term also trains the
        student (SPEC and the authors' code: yes). ``False`` holds the student
        fixed in that term, so only the generator is pushed to leave no evidence
        outside the mask (a shared student otherwise learns to *anti*-predict
        ``p`` from the complement, which rewards masks that leave evidence there).
      fill: what an "off" segment becomes. ``"grey"`` (default; the authors'
        code and SPEC §3): one value per segment, the mean of its three channel
        means. ``"mean"``: its own mean colour (LIME's original, which the
        authors commented out). A number in ``[0, 1]``: that value painted over
        it (LIME's ``hide_color``; ``0.0`` = black, the substrate RISE and the
        deletion metric use). Or a :class:`~fastxai_jax.substrate.Substrate` of
        one colour, which :func:`~fastxai_jax.explainers.dax.dax` converts with
        ``to_fill`` to that number (``Substrate("constant", 0.5)`` is ``0.5``;
        DAX takes no normalisation family, so ``"family_mean"`` is refused).
      reduction: how the loss reduces a minibatch: ``"sum"`` (default, the
        paper's and SPEC's ``Σ``) or ``"mean"`` (the authors' code, whose
        ``torch.mean`` makes each step ``batch_size`` times smaller at the same
        learning rate).
      split: ``"random"`` (default: a random 90/10 split, train batches
        reshuffled every epoch, a final partial batch dropped) or ``"ordered"``
        (the authors' ``train_test_split(shuffle=False)`` and unshuffled loader:
        the first ``N − ceil(0.1 N)`` samples train, in the same order every
        epoch, the final partial batch included; the explained image is row 0
        of the first batch).
      augment: ``"none"`` (default; the paper does not describe it) or ``"hsv"``
        (the authors' code: in every minibatch a random 3/5 (even steps) or 2/5
        (odd steps) of the images is converted to their HSV, the explained
        image of the first batch always and alone).
      batch_max: divide each network minibatch by its maximum before the
        augmentation and ``input_scale`` (the authors' code: yes; default no).
      snapshot_timing: ``"end"`` (default: the explained image's mask after each
        epoch) or ``"start"`` (the authors' code: its mask in the forward pass of
        each epoch's first batch, before that step, so the first snapshot is the
        untrained generator's; under ``mask_normalise="batch"`` it is normalised
        with that batch).
      snapshot_smoothing: ``"none"`` (default: average, min-max, border once) or
        ``"bilinear"`` (the authors' code: each snapshot max-pooled by ``pool``,
        upsampled bilinearly, min-max normalised and its border zeroed, then
        averaged and min-max normalised).
      chunk: target queries per compiled batch.
    """

    num_samples: int = 3000
    epochs: int = 9
    batch_size: int = 16
    learning_rate: float = 1e-3
    momentum: float = 0.9
    lam: float = 1.0
    l1: float = 0.0
    snapshot_epochs: int = 6
    val_fraction: float = 0.1
    kernel_width: float = 0.25
    hidden: int = 512
    dropout: float = 0.1
    features: int = 32
    pool: int = 8
    mask_normalise: str = "image"
    net_size: int | None = None
    input_scale: float = 1.0
    border: float = 0.0
    complement_trains_student: bool = True
    fill: str | float = "grey"
    reduction: str = "sum"
    split: str = "random"
    augment: str = "none"
    batch_max: bool = False
    snapshot_timing: str = "end"
    snapshot_smoothing: str = "none"
    chunk: int = 256


# The options that reproduce the authors' code (iiscleap/DAX, lime/student_ntw_learn.py)
# on top of the defaults: ``dax(..., **AUTHORS_CODE)``. Their networks see 128×128.
AUTHORS_CODE: dict[str, object] = {
    "net_size": 128,
    "mask_normalise": "batch",
    "input_scale": 255.0,
    "border": 7 / 128,
    "fill": "grey",
    "reduction": "mean",
    "split": "ordered",
    "augment": "hsv",
    "batch_max": True,
    "snapshot_timing": "start",
    "snapshot_smoothing": "bilinear",
}

FILLS = ("grey", "mean")
# option name -> allowed string values
_CHOICES = {
    "reduction": ("sum", "mean"),
    "split": ("random", "ordered"),
    "augment": ("none", "hsv"),
    "snapshot_timing": ("end", "start"),
    "snapshot_smoothing": ("none", "bilinear"),
}


def _check_fill(fill: str | float, shown: object) -> None:
    is_number = isinstance(fill, int | float) and not isinstance(fill, bool)
    if fill not in FILLS and not (is_number and 0.0 <= fill <= 1.0):
        raise ValueError(f"fill must be one of {FILLS} or a number in [0, 1]; got {shown!r}")


def check_option_names(options: dict[str, Any]) -> None:
    """Raises ``ValueError`` naming the keyword options that are not :class:`DaxConfig` fields."""
    unknown = set(options) - set(DaxConfig._fields)
    if unknown:
        raise ValueError(f"unknown DAX options {sorted(unknown)}; known: {DaxConfig._fields}")


def check_config(config: DaxConfig) -> None:
    """Validates the :class:`DaxConfig` fields that images and tokens share."""
    if config.num_samples < 2 or config.epochs < 1 or config.batch_size < 1:
        raise ValueError(
            "num_samples must be >= 2 and epochs, batch_size >= 1; got "
            f"{config.num_samples}, {config.epochs}, {config.batch_size}"
        )
    check_choice("mask_normalise", config.mask_normalise, MASK_NORMALISATIONS)
    for option, allowed in _CHOICES.items():
        check_choice(option, getattr(config, option), allowed)
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {config.dropout!r}")


def parse_fill(text: str) -> str | float:
    """A ``fill`` option from text (command lines): ``"grey"``, ``"mean"`` or a number in [0, 1]."""
    try:
        value = text if text in FILLS else float(text)
    except ValueError:
        value = None
    _check_fill(value, text)
    return value
