"""Small assertion helpers (in the spirit of optax's test_utils)."""

import numpy as np


def assert_close(actual, desired, *, rtol, atol=0.0, err_msg=""):
    """assert_allclose on float64 copies, ignoring positions where both are NaN."""
    a = np.asarray(actual, dtype=np.float64)
    d = np.asarray(desired, dtype=np.float64)
    np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, equal_nan=True, err_msg=err_msg)


def assert_all_finite(*arrays, err_msg=""):
    for a in arrays:
        a = np.asarray(a)
        assert np.all(np.isfinite(a)), f"non-finite values {err_msg}: {a[~np.isfinite(a)][:5]}"


def load_script(name):
    """Import experiments/<name>.py as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
