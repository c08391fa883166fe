"""Paired bootstrap differences of per-image scores."""

import numpy as np
import pytest

from fastxai_jax.metrics import paired_difference


def test_constant_difference_has_a_point_interval():
    a = np.linspace(0.1, 0.9, 20)
    result = paired_difference(a + 0.05, a)
    assert result.mean == pytest.approx(0.05)
    assert result.low == pytest.approx(0.05) and result.high == pytest.approx(0.05)
    assert result.excludes_zero() and result.num == 20


def test_interval_matches_the_normal_approximation():
    # Large n: the percentile interval ≈ mean ± z·sd/√n of the differences.
    rng = np.random.default_rng(0)
    b = rng.random(2000)
    a = b + rng.normal(0.01, 0.1, size=2000)
    diff = a - b
    result = paired_difference(a, b, confidence=0.9, num_resamples=4000)
    half = 1.6449 * diff.std(ddof=0) / np.sqrt(diff.size)
    assert result.mean == pytest.approx(diff.mean())
    assert result.high - result.low == pytest.approx(2 * half, rel=0.08)
    assert (result.low + result.high) / 2 == pytest.approx(diff.mean(), abs=0.2 * half)


def test_pairing_narrows_the_interval():
    # Both methods share a large per-image effect; their difference is small but sure.
    rng = np.random.default_rng(1)
    shared = rng.random(32)
    a, b = shared + 0.01, shared + rng.normal(0, 0.002, size=32)
    result = paired_difference(a, b)
    assert result.excludes_zero() and result.low > 0.005
    unpaired_se = np.hypot(a.std(), b.std()) / np.sqrt(32)
    assert result.high - result.low < unpaired_se


def test_deterministic_given_the_seed_and_formats():
    a, b = np.arange(10.0), np.arange(10.0)[::-1]
    assert paired_difference(a, b, seed=3) == paired_difference(a, b, seed=3)
    assert "95% CI, n=10" in paired_difference(a, b).format()


@pytest.mark.parametrize(
    "a,b,kwargs,match",
    [
        ([1.0, 2.0], [1.0], {}, "pair"),
        ([], [], {}, "non-empty"),
        ([1.0, np.nan], [1.0, 2.0], {}, "NaN"),
        ([1.0], [1.0], {"confidence": 1.0}, "confidence"),
        ([1.0], [1.0], {"num_resamples": 0}, "num_resamples"),
    ],
)
def test_bad_input(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(a, b, **kwargs)


def test_demo_report_states_paired_differences():
    from fastxai_jax.evaluation.report import paired_lines as _paired_lines

    base = np.linspace(0.1, 0.3, 8)
    summary = {
        "rise": {"per_input": {"deletion_auc": base, "pointing_game": np.ones(8)}},
        "random": {"per_input": {"deletion_auc": base + 0.1, "pointing_game": np.zeros(8)}},
        "fex": {"per_input": {"deletion_auc": base + 0.01, "pointing_game": np.ones(8)}},
    }
    lines = _paired_lines(summary, ["fex"])
    rise_row = next(line for line in lines if line.startswith("| fex − rise"))
    random_row = next(line for line in lines if line.startswith("| fex − random"))
    # deletion, patch deletion (missing), insertion (missing), pointing game
    assert rise_row.split(" | ")[1].startswith("+0.010 [+0.010, +0.010]")
    assert rise_row.split(" | ")[2] == "–"
    assert random_row.split(" | ")[1].startswith("-0.090")
    assert random_row.split(" | ")[4].startswith("+1.000")
    assert _paired_lines(summary, ["tve"]) == []
