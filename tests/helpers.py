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


def run_script(name, argv, *, cwd=None, timeout=900):
    """Run experiments/<name>.py as a user runs it: ``python experiments/<name>.py ARGS`` in a
    fresh process, so that nothing an earlier test warmed (a cache, an imported module) can
    hide a crash. Returns (the run folder it printed, its stdout). The test session's XLA
    flags and compilation cache are passed on in the environment (they change no result)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    env = dict(os.environ)
    if "MEANFIELD_TEST_COMPILATION_CACHE" in env:
        env["MEANFIELD_COMPILATION_CACHE"] = env["MEANFIELD_TEST_COMPILATION_CACHE"]
    done = subprocess.run(
        [sys.executable, str(script), *map(str, argv)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"{name}.py {' '.join(map(str, argv))} exited with {done.returncode}:\n"
        f"{done.stderr[-4000:]}"
    )
    found = re.findall(r"results in (.+)$", done.stdout, re.M)
    assert found, f"{name}.py printed no results folder:\n{done.stdout[-2000:]}"
    return Path(found[-1].strip()), done.stdout


def load_script(name):
    """Import experiments/<name>.py as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# CIFAR-10's class names, in the order of its batches.meta.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def write_cifar_folder(root, *, per_batch=40, test=40, seed=0):
    """A CIFAR-10 folder in the real on-disk format (pickle protocol 2, byte-string keys,
    uint8 rows of 1024 R, 1024 G, 1024 B values), small and learnable: each class is a fixed
    random color plus pixel noise (visible through global average pooling). Returns (folder,
    train images NHWC, train labels, test images, test labels)."""
    import pickle
    from pathlib import Path

    import numpy as np

    rng = np.random.default_rng(seed)
    patterns = rng.normal(0, 1, (10, 1, 1, 3))

    def draw(n):
        y = rng.integers(0, 10, n)
        x = np.clip(128 + 40 * (patterns[y] + rng.normal(0, 1, (n, 32, 32, 3))), 0, 255)
        return x.astype(np.uint8), y

    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name, x, y, label):
        rows = x.transpose(0, 3, 1, 2).reshape(len(y), 3072)  # NHWC -> channel-first rows
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"batch_label": label, b"labels": [int(v) for v in y], b"data": rows}, f, 2
            )

    xs, ys = [], []
    for i in range(1, 6):
        x, y = draw(per_batch)
        dump(f"data_batch_{i}", x, y, f"training batch {i} of 5".encode())
        xs.append(x)
        ys.append(y)
    x_test, y_test = draw(test)
    dump("test_batch", x_test, y_test, b"testing batch 1 of 1")
    names = [n.encode() for n in CIFAR10_CLASSES]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, f, 2)
    return folder, np.concatenate(xs), np.concatenate(ys), x_test, y_test


def closed_forms_over(block, *, depth, width, var_w, max_depth):
    """``theory.closed_forms`` at several settings in one compiled program.

    ``depth``, ``width`` and ``var_w`` are 1-D arrays of equal length (one entry per setting).
    Returns a list of (statistic, label, kind, values) with values of shape
    (settings, max_depth + 1): the same numbers as one eager call per setting, compiled once
    instead of op by op.
    """
    import jax

    from meanfield import theory

    meta = []

    def values(L, n, v):
        forms = theory.closed_forms(block, depth=L, width=n, var_w=v, max_depth=max_depth)
        meta[:] = [(f.statistic, f.label, f.kind) for f in forms]  # static, recorded at trace
        return [f.values for f in forms]

    out = jax.jit(jax.vmap(values))(np.asarray(depth), np.asarray(width), np.asarray(var_w))
    return [(*m, np.asarray(v)) for m, v in zip(meta, out, strict=True)]


def closed_form_labels(block):
    """(statistic, label, kind) of each closed form of ``block``, traced abstractly (no
    compile, no arithmetic): cheap enough to parametrize tests at collection."""
    import jax

    from meanfield import theory

    meta = []

    def values():
        forms = theory.closed_forms(block, depth=3, width=4.0, var_w=0.1)
        meta[:] = [(f.statistic, f.label, f.kind) for f in forms]
        return [f.values for f in forms]

    jax.eval_shape(values)
    return meta
