import os
import shutil
import tempfile

import jax
import pytest

# The suite is bound by XLA compiling many small programs, and the LLVM backend's optimization
# level decides most of that time (1.8x at -O0 for a typical Monte-Carlo program here, a few
# percent slower to run). It changes no floating-point semantics (XLA asks LLVM for no
# fast-math either way), so the tests see the same numbers. MEANFIELD_TEST_XLA_OPTIMIZE=1
# keeps XLA's default level; CI runs the smoke tests at the dependency floors that way.
if os.environ.get("MEANFIELD_TEST_XLA_OPTIMIZE") != "1" and (
    "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

# Implicit rank promotion hides shape bugs; make it an error in the tests.
jax.config.update("jax_numpy_rank_promotion", "raise")

# The suite's time is XLA compiling. Compiled programs go to one persistent cache for the
# session, shared by pytest-xdist's workers: a program that several test modules (or workers)
# compile is compiled once, and a module's programs freed below are loaded again, not rebuilt.
# The cache lives in a fresh temporary folder (the controller makes it and passes it on in the
# environment; it is removed at the end), so no run reads another run's programs.
_CACHE_ENV = "MEANFIELD_TEST_COMPILATION_CACHE"


def pytest_configure(config):
    if not hasattr(config, "workerinput") and _CACHE_ENV not in os.environ:
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="meanfield-test-xla-")
        config._meanfield_cache_owner = True
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    if getattr(config, "_meanfield_cache_owner", False):
        shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)


@pytest.fixture
def x64():
    """Run a test in float64: the same code, with 64-bit JAX types enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def count_compiles():
    """A list that collects one entry per XLA backend compile while the test runs."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield compiles
    # (jax 0.8.0, the floor, has no unregister: the listener then stays, appending unread)
    unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
    if unregister is not None:
        unregister(listener)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free every module's compiled programs when it ends. Each XLA:CPU executable keeps its
    own memory mappings, and the suite compiles thousands of programs in one process: without
    this the process passes the kernel's vm.max_map_count (65530 by default) and the next
    compile crashes with a segmentation fault."""
    yield
    from meanfield import montecarlo

    montecarlo.runner.chunk_fn.cache_clear()
    jax.clear_caches()
