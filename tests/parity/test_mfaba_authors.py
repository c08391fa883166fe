"""Parity with the MFABA authors' code (LMBTough/MFABA @ 363fd52) and torch autograd.

References: ``tests/fixtures/parity/`` from ``experiments/parity/make_references.py``
(the authors' ``saliency_zoo`` functions on a committed width-8 torchvision-layout
ResNet and four scikit-image photos at 64², run in float64). Both sides run in
float64, so every method here is deterministic and the tolerance is 1e-4
relative (``max |ours − theirs| / max |theirs|``; measured 3e-8 – 2e-5). In
float32 the path methods are not: float32 rounding decides near-tied max-pool
windows and ReLUs on flat regions (astronaut), and the authors' own float32
reruns differ by about 0.7%. Each authors' quirk is also shown to matter: the
clean default lies outside the tolerance.
"""

import jax
import numpy as np
import pytest
from _refs import load, relative

from fastxai_jax.explainers import boundary, gradients, mfaba

TOL = 1e-4


@pytest.fixture(scope="module")
def refs():
    with jax.enable_x64(True):
        yield load()


def test_references_hold_a_flat_zero_region(refs):
    images = np.asarray(refs[2])
    assert (images[0] == 0).sum() > 100  # astronaut: exactly-zero pixels
    assert str(refs[4]["authors_commit"]).startswith("363fd52")


def test_saliency_equals_torch_autograd(refs):
    f, v, x, t, maps = refs
    with jax.enable_x64(True):
        ours = gradients.saliency(f, v, x, t, absolute=False, per_channel=True)
    for i in range(x.shape[0]):  # astronaut (flat zeros) first
        assert relative(ours[i], maps["sm"][i]) < 1e-5


def test_integrated_gradients_captum_trapezoid(refs):
    f, v, x, t, maps = refs
    with jax.enable_x64(True):
        ig = gradients.integrated_gradients
        ours = ig(f, v, x, t, method="captum_trapezoid", per_channel=True)
        exact = ig(f, v, x, t, method="riemann_trapezoid", per_channel=True)
    assert relative(ours, maps["ig"]) < TOL
    assert relative(exact, maps["ig"]) > 10 * TOL  # captum's weights sum to 49/50


@pytest.mark.parametrize("variant", ["sharp", "smooth"])
def test_mfaba_batched_accumulating_gradients(refs, variant):
    f, v, x, t, maps = refs
    with jax.enable_x64(True):
        quirk = mfaba.mfaba(
            f, v, x, t, variant=variant, accumulate_gradients=True, per_channel=True
        )
        clean = mfaba.mfaba(f, v, x, t, variant=variant, per_channel=True)
    assert relative(quirk, maps[f"mfaba_{variant}"]) < TOL
    assert relative(clean, maps[f"mfaba_{variant}"]) > 0.1


@pytest.mark.parametrize("variant", ["norm", "cos"])
def test_mfaba_single_sample_variants(refs, variant):
    f, v, x, t, maps = refs
    with jax.enable_x64(True):
        ours = mfaba.mfaba(f, v, x, t, variant=variant, per_channel=True)
    assert relative(ours, maps[f"mfaba_{variant}"]) < TOL


def test_big_authors_options(refs):
    f, v, x, t, maps = refs
    with jax.enable_x64(True):
        quirk = boundary.big(
            f, v, x, t, accumulate_gradients=True, ig_method="captum_trapezoid", per_channel=True
        )
        # the authors' α = 0.001 × 50 steps stays inside every ε, so the seven
        # attacks coincide and one ε gives the clean map at a seventh of the cost
        eps = boundary.BIG_EPSILONS[:1]
        clean = boundary.big(f, v, x, t, epsilons=eps, per_channel=True)
    assert relative(quirk, maps["big"]) < TOL
    assert relative(clean, maps["big"]) > 10 * TOL


def test_agi_batch_coupling(refs):
    f, v, x, t, maps = refs
    opts = dict(from_original=True, batch_coupling=True, false_class=int(maps["agi_class"]))
    with jax.enable_x64(True):
        batched = boundary.agi(f, v, x, t, key=None, per_channel=True, **opts)
        alone = boundary.agi(f, v, x[:1], t[:1], key=None, per_channel=True, **opts)
    assert relative(batched, maps["agi"]) < TOL
    assert relative(alone, maps["agi"][:1]) > 0.1  # the batch changes every map
