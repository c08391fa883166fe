"""NumPy batching over random-access sources (no grain, no tf.data).

A *source* is anything with ``len(source)`` and ``source[i] -> example``
(``tfds.data_source`` results, lists, or :class:`ArraySource` over in-memory
arrays). Batches are dicts of stacked numpy arrays (strings as lists).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ArraySource",
    "batch_indices",
    "epoch_permutation",
    "iterate_batches",
    "num_batches",
    "stack_examples",
    "step_indices",
]


class ArraySource:
    """A random-access source over a dict of equal-length arrays.

    ``ArraySource({"images": x, "labels": y})[i] == {"images": x[i], "labels": y[i]}``.
    """

    def __init__(self, arrays: dict[str, Any]):
        if not isinstance(arrays, dict) or not arrays:
            raise ValueError("arrays must be a non-empty dict of equal-length arrays")
        lengths = {name: len(value) for name, value in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"arrays must have equal lengths; got {lengths}")
        self.arrays = arrays
        self._length = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {name: value[index] for name, value in self.arrays.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[int(i)] for i in indices]


def _check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    return int(batch_size)


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool = False) -> int:
    """How many batches :func:`batch_indices` yields."""
    batch_size = _check_batch_size(batch_size)
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order of epoch ``epoch``: a permutation seeded by ``(seed, epoch)``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def _check_num_examples(num_examples: Any) -> int:
    if not isinstance(num_examples, int | np.integer) or num_examples < 0:
        raise ValueError(f"num_examples must be a non-negative int; got {num_examples!r}")
    return int(num_examples)


def step_indices(
    num_examples: int, batch_size: int, step: int, *, seed: int, wrap: bool = False
) -> np.ndarray:
    """Indices of training step ``step``, a pure function of ``(seed, step)``.

    Epoch ``e = step // (num_examples // batch_size)`` draws one
    :func:`epoch_permutation` and its steps take consecutive slices, so each
    example is seen once per epoch (the remainder is dropped); this is the
    ``batch_fn(step)`` that :func:`fastxai_jax.train.loop.fit` takes.

    Args:
      num_examples: size of the training set.
      batch_size: examples per step.
      step: the training step (non-negative int).
      seed: data seed.
      wrap: when ``num_examples < batch_size``, repeat the permutation to fill
        the batch (else the batch is shorter).

    Returns:
      int64 indices, ``[batch_size]`` (or fewer, see ``wrap``).
    """
    batch_size = _check_batch_size(batch_size)
    num_examples = _check_num_examples(num_examples)
    if not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be a non-negative int; got {step!r}")
    epoch, offset = divmod(int(step), max(num_examples // batch_size, 1))
    order = epoch_permutation(num_examples, seed, epoch)
    index = order[offset * batch_size : (offset + 1) * batch_size]
    if wrap and 0 < index.size < batch_size:
        index = np.resize(order, batch_size)
    return index


def batch_indices(
    num_examples: int,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    epoch: int = 0,
    drop_remainder: bool = False,
) -> list[np.ndarray]:
    """Index arrays of one epoch, shuffled deterministically by ``(shuffle_seed, epoch)``.

    Args:
      num_examples: size of the source.
      batch_size: examples per batch.
      shuffle_seed: ``None`` keeps the source order.
      epoch: varies the permutation between epochs.
      drop_remainder: drop the last, smaller batch.

    Returns:
      list of int64 index arrays, each of length ``batch_size`` (last may be shorter).
    """
    batch_size = _check_batch_size(batch_size)
    num_examples = _check_num_examples(num_examples)
    if shuffle_seed is None:
        order = np.arange(num_examples)
    else:
        order = epoch_permutation(num_examples, shuffle_seed, epoch)
    count = num_batches(num_examples, batch_size, drop_remainder=drop_remainder)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)]


def stack_examples(examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stacks a list of example dicts into a batch dict (strings/bytes become lists)."""
    if not examples:
        raise ValueError("examples must be a non-empty sequence of dicts")
    batch: dict[str, Any] = {}
    for name in examples[0]:
        values = [example[name] for example in examples]
        if isinstance(values[0], dict):
            batch[name] = stack_examples(values)
        elif isinstance(values[0], str | bytes):
            batch[name] = list(values)
        else:
            try:
                batch[name] = np.stack([np.asarray(v) for v in values])
            except ValueError as err:  # ragged (e.g. per-object boxes)
                raise ValueError(
                    f"cannot stack field {name!r}: shapes differ across examples "
                    f"({sorted({np.shape(v) for v in values})}); pad it in preprocess"
                ) from err
    return batch


def _fetch(source: Any, indices: np.ndarray) -> list[Any]:
    getitems = getattr(source, "__getitems__", None)
    if getitems is not None:
        try:
            return list(getitems([int(i) for i in indices]))
        except TypeError:  # e.g. tfds' mocked sources implement it wrongly
            pass
    return [source[int(i)] for i in indices]


def iterate_batches(
    source: Any,
    batch_size: int,
    *,
    preprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    shuffle_seed: int | None = None,
    epoch: int = 0,
    drop_remainder: bool = False,
    max_examples: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yields batches of ``preprocess(source[i])`` stacked into numpy arrays.

    Args:
      source: random-access source (``len`` and ``[i]``; ``__getitems__`` used if present).
      batch_size: examples per batch.
      preprocess: per-example function (e.g. ``preprocess.make_preprocess(...)``).
      shuffle_seed: ``None`` for source order, else a deterministic shuffle.
      epoch: varies the shuffle between epochs.
      drop_remainder: drop the last, smaller batch.
      max_examples: use only the first ``max_examples`` examples of the source.
    """
    total = len(source)
    if max_examples is not None:
        if not isinstance(max_examples, int | np.integer) or max_examples < 1:
            raise ValueError(f"max_examples must be a positive int; got {max_examples!r}")
        total = min(total, int(max_examples))
    for indices in batch_indices(
        total, batch_size, shuffle_seed=shuffle_seed, epoch=epoch, drop_remainder=drop_remainder
    ):
        examples = _fetch(source, indices)
        if preprocess is not None:
            examples = [preprocess(example) for example in examples]
        yield stack_examples(examples)
