"""Monte-Carlo engine: exact against naive autodiff per network, against the recursions and
closed forms within 4 standard errors where those are exact, reproducible across chunkings and
devices, finite in log where raw values overflow."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield
from meanfield import layers as ml
from meanfield import montecarlo, recursions
from meanfield import theory as t
from meanfield.core.architecture import Block
from meanfield.core.sampling import standard_normal
from tests.helpers import assert_close

ROOT = Path(__file__).resolve().parents[1]


def naive_statistics(block, depth, width, batch, var_w, key, input_std=1.0):
    """Plain float64 autodiff over explicit weight lists: no renormalization, no gates."""
    key_x, key_g, key_w = jax.random.split(key, 3)
    x = input_std * standard_normal(key_x, (batch, width), jnp.float64)
    g = standard_normal(key_g, (batch, width), jnp.float64)
    ws = [
        jnp.sqrt(var_w) * standard_normal(jax.random.fold_in(key_w, l), (width, width), jnp.float64)
        for l in range(1, depth + 1)
    ]
    act = (lambda u: u) if block.activation == "identity" else jax.nn.relu

    def bn(z):
        c = z - z.mean(0, keepdims=True)
        return c / jnp.sqrt((c**2).mean(0, keepdims=True))

    def loss(ws, eps):
        z = x + eps[0]
        zs = [z]
        for l, w in enumerate(ws, 1):
            if block.norm == "none":
                h = act(z @ w)
            elif block.norm == "bn_post":
                h = act(bn(z) @ w)
            else:
                h = act(bn(z)) @ w
            z = (z + h if block.residual else h) + eps[l]
            zs.append(z)
        return jnp.sum(g * z), jnp.stack(zs)

    eps = jnp.zeros((depth + 1, batch, width))
    (g_w, g_z), zs = jax.grad(loss, argnums=(0, 1), has_aux=True)(ws, eps)
    var_dw = [jnp.nan] + [jnp.sum(gw**2) / (width * width * batch) for gw in g_w]
    return {
        "mean_z": zs.mean((1, 2)),
        "m2_z": (zs**2).mean((1, 2)),
        "unitvar_z": zs.var(1).mean(1),
        "m2_dz": (g_z**2).mean((1, 2)),
        "var_dw": jnp.asarray(var_dw),
    }


@pytest.mark.parametrize("block", meanfield.all_blocks(), ids=lambda b: b.name)
def test_renormalized_network_equals_naive_autodiff(block, x64):
    key = jax.random.key(7)
    ours = montecarlo.network_statistics(block, 20, 16, 4, jnp.float64(2 / 16), key)
    ref = naive_statistics(block, 20, 16, 4, 2 / 16, key)
    for name in ("m2_z", "unitvar_z", "m2_dz", "var_dw"):
        assert_close(np.exp(ours[f"log_{name}"]), ref[name], rtol=1e-9, err_msg=name)
    scale = float(np.max(np.abs(ref["mean_z"]))) + 1.0
    assert_close(ours["mean_z"], ref["mean_z"], rtol=0, atol=1e-11 * scale)


@pytest.mark.parametrize(
    "block",
    [Block("relu", "none"), Block("identity", "bn_post"), Block("relu", "bn_pre", residual=False)],
    ids=lambda b: b.name,
)
def test_scaled_inputs_equal_naive_autodiff_on_scaled_inputs(block, x64):
    key = jax.random.key(3)
    ours = montecarlo.network_statistics(block, 10, 16, 4, jnp.float64(2 / 16), key, input_std=3.0)
    ref = naive_statistics(block, 10, 16, 4, 2 / 16, key, input_std=3.0)
    for name in ("m2_z", "unitvar_z", "m2_dz", "var_dw"):
        assert_close(np.exp(ours[f"log_{name}"]), ref[name], rtol=1e-9, err_msg=name)


def test_scaled_inputs_match_the_recursion_from_that_start():
    block = Block("identity", "bn_post")  # q_l = q_0 + l·α: the start is not a scale factor
    est = montecarlo.simulate(
        block,
        key=jax.random.key(5),
        depth=10,
        width=64,
        var_w=1 / 64,
        networks=256,
        batch=16,
        input_std=2.0,
    )
    prof = recursions.profile(block, depth=10, width=64, var_w=1 / 64, input_m2=4.0)
    assert np.all(np.abs(_z(est, "m2_z", prof.m2_z)) < 4)
    wrong = recursions.profile(block, depth=10, width=64, var_w=1 / 64)  # started at q_0 = 1
    assert np.all(np.abs(_z(est, "m2_z", wrong.m2_z)) > 4)


def test_input_std_must_be_positive():
    with pytest.raises(ValueError, match="input_std must be a finite number > 0, got 0.0"):
        montecarlo.simulate(
            Block(),
            key=jax.random.key(0),
            depth=2,
            width=8,
            var_w=0.1,
            networks=2,
            batch=2,
            input_std=0.0,
        )


def _z(est, name, prediction, layers=slice(None)):
    mean = np.asarray(getattr(est, name).mean, dtype=float)[layers]
    se = np.asarray(getattr(est, name).stderr, dtype=float)[layers]
    z = (mean - np.asarray(prediction, dtype=float)[layers]) / se
    return float(np.nanmax(np.abs(z)))


def _recursion(block, depth, width, var_w, batch):
    return recursions.profile(block, depth=depth, width=width, var_w=var_w).as_dict()


def _identity_bn(block, depth, width, var_w, batch):
    # Exact in expectation at any width and batch: q_l and the batch variance (B-1)/B + lα
    # (residual) or αB... (plain: z^l = W BN(z) has q = α exactly); gradients from the n -> ∞,
    # finite-B closed form (docs/finite-width.md §3; the finite-n remainder is ~0.3% at n = 256).
    alpha = width * var_w
    layers = np.arange(depth + 1)
    out = {
        "var_dw": np.array(
            t.identity_bn_finite_batch_gradient_variance(
                layers, depth, width, var_w, batch, residual=block.residual
            )
        )
    }
    out["var_dw"][0] = np.nan
    if block.residual:
        out["m2_z"] = 1.0 + layers * alpha
        out["unitvar_z"] = (batch - 1) / batch + layers * alpha
    else:
        out["m2_z"] = np.where(layers == 0, 1.0, alpha)
    return out


# block name -> (width, batch, networks, depth, statistics compared, prediction)
CASES = {
    # Exact at any width: E||(I+W)z||^2 = (1+α)||z||^2, and the backward factors of the layers
    # above l are independent of z^{l-1}.
    "identity-none-residual": (16, 4, 512, 6, ("m2_z", "m2_dz", "var_dw"), _recursion),
    "identity-none-plain": (16, 4, 512, 6, ("m2_z", "m2_dz", "var_dw"), _recursion),
    # ReLU without BN: the O(1/n) Euler mode is ~0.5% at n = 256, L = 3, below the error here.
    "relu-none-residual": (256, 4, 128, 3, ("mean_z", "m2_z", "m2_dz", "var_dw"), _recursion),
    "relu-none-plain": (256, 4, 128, 3, ("mean_z", "m2_z", "m2_dz", "var_dw"), _recursion),
    "identity-bn_post-residual": (256, 16, 256, 6, ("m2_z", "unitvar_z", "var_dw"), _identity_bn),
    "identity-bn_pre-residual": (256, 16, 256, 6, ("m2_z", "unitvar_z", "var_dw"), _identity_bn),
    # Plain identity BN: the finite-width remainder over the finite-B form is O(1/n) (measured
    # at most 1.7%, 1.0%, 0.5% at n = 256, 512, 1024, B = 16), below the error at n = 1024.
    "identity-bn_post-plain": (1024, 16, 64, 6, ("m2_z", "var_dw"), _identity_bn),
    "identity-bn_pre-plain": (1024, 16, 64, 6, ("m2_z", "var_dw"), _identity_bn),
    # ReLU with BN: the population recursion is the B -> ∞ limit; its O(1/B) correction is
    # ~0.15% at B = 1024 (measured), below the error of 16 networks.
    "relu-bn_post-residual": (
        128,
        1024,
        16,
        3,
        ("m2_z", "unitvar_z", "m2_dz", "var_dw"),
        _recursion,
    ),
    "relu-bn_pre-residual": (
        128,
        1024,
        16,
        3,
        ("mean_z", "m2_z", "unitvar_z", "m2_dz", "var_dw"),
        _recursion,
    ),
    # Plain ReLU BN compounds O(1/B) and O(1/n) every layer backward (2% at n = 128, B = 1024):
    # only the forward is exact enough to compare here.
    "relu-bn_post-plain": (128, 256, 32, 3, ("m2_z",), _recursion),
    "relu-bn_pre-plain": (128, 256, 32, 3, ("mean_z", "m2_z"), _recursion),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_agrees_within_four_standard_errors_and_a_wrong_variance_fails(name):
    width, batch, networks, depth, stats, predict = CASES[name]
    block = Block.from_name(name)
    var_w = 1.0 / width
    est = montecarlo.simulate(
        block,
        key=jax.random.key(2024),
        depth=depth,
        width=width,
        var_w=var_w,
        networks=networks,
        batch=batch,
    )
    # BN's centred inputs (rank B - 1) are structure, not a lost rank: nothing is reported.
    assert est.rank_deficit.shape == (depth + 1,) and not est.rank_deficit.any()
    right = predict(block, depth, width, var_w, batch)
    zs = {s: _z(est, s, right[s]) for s in stats}
    assert max(zs.values()) < 4.0, zs
    # A planted error: the prediction for a 25% larger weight variance must be rejected.
    wrong = predict(block, depth, width, 1.25 * var_w, batch)
    assert max(_z(est, s, wrong[s]) for s in stats) > 4.0


def test_same_key_same_result_for_any_chunking():
    # Depth 20 (weight-free: 4B <= n): float rounding differs between chunk sizes (XLA batches
    # the matmuls differently), and a factor of the Gram matrix that depended on the basis
    # eigh returns turned that into O(1) differences in single networks (4% in the means
    # between chunk sizes 5 and 10). With factors that are functions of the Gram matrix alone
    # only the rounding is left: 2e-6 is 17 float32 ulps.
    block = Block("relu", "bn_pre", True)
    kw = dict(key=jax.random.key(3), depth=20, width=32, var_w=1 / 32, networks=10, batch=8)
    one = montecarlo.simulate(block, chunk_size=1, **kw)
    a = montecarlo.simulate(block, chunk_size=5, **kw)
    b = montecarlo.simulate(block, chunk_size=10, **kw)
    c = montecarlo.simulate(block, chunk_size=5, **kw)
    for name in ("m2_z", "m2_dz", "var_dw"):
        for x in (a, one):
            assert_close(getattr(x, name).mean, getattr(b, name).mean, rtol=2e-6, err_msg=name)
            assert_close(getattr(x, name).stderr, getattr(b, name).stderr, rtol=2e-5)
        np.testing.assert_array_equal(getattr(a, name).mean, getattr(c, name).mean)
    d = montecarlo.simulate(block, chunk_size=5, **(kw | {"key": jax.random.key(4)}))
    assert not np.allclose(a.m2_dz.mean, d.m2_dz.mean)


# One process with 8 simulated CPU devices runs every multi-device case; the one-device
# references are computed here, in the test process. Network r uses split(key, R)[r] however
# the networks are chunked and sharded, so the results must agree to float rounding.
_DEVICE_KW = dict(depth=4, width=24, var_w=2 / 24, batch=6)
_DEVICE_SCRIPT = f"DEVICE_KW = {_DEVICE_KW!r}\n" + textwrap.dedent("""
    import json, jax
    from meanfield import Block, montecarlo
    def run(networks, **kw):
        est = montecarlo.simulate(Block("relu", "bn_post", True), key=jax.random.key(9),
                                  networks=networks, warn=False, **kw, **DEVICE_KW)
        return {"m2_dz": est.m2_dz.mean.tolist(), "var_dw": est.var_dw.mean[1:].tolist(),
                "m2_z": est.m2_z.mean.tolist(), "m2_z_se": est.m2_z.stderr.tolist()}
    out = {"devices": jax.device_count(), "12": run(12, chunk_size=8)}
    # Fewer networks than half the devices: the last (only) chunk is padded to 8 keys.
    out.update({str(r): run(r) for r in (2, 3)})
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
    )
    out = subprocess.run(
        [sys.executable, "-c", _DEVICE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    return result


@pytest.mark.parametrize("networks, chunk_size", [(12, 8), (2, 1), (3, 1)])
def test_simulated_devices_give_the_one_device_result(eight_devices, networks, chunk_size):
    # 12 networks in chunks of 8 over 8 devices (the last chunk padded), and 2 or 3 networks,
    # fewer than half the devices, against one device.
    one = montecarlo.simulate(
        Block("relu", "bn_post", True),
        key=jax.random.key(9),
        networks=networks,
        chunk_size=chunk_size,
        warn=False,
        **_DEVICE_KW,
    )
    got = eight_devices[str(networks)]
    for name in ("m2_z", "m2_dz", "var_dw"):
        want = getattr(one, name).mean[1:] if name == "var_dw" else getattr(one, name).mean
        assert_close(got[name], want, rtol=1e-5, err_msg=f"{name}, {networks} networks")
    assert_close(got["m2_z_se"], one.m2_z.stderr, rtol=1e-4)


def test_he_init_deep_network_overflows_raw_values_but_not_log10():
    block = Block("relu", "none", True)
    depth, width = 300, 32
    # The two inputs of a ReLU ResNet become parallel with depth: past l ~ 30 their Gram
    # matrix is singular to float32 precision, which the weight-free engine reports.
    rank = pytest.warns(montecarlo.RankDeficitWarning, match="relu-none-residual: at .* l = 29")
    with rank, pytest.warns(montecarlo.HeavyTailWarning, match="relu-none-residual: m2_z"):
        est = montecarlo.simulate(
            block,
            key=jax.random.key(1),
            depth=depth,
            width=width,
            var_w=2 / width,
            networks=4,
            batch=2,
        )
    assert not est.rank_deficit[:29].any() and np.all(est.rank_deficit[50:] == 1)
    assert np.all(est.rank_deficit_max <= 1)  # of rank 2: one eigenvalue lost
    assert np.all(np.isfinite(est.log10_m2_z.mean)) and np.all(np.isfinite(est.log10_m2_dz.mean))
    assert np.all(np.isfinite(est.log10_var_dw.mean[1:]))
    # Raw: E z^2 overflows at the top, the input gradient at the bottom; both are flagged.
    assert np.isinf(est.m2_z.mean[-1]) and np.isfinite(est.m2_z.mean[0])
    assert np.isinf(est.m2_dz.mean[0]) and est.overflow[0] and est.overflow[-1]
    raw_inf = np.zeros(depth + 1, bool)
    for name in ("m2_z", "var_z", "unitvar_z", "m2_dz", "var_dw"):
        raw_inf |= np.isinf(getattr(est, name).mean)
    np.testing.assert_array_equal(est.overflow, raw_inf)  # var_dw ~ 1e180 at every layer
    # The top is far past float32's 3.4e38, and the growth per block between l = 100 and 300
    # is the mean field's: log10 of the exact asymptotic rate λ(α) (2.904 at α = 2) within 5%
    # (width 32 lowers it by O(1/n), 1.5% here), while λ at a 25% larger or smaller α is 10%
    # away and must be rejected.
    assert float(est.log10_m2_z.mean[-1]) > 38
    lm = np.asarray(est.log10_m2_z.mean, dtype=float)
    rate = (lm[300] - lm[100]) / 200

    def off(alpha):
        return abs(rate / math.log10(float(t.relu_growth_rate(1.0, alpha))) - 1)

    assert off(2.0) < 0.05 and off(2.5) > 0.05 and off(1.6) > 0.05, rate


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(batch=1, block=Block("relu", "bn_post", True)),
            "batch must be >= 2 for relu-bn_post-residual",
        ),
        (dict(networks=1), "networks must be >= 2"),
        (dict(depth=0), "depth must be a Python integer >= 1"),
        (dict(width=0), "width must be a Python integer >= 1"),
        (dict(var_w=-1.0), "var_w must be a finite number > 0"),
        (dict(precision="tf32"), "precision must be one of"),
        (dict(key=0), "key must be a typed PRNG key"),
        (dict(block="relu"), "block must be a meanfield.Block"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    args = (
        dict(block=Block(), key=jax.random.key(0), depth=3, width=8, var_w=0.1, networks=4, batch=4)
        | kwargs
    )
    block = args.pop("block")
    with pytest.raises(ValueError, match=message):
        montecarlo.simulate(block, **args)


def test_second_call_reuses_the_compiled_chunk():
    block = Block("identity", "none", False)
    kw = dict(depth=3, width=8, var_w=0.1, networks=4, batch=2, chunk_size=4, warn=False)
    montecarlo.simulate(block, key=jax.random.key(0), **kw)
    fn, _ = montecarlo.runner.chunk_fn(
        ml.block_tree(block),  # simulate compiles the block's tree
        3,
        8,
        2,
        "highest",
        4,
        jax.device_count(),
        None,  # no init scheme: var_w
        "weightfree",  # auto: 4B <= n
        False,  # no branch scale given
        0,  # progress_every: no per-layer report for a call this short
        "threefry2x32",  # the key's implementation
    )
    before = fn._cache_size()
    montecarlo.simulate(block, key=jax.random.key(1), **(kw | {"var_w": 0.2}))
    assert fn._cache_size() == before == 1


def test_float64_when_enabled(x64):
    est = montecarlo.simulate(
        Block("relu", "bn_pre", True),
        key=jax.random.key(0),
        depth=3,
        width=8,
        var_w=0.1,
        networks=4,
        batch=4,
    )
    assert est.m2_z.mean.dtype == np.float64


def test_named_init_draws_the_same_weights_as_its_variance():
    block = Block("relu", "none", True)
    kw = dict(key=jax.random.key(5), depth=4, width=16, networks=6, batch=3)
    by_name = montecarlo.simulate(block, init="he", **kw)
    by_var = montecarlo.simulate(block, var_w=2 / 16, **kw)
    assert_close(by_name.m2_dz.mean, by_var.m2_dz.mean, rtol=1e-6)
    with pytest.raises(ValueError, match="give exactly one of var_w and init"):
        montecarlo.simulate(block, var_w=0.1, init="he", **kw)
    with pytest.raises(ValueError, match="init must be one of"):
        montecarlo.simulate(block, init="lecun", **kw)


def test_orthogonal_and_zero_inits_give_their_exact_moments():
    # Identity ResNet: E||(I + W)z||^2 = (1 + gain^2)||z||^2 for Haar W of gain g (E W = 0),
    # exactly as for Gaussian weights with α = g^2; with zero weights nothing changes.
    block = Block("identity", "none", True)
    depth, width, gain = 5, 16, 0.8
    est = montecarlo.simulate(
        block,
        key=jax.random.key(8),
        depth=depth,
        width=width,
        init="orthogonal",
        gain=gain,
        networks=256,
        batch=4,
    )
    layers = np.arange(depth + 1)
    assert _z(est, "m2_z", (1 + gain**2) ** layers) < 4
    assert _z(est, "m2_dz", (1 + gain**2) ** (depth - layers)) < 4
    assert _z(est, "m2_z", (1 + 1.25 * gain**2) ** layers) > 4  # a wrong gain is rejected
    zero = montecarlo.simulate(
        block, key=jax.random.key(8), depth=depth, width=width, init="zero", networks=64, batch=4
    )
    assert _z(zero, "m2_dz", np.ones(depth + 1)) < 4  # dE/dz^l = g at every layer
    assert_close(zero.m2_z.mean, np.full(depth + 1, zero.m2_z.mean[0]), rtol=1e-6)


def test_width_squared_times_batch_past_int32():
    # n² B = 2^31 at n = 16384, B = 8 (as at n = 4096, B = 128): the normalization of var_dw
    # was a Python int that JAX could not pass as int32. Plain identity network, one layer:
    # dE/dW = x^T g, so E var_dw = E tr(x x^T g g^T)/(n² B) = 1 and E m2_z^1 = n var_w = 1.
    n = 16384
    est = montecarlo.simulate(
        Block("identity", "none", False),
        key=jax.random.key(0),
        depth=1,
        width=n,
        var_w=1 / n,
        networks=8,
        batch=8,
        engine="weightfree",
    )
    assert _z(est, "var_dw", [np.nan, 1.0]) < 4 and _z(est, "m2_z", [1.0, 1.0]) < 4
    assert _z(est, "var_dw", [np.nan, 1.05]) > 4  # 5% off is resolved


def test_a_network_that_cannot_fit_is_refused_before_compiling(monkeypatch):
    monkeypatch.setattr(montecarlo.memory, "_available_bytes", lambda: 8 * 2**30)
    kw = dict(key=jax.random.key(0), depth=2, width=60000, var_w=1 / 60000, networks=2, batch=8)
    message = (
        r"one network does not fit in memory: relu-none-residual at width 60000, depth 2, "
        r"batch 8, engine='explicit' needs about 53.7 GiB \(57,617,281,024 bytes\) for its "
        r"60000 x 60000 weight matrices .* but 8 GiB \(8,589,934,592 bytes\) are available"
    )
    with pytest.raises(montecarlo.NetworkMemoryError, match=message) as info:
        montecarlo.simulate(Block("relu", "none", True), engine="explicit", **kw)
    assert isinstance(info.value, MemoryError)
    with pytest.raises(montecarlo.NetworkMemoryError, match="engine='weightfree' needs about"):
        montecarlo.simulate(Block("relu", "none", True), **(kw | {"depth": 20000, "batch": 16}))


def test_a_deep_single_chunk_reports_its_layers_and_computes_the_same(capfd, monkeypatch):
    """A depth-100 run in one chunk says, while it runs, which layer it has reached forward
    and backward (every L/50 layers); the numbers are those of a silent run. With
    progress=None the report turns on for calls estimated to be long."""
    block = Block("relu", "bn_post", True)
    kw = dict(key=jax.random.key(3), depth=100, width=8, var_w=0.1, networks=2, batch=4)
    kw |= dict(warn=False, engine="explicit")
    quiet = montecarlo.simulate(block, progress=False, **kw)
    assert capfd.readouterr().err == ""
    montecarlo.simulate(block, progress=True, **kw)  # a short chunk: one line, no layers
    err = capfd.readouterr().err
    assert "2/2 networks" in err and "layer" not in err
    monkeypatch.setattr(montecarlo.runner, "AUTO_SECONDS", 0.0)  # every call is "long" now
    loud = montecarlo.simulate(block, progress=True, **kw)
    err = capfd.readouterr().err
    assert "chunk 1/1, forward layer 50/100" in err and "backward layer 2/100" in err
    assert "2/2 networks" in err
    for name in recursions.STATISTICS:
        np.testing.assert_array_equal(getattr(loud, name).mean, getattr(quiet, name).mean)
    montecarlo.simulate(block, **kw)  # progress=None: a "long" call reports by itself
    assert "forward layer" in capfd.readouterr().err
    monkeypatch.undo()
    montecarlo.simulate(block, **kw)  # ... and a short one stays silent
    assert capfd.readouterr().err == ""


def test_the_run_time_estimate_orders_the_engines():
    from meanfield.montecarlo.progress import estimated_seconds

    # Explicit weights cost n² per layer, weight-free nB²: at n = 4096, B = 16 the latter wins.
    explicit = estimated_seconds("explicit", 16, 100, 4096, 16, 1)
    weightfree = estimated_seconds("weightfree", 16, 100, 4096, 16, 1)
    assert explicit > 10 * weightfree > 0
    assert estimated_seconds("explicit", 32, 100, 4096, 16, 2) == pytest.approx(4 * explicit)


def test_another_var_w_c_branch_scale_input_scale_or_seed_compiles_nothing(count_compiles):
    """One compiled program per (tree, sizes, engine, scheme): the values are traced."""
    block = Block("relu", "none", True)
    kw = dict(depth=4, width=16, networks=4, batch=4, warn=False)
    runs = [
        dict(key=jax.random.key(0), init="depth_scaled", c=1.0),
        dict(key=jax.random.key(1), init="depth_scaled", c=2.5, input_std=3.0),
        dict(key=jax.random.key(0), var_w=0.1, branch_scale=0.5),
        dict(key=jax.random.key(2), var_w=0.2, branch_scale=0.25, input_std=0.5),
    ]
    for first, second in (runs[:2], runs[2:]):
        montecarlo.simulate(block, **kw, **first)  # compiles
        before = len(count_compiles)
        est = montecarlo.simulate(block, **kw, **second)
        assert len(count_compiles) == before, second
        assert np.all(np.isfinite(est.m2_z.mean))
    # The recursion likewise: another var_w, c or input statistics is the same program.
    recursions.profile(block, depth=7, width=16, init="depth_scaled", c=1.0)
    before = len(count_compiles)
    recursions.profile(block, depth=7, width=16, init="depth_scaled", c=3.0, input_m2=2.0)
    recursions.profile(block, depth=7, width=16, var_w=0.3)
    assert len(count_compiles) == before
    # And the counter counts: a new depth is a new program.
    recursions.profile(block, depth=8, width=16, var_w=0.3)
    assert len(count_compiles) > before


def test_traced_values_give_the_numbers_of_separate_programs():
    """The traced c and branch scale give what a program with them fixed gives (to float32
    rounding: a constant c is divided on the host in float64, a traced one on the device)."""
    block = Block("relu", "none", True)
    kw = dict(depth=4, width=16, networks=4, batch=4, warn=False, key=jax.random.key(3))
    a = montecarlo.simulate(block, init="depth_scaled", c=2.0, **kw)
    var_w = 2.0 / (16 * 4)
    b = montecarlo.simulate(block, var_w=var_w, **kw)
    for name in recursions.STATISTICS:
        assert_close(getattr(a, name).mean, getattr(b, name).mean, rtol=1e-5, err_msg=name)
