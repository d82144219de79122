import jax
import pytest

# Implicit rank promotion hides shape bugs; make it an error in the tests.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Run a test in float64: the same code, with 64-bit JAX types enabled."""
    with jax.enable_x64(True):
        yield
