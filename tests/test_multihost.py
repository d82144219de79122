"""Monte-Carlo under JAX's multi-controller runtime: two processes with two CPU devices each
(jax.distributed on localhost, CPU collectives) give the one-process result for the same key,
as the simulated-device test does for one process with eight devices: a simulate, and a
sweep whose (configuration, network) items are sharded over the four devices of both hosts."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from meanfield import montecarlo
from meanfield.core.architecture import Block
from tests.helpers import assert_close

ROOT = Path(__file__).resolve().parents[1]
KW = dict(depth=3, width=16, batch=4, networks=6, chunk_size=4, var_w=1.5 / 16)
# A grid of three weight variances and two depths (up to 4), 5 networks each: 15 items in
# chunks of 8, so the last chunk is padded and crosses configurations.
GRID = dict(width=16, batch=4, networks=5, chunk_size=8)
GRID_VAR_W = [1.0 / 16, 2.0 / 16, 3.0 / 16]
GRID_DEPTH = [4, 2, 4]

# One process of the run: 2 local CPU devices, 4 global; process 0 writes the estimate.
_WORKER = """
import json, sys
import jax
process, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process)
sys.path.insert(0, sys.argv[4])
import meanfield
from meanfield import montecarlo
from meanfield.core.architecture import Block
kw, grid, var_w, depth = (json.loads(a) for a in sys.argv[5:9])
est = montecarlo.simulate(Block("relu", "bn_post", True), key=jax.random.key(9), warn=False, **kw)
swept = meanfield.sweep(Block("relu", "bn_pre", True), key=jax.random.key(4), var_w=var_w,
                        depth=depth, **grid).montecarlo
if process == 0:
    with open(out, "w") as f:
        json.dump({"devices": jax.device_count(), "processes": jax.process_count(),
                   "local": jax.local_device_count(),
                   **{k: getattr(est, k).mean.tolist() for k in ("m2_z", "m2_dz", "var_dw")},
                   "m2_z_se": est.m2_z.stderr.tolist(),
                   **{f"sweep_{k}": getattr(swept, k).mean.tolist()
                      for k in ("m2_z", "m2_dz", "var_dw")}}, f)
jax.distributed.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    if "jax_cpu_collectives_implementation" not in jax.config.values:
        pytest.skip(f"jaxlib {jax.__version__} has no CPU collectives for jax.distributed")
    out = tmp_path_factory.mktemp("multihost") / "estimate.json"
    port = str(_free_port())
    args = [str(out), str(ROOT), *map(json.dumps, (KW, GRID, GRID_VAR_W, GRID_DEPTH))]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(i), port, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        if p.returncode:
            errors.append(err[-3000:])
    assert not errors, "\n".join(errors)
    return json.loads(out.read_text())


def test_two_processes_give_the_one_process_result(two_processes):
    got = two_processes
    assert (got["processes"], got["devices"], got["local"]) == (2, 4, 2)
    one = montecarlo.simulate(
        Block("relu", "bn_post", True), key=jax.random.key(9), warn=False, **KW
    )
    for name in ("m2_z", "m2_dz", "var_dw"):
        want = getattr(one, name).mean
        assert_close(got[name][1:], want[1:], rtol=1e-5, err_msg=name)  # var_dw[0] is NaN
    assert_close(got["m2_z_se"], one.m2_z.stderr, rtol=1e-4)


def test_a_sweep_on_two_processes_gives_the_one_process_result(two_processes):
    import meanfield

    one = meanfield.sweep(
        Block("relu", "bn_pre", True),
        key=jax.random.key(4),
        var_w=GRID_VAR_W,
        depth=GRID_DEPTH,
        **GRID,
    ).montecarlo
    for name in ("m2_z", "m2_dz", "var_dw"):
        got = np.asarray(two_processes[f"sweep_{name}"], dtype=float)  # NaN past each depth
        assert_close(got[:, 1:], getattr(one, name).mean[:, 1:], rtol=1e-5, err_msg=name)
