import pytest

from fastxai_jax.sweep import runner


@pytest.fixture
def no_compute(monkeypatch):
    """Any model loading or step building fails the test: config checks come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("compute started before the config was checked")

    monkeypatch.setattr(runner, "make_step", refuse)
    monkeypatch.setattr(runner, "load_model", refuse)
