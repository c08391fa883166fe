"""Cross-test of :func:`paired_difference` against ``scipy.stats.bootstrap``.

Both draw a percentile bootstrap of the mean of ``a − b`` with independent
resamples, so their endpoints differ by Monte-Carlo noise only. With ``R``
resamples the SE of an estimated ``p``-quantile of a near-normal bootstrap
distribution (sd ``s = sd(d)/√n``) is ``√(p(1−p)/R) / φ(z_p) · s``; at
``p = 0.025`` and ``R = 100_000`` that is ``0.0085 s``, so the difference of
two independent estimates has SE ``0.012 s``. The tolerance ``0.06 s`` is 5 SE.
"""

import numpy as np
import pytest
from scipy import stats

from fastxai_jax.metrics import paired_difference

RESAMPLES = 100_000


def _mc_tolerance(p: float, s: float, resamples: int = RESAMPLES, sigmas: float = 5.0) -> float:
    z = stats.norm.ppf(p)
    se = np.sqrt(p * (1 - p) / resamples) / stats.norm.pdf(z) * s
    return sigmas * np.sqrt(2.0) * se


@pytest.mark.parametrize(
    ("n", "confidence", "skew"),
    [(40, 0.95, False), (40, 0.9, True), (300, 0.95, True)],
)
def test_interval_matches_scipy_percentile_bootstrap(n, confidence, skew):
    rng = np.random.default_rng(n)
    b = rng.random(n)
    noise = rng.exponential(0.1, n) - 0.08 if skew else rng.normal(0.02, 0.1, n)
    a = b + noise
    ours = paired_difference(a, b, confidence=confidence, num_resamples=RESAMPLES, seed=5)
    ref = stats.bootstrap(
        (a - b,),
        np.mean,
        confidence_level=confidence,
        n_resamples=RESAMPLES,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(6),
    )
    s = ref.standard_error
    tol = _mc_tolerance((1 - confidence) / 2, s)
    assert tol < 0.1 * s  # the bound is tight relative to the interval's width
    assert ours.mean == pytest.approx(np.mean(a - b), abs=1e-12)
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=tol)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=tol)
    # A shifted interval (a bias in our resampling) would show as both ends moving.
    assert abs((ours.low + ours.high) / 2 - sum(ref.confidence_interval) / 2) < tol
