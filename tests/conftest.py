import jax
import pytest

# Implicit rank promotion hides shape bugs; make it an error in the tests.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Run a test in float64: the same code, with 64-bit JAX types enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free every module's compiled programs when it ends. Each XLA:CPU executable keeps its
    own memory mappings, and the suite compiles thousands of programs in one process: without
    this the process passes the kernel's vm.max_map_count (65530 by default) and the next
    compile crashes with a segmentation fault."""
    yield
    from meanfield import montecarlo

    montecarlo._chunk_fn.cache_clear()
    jax.clear_caches()
