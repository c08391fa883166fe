"""``step_indices``: the per-step batch maker of the training loops."""

import numpy as np
import pytest

from fastxai_jax.data.batching import batch_indices, epoch_permutation, step_indices


def test_steps_of_an_epoch_cover_each_example_once_and_match_batch_indices():
    num, batch, seed = 50, 8, 3
    per_epoch = num // batch
    for epoch in range(3):
        steps = [
            step_indices(num, batch, epoch * per_epoch + s, seed=seed) for s in range(per_epoch)
        ]
        flat = np.concatenate(steps)
        assert len(set(flat.tolist())) == per_epoch * batch  # no repeat within an epoch
        expected = batch_indices(num, batch, shuffle_seed=seed, epoch=epoch, drop_remainder=True)
        np.testing.assert_array_equal(flat, np.concatenate(expected))
        np.testing.assert_array_equal(flat, epoch_permutation(num, seed, epoch)[: flat.size])
    first = np.concatenate([step_indices(num, batch, s, seed=seed) for s in range(per_epoch)])
    second = np.concatenate(
        [step_indices(num, batch, per_epoch + s, seed=seed) for s in range(per_epoch)]
    )
    assert not np.array_equal(first, second)  # a new order each epoch


def test_fewer_examples_than_a_batch_wrap_around():
    order = epoch_permutation(5, 1, 0)
    np.testing.assert_array_equal(step_indices(5, 8, 0, seed=1), order)
    wrapped = step_indices(5, 8, 0, seed=1, wrap=True)
    np.testing.assert_array_equal(wrapped, np.concatenate([order, order[:3]]))
    np.testing.assert_array_equal(
        step_indices(5, 8, 1, seed=1, wrap=True)[:5], epoch_permutation(5, 1, 1)
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [((10, 0, 0), "batch_size"), ((-1, 2, 0), "num_examples"), ((10, 2, -1), "step")],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        step_indices(*args, seed=0)
