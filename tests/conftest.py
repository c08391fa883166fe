"""Strict test settings: rank promotion raises, 8 simulated CPU devices."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")

REPO = pathlib.Path(__file__).resolve().parents[1]


def _fixtures_dir() -> pathlib.Path | None:
    candidates = [os.environ.get("FASTXAI_FIXTURES")]
    candidates += [str(REPO.parent / "shared" / "fixtures"), str(REPO / "shared" / "fixtures")]
    for c in candidates:
        if c and (pathlib.Path(c) / "INDEX.json").exists():
            return pathlib.Path(c)
    return None


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    """The torch reference fixtures (shared/fixtures beside the checkout)."""
    found = _fixtures_dir()
    if found is None:
        if os.environ.get("CI") or os.environ.get("FASTXAI_REQUIRE_FIXTURES"):
            pytest.fail("shared/fixtures not found: set FASTXAI_FIXTURES")
        pytest.skip("shared/fixtures not found (set FASTXAI_FIXTURES to run parity tests)")
    return found


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)
