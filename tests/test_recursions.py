"""The scanned, log-scaled recursion against a plain Python loop over the raw moments, plus
numerics (depth 10,000), vmap/jit behaviour, validation and properties."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meanfield
from meanfield import recursions
from meanfield.core.architecture import Block
from tests.helpers import assert_close

E1, E2 = 1 / math.sqrt(2 * math.pi), 0.5
_LN10 = math.log(10.0)


def reference_profile(block: Block, depth: int, alpha: float) -> dict[str, np.ndarray]:
    """Direct iteration of (m, q, c) and p in float64 Python, no normalization, arccos kernel."""
    relu = block.activation == "relu"
    e1, e2, a = (E1, E2, 0.5) if relu else (0.0, 1.0, 1.0)
    m, q, c = 0.0, 1.0, 0.0
    ms, qs, cs = [m], [q], [c]
    for _ in range(depth):
        if block.norm == "none":
            qa, ca, f_relu = q, c, relu
        elif block.norm == "bn_post":
            qa, ca, f_relu = 1.0, 0.0, relu
        else:
            qa, ca, f_relu = e2, e1**2, False
        if f_relu:
            v, rho = alpha * qa, min(ca / qa, 1.0)
            e, s = math.sqrt(v / (2 * math.pi)), v / 2
            k = v / (2 * math.pi) * (math.sqrt(1 - rho**2) + rho * (math.pi - math.acos(rho)))
        else:
            e, s, k = 0.0, alpha * qa, alpha * ca
        if block.residual:
            m, q, c = m + e, q + s + 2 * e * m, c + k + 2 * e * m
        else:
            m, q, c = e, s, k
        ms.append(m), qs.append(q), cs.append(c)
    ms, qs, cs = map(np.array, (ms, qs, cs))
    unitvar = qs - cs
    p = np.ones(depth + 1)
    for l in range(depth, 0, -1):
        gain = alpha * a / (unitvar[l - 1] if block.norm != "none" else 1.0)
        p[l - 1] = p[l] * ((1.0 + gain) if block.residual else gain)
    dw = np.full(depth + 1, np.nan)
    for l in range(1, depth + 1):
        if block.norm == "none":
            dw[l] = a * p[l] * qs[l - 1]
        elif block.norm == "bn_post":
            dw[l] = a * p[l]
        else:
            s_l = 1.0 if (block.residual or l == depth) else 0.0
            dw[l] = (e2 - e1**2) * p[l] + s_l * e1**2
    return {
        "mean_z": ms,
        "m2_z": qs,
        "var_z": qs - ms**2,
        "unitvar_z": unitvar,
        "m2_dz": p,
        "var_dw": dw,
        "corr_z": cs / qs,
    }


@pytest.mark.parametrize("block", meanfield.all_blocks(), ids=lambda b: b.name)
@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.0])
def test_scan_matches_python_loop(block, alpha, x64):
    depth = 12
    prof = recursions.profile(block, depth=depth, width=100, var_w=alpha / 100)
    ref = reference_profile(block, depth, alpha)
    for name in recursions.STATISTICS:
        got = np.asarray(getattr(prof, name))
        # unitvar of ReLU without BN is q - c, a difference that the reference loses to
        # cancellation (~1e-16 q / (q - c)); compare it with an absolute floor.
        assert_close(
            got,
            ref[name],
            rtol=1e-10,
            atol=1e-12 * np.max(np.abs(ref["m2_z"])),
            err_msg=f"{block.name} {name}",
        )
        log = getattr(prof, f"log10_{name}", None)
        if log is not None:
            assert_close(10.0 ** np.asarray(log), got, rtol=1e-10)
    assert np.isnan(prof.var_dw[0])


# float32 against float64 at depth 10,000: every field of every preset block, at several α.
# One compiled program per dtype: the blocks are traced into one jit, vmapped over α.
DEEP = 10_000
DEEP_ALPHAS = (0.01, 0.3, 2.0, 5.0)  # 2 is He init for ReLU
F32 = np.finfo(np.float32)
# Allowed |ln x32 - ln x64| = eps32 (C |ln x| + C √L), C = 32; see _log_tolerance.
ULPS = 32.0


def _log_tolerance(log_ref: np.ndarray) -> np.ndarray:
    """What float32 can honestly promise for a value whose float64 natural log is ``log_ref``.

    Every field is exp of a log-state that is a compensated (Kahan) sum of L increments, so the
    summation itself costs O(1) ulps of |ln x|. Each increment is formed from logs of size
    O(1-10) and carries a few ulps of them: in a network of identical layers that rounding is
    the same every layer and adds up proportionally to |ln x| (up to ~10 ulps of ln x for
    relu-bn_post-plain's log p, a sum of L equal steps log(α/u) each the difference of two
    logs of size |log α|); where a state approaches its limit only like 1/l (t = m/√q -> 1
    under bn_post), each layer's rounding persists for ~l layers and the errors add as a
    random walk, ~√L ulps. 32 ulps of each leaves a margin of ~3 over the worst measured
    case and is still 15x below the 54% (ln 1.54 = 0.43) and 400x below the 17% that the
    recursion used to lose in relu-none's unitvar_z and relu-bn_post's var_z.
    """
    return F32.eps * ULPS * (np.abs(log_ref) + math.sqrt(DEEP))


@pytest.fixture(scope="module")
def deep_profiles():
    """{x64: {block name: {field: array (len(DEEP_ALPHAS), DEEP + 1)}}}; the same float32 α
    values in both precisions, so that float64 is the reference at the same inputs."""
    blocks = meanfield.all_blocks()

    def run(alphas):
        return [
            jax.vmap(lambda a, b=b: recursions.profile(b, depth=DEEP, width=1.0, var_w=a))(alphas)
            for b in blocks
        ]

    out = {}
    for x64 in (False, True):
        with jax.enable_x64(x64):
            alphas = jnp.asarray(np.float32(DEEP_ALPHAS), jnp.float64 if x64 else jnp.float32)
            profs = jax.jit(run)(alphas)
            out[x64] = {
                b.name: {k: np.asarray(v) for k, v in p.as_dict().items()}
                for b, p in zip(blocks, profs, strict=True)
            }
    return out


def _log_mismatch(got, want):
    """Why float32 natural logs ``got`` miss float64 ones ``want``, or None."""
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        return "NaN at other layers"
    finite = np.isfinite(want)
    if not np.array_equal(got[~finite], want[~finite], equal_nan=True):
        return "infinite at other layers"
    err, tol = np.abs(got - want)[finite], _log_tolerance(want[finite])
    if np.all(err <= tol):
        return None
    i = np.argmax(err / tol)
    return f"|Δ ln| = {err[i]:.3g} > {tol[i]:.3g} at ln x = {want[finite][i]:.5g}"


def _raw_mismatch(got, want):
    """Why raw float32 values miss float64 ones, or None: the relative error must be within
    _log_tolerance (plus the smallest normal float32: XLA flushes subnormals to zero), and
    ±inf exactly where the float64 value is past the float32 range."""
    got = got.astype(np.float64)
    if not np.array_equal(np.isnan(got), np.isnan(want)):
        return "NaN at other layers"
    mag = np.abs(np.where(np.isnan(want), 1.0, want))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        tol = _log_tolerance(np.where(mag > 0, np.log(mag), 0.0))
        fits = (mag <= F32.max * np.exp(-tol)) & ~np.isnan(want)
        past = mag >= F32.max * np.exp(tol)
        err = np.abs(got - want)
    bound = np.expm1(tol[fits]) * mag[fits] + F32.tiny
    if not np.all(err[fits] <= bound):  # NaN errors (inf - finite) fail too
        i = np.argmax(np.nan_to_num(err[fits] / bound, nan=np.inf))
        return (
            f"{got[fits][i]:.7g} vs {want[fits][i]:.7g}, relative error "
            f"{err[fits][i] / mag[fits][i]:.3g} > {tol[fits][i]:.3g}"
        )
    if not np.array_equal(got[past], np.sign(want[past]) * np.inf):
        return "finite past the float32 range"
    return None


@pytest.mark.parametrize("name", [b.name for b in meanfield.all_blocks()])
def test_float32_matches_float64_at_depth_ten_thousand(deep_profiles, name):
    p32, p64 = deep_profiles[False][name], deep_profiles[True][name]
    assert p32["m2_z"].dtype == np.float32 and p64["m2_z"].dtype == np.float64
    fields = [f.name for f in dataclasses.fields(recursions.Profile)]
    assert sorted(p32) == sorted(fields)
    failures, log_raw = [], []
    for field in (f for f in fields if f != "overflow"):
        got, want = p32[field], p64[field]
        if field == "corr_z":
            # 1 - u/q from the two logs: its absolute error is (1 - corr) times theirs (from
            # the logs, finite where u and q themselves underflow).
            logs = [_LN10 * p64[f"log10_{f}"] for f in ("unitvar_z", "m2_z")]
            with np.errstate(invalid="ignore"):
                bound = (1 - want) * sum(_log_tolerance(x) for x in logs) + F32.eps
                err = np.abs(got.astype(np.float64) - want)
                bad = ~(err <= bound) & ~(np.isnan(got) & np.isnan(want))
            why = "absolute error past (1 - corr)·(log tolerances)" if np.any(bad) else None
        elif field.startswith("log10_"):
            why = _log_mismatch(_LN10 * got.astype(np.float64), _LN10 * want)
            # Finite in log even where the raw value is not (var_dw is undefined at l = 0).
            if not np.all(np.isfinite(got[..., 1:] if field == "log10_var_dw" else got)):
                why = why or "not finite"
        else:
            why = _raw_mismatch(got, want)
            with np.errstate(divide="ignore"):
                log_raw.append(np.log(np.abs(want)))
        if why:
            failures.append(f"{field}: {why}")
    # The flag is set exactly where a raw float32 value is past the range (up to rounding).
    log_top = np.max(np.nan_to_num(np.stack(log_raw), nan=-np.inf), axis=0)
    margin = _log_tolerance(np.where(np.isfinite(log_top), log_top, 0.0))
    flag, log_max = p32["overflow"], math.log(F32.max)
    if not (
        np.all(flag[log_top >= log_max + margin]) and not np.any(flag[log_top <= log_max - margin])
    ):
        failures.append("overflow: not where the float64 values leave the float32 range")
    if name in (
        "relu-none-residual",
        "identity-none-residual",
        "relu-bn_pre-plain",
        "identity-none-plain",
    ):
        if not np.any(flag[DEEP_ALPHAS.index(2.0)]):  # He init leaves the float32 range
            failures.append("overflow: never set at He init")
    assert not failures, f"{name}:\n" + "\n".join(failures)


def test_identity_growth_exact_at_depth_ten_thousand(deep_profiles):
    prof = deep_profiles[False]["identity-none-residual"]
    i = DEEP_ALPHAS.index(2.0)
    expected = DEEP * math.log10(3.0)  # (1 + α)^L with α = 2
    assert float(prof["log10_m2_z"][i, -1]) == pytest.approx(expected, rel=1e-6)
    assert float(prof["log10_m2_dz"][i, 0]) == pytest.approx(expected, rel=1e-6)


def test_vmap_over_depth_and_var_w_equals_separate_calls():
    block = Block("relu", "bn_post", True)
    depths = jnp.array([3, 10, 25])
    var_ws = 1.0 / (64 * depths)

    def run(L, v):
        return recursions.profile(block, depth=L, width=64, var_w=v, max_depth=25)

    batched = jax.vmap(run)(depths, var_ws)
    assert batched.m2_z.shape == (3, 26)
    for i, L in enumerate([3, 10, 25]):
        single = recursions.profile(block, depth=L, width=64, var_w=1.0 / (64 * L))
        for name in recursions.STATISTICS:
            assert_close(getattr(batched, name)[i, : L + 1], getattr(single, name), rtol=1e-6)
        assert np.all(np.isnan(np.asarray(batched.m2_z[i, L + 1 :])))
        assert not np.any(np.asarray(batched.overflow[i]))


def test_array_arguments_broadcast():
    prof = recursions.profile(
        Block("identity", "none", True), depth=4, width=10.0, var_w=jnp.array([0.1, 0.2])
    )
    assert prof.m2_z.shape == (2, 5)
    assert_close(prof.m2_z[1], 3.0 ** np.arange(5), rtol=1e-6)


def test_second_call_does_not_recompile():
    block = Block("relu", "none", False)
    recursions.profile(block, depth=17, width=32, var_w=0.05)
    before = recursions._profile._cache_size()
    recursions.profile(block, depth=17, width=32, var_w=0.07)
    recursions.profile(block, depth=17, width=64, var_w=0.01)
    assert recursions._profile._cache_size() == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=0), "depth must be a Python integer >= 1"),
        (dict(depth=2.5), "depth must be a Python integer >= 1"),
        (dict(width=0.0), "width must be a finite number >= 1"),
        (dict(var_w=-1.0), "var_w must be a finite number > 0"),
        (dict(var_w=float("nan")), "var_w must be a finite number > 0"),
        (dict(depth=30, max_depth=20), "depth must be <= max_depth=20"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    args = dict(depth=5, width=16, var_w=0.1) | kwargs
    with pytest.raises(ValueError, match=message):
        recursions.profile(Block(), **args)
    with pytest.raises(ValueError, match="block must be a meanfield.Block"):
        recursions.profile("relu", depth=5, width=16, var_w=0.1)


def test_traced_depth_requires_max_depth():
    with pytest.raises(ValueError, match="max_depth must be given"):
        jax.vmap(lambda L: recursions.profile(Block(), depth=L, width=4, var_w=0.1))(
            jnp.array([1, 2])
        )


def test_identity_bn_placements_are_the_same_network_and_relu_ones_share_unitvar(x64):
    kw = dict(depth=40, width=128, var_w=1.5 / 128)
    post = recursions.profile(Block("identity", "bn_post", True), **kw)
    pre = recursions.profile(Block("identity", "bn_pre", True), **kw)
    for name in recursions.STATISTICS:
        assert_close(getattr(post, name), getattr(pre, name), rtol=1e-12)
    post = recursions.profile(Block("relu", "bn_post", True), **kw)
    pre = recursions.profile(Block("relu", "bn_pre", True), **kw)
    assert_close(post.unitvar_z, pre.unitvar_z, rtol=1e-12)
    assert_close(post.m2_dz, pre.m2_dz, rtol=1e-12)
    assert not np.allclose(post.m2_z, pre.m2_z)  # the ReLU mean drifts only in bn_post


@settings(max_examples=25, deadline=None)
@given(
    block=st.sampled_from([b for b in meanfield.all_blocks() if b.residual]),
    alpha=st.floats(1e-3, 5.0),
    depth=st.integers(1, 60),
)
def test_residual_profiles_are_monotone_in_layer(block, alpha, depth):
    # One max_depth: depth is then data, and each block compiles once for all examples.
    prof = recursions.profile(block, depth=depth, width=1.0, var_w=alpha, max_depth=60)
    q = np.asarray(prof.log10_m2_z)[: depth + 1]
    p = np.asarray(prof.log10_m2_dz)[: depth + 1]
    assert np.all(np.isnan(np.asarray(prof.log10_m2_z)[depth + 1 :]))
    assert np.all(np.diff(q) >= -1e-6) and np.all(np.diff(p) <= 1e-6)


@settings(max_examples=20, deadline=None)
@given(
    block=st.sampled_from(list(meanfield.all_blocks())),
    alpha=st.floats(1e-2, 3.0),
    factor=st.floats(1.01, 3.0),
    depth=st.integers(2, 40),
)
def test_more_weight_variance_never_shrinks_the_signal(block, alpha, factor, depth):
    kw = dict(depth=depth, width=1.0, max_depth=40)  # one compile per block
    small = recursions.profile(block, var_w=alpha, **kw)
    large = recursions.profile(block, var_w=alpha * factor, **kw)
    if block.norm == "none" or block.residual:
        assert float(large.log10_m2_z[depth]) >= float(small.log10_m2_z[depth]) - 1e-6
    if block.norm == "none":  # without BN the backward gain grows with α too
        assert float(large.log10_m2_dz[0]) >= float(small.log10_m2_dz[0]) - 1e-6


@settings(max_examples=20, deadline=None)
@given(width=st.floats(1.0, 4096.0), alpha=st.floats(1e-3, 4.0))
def test_profile_depends_on_width_and_var_w_only_through_alpha(width, alpha):
    block = Block("relu", "bn_pre", True)
    a = recursions.profile(block, depth=8, width=width, var_w=alpha / width)
    b = recursions.profile(block, depth=8, width=1.0, var_w=alpha)
    assert_close(a.var_dw, b.var_dw, rtol=1e-5)


@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_start_scales_homogeneous_networks(activation):
    # Without BN the network is positively homogeneous: z^0 -> s·z^0 multiplies every forward
    # second moment by s² and leaves the backward profile (normalized at L) unchanged.
    block = Block(activation=activation, norm="none")
    base = recursions.profile(block, depth=30, width=64, var_w=2 / 64, input_unitvar=0.5)
    scaled = recursions.profile(
        block, depth=30, width=64, var_w=2 / 64, input_m2=9.0, input_unitvar=4.5
    )
    assert_close(scaled.m2_z, 9.0 * base.m2_z, rtol=1e-5)
    assert_close(scaled.unitvar_z, 9.0 * base.unitvar_z, rtol=1e-5)
    assert_close(scaled.m2_dz, base.m2_dz, rtol=1e-5)


def test_start_enters_the_bn_forward_additively():
    block = Block(activation="identity", norm="bn_post")
    prof = recursions.profile(block, depth=20, width=64, var_w=1 / 64, input_m2=3.0)
    assert_close(prof.m2_z, 3.0 + np.arange(21) * 1.0, rtol=1e-5)  # q_0 + l·α, α = 1


def test_start_defaults_to_standard_normal_inputs():
    block = Block(activation="relu", norm="bn_pre")
    a = recursions.profile(block, depth=10, width=32, var_w=1 / 32)
    b = recursions.profile(
        block, depth=10, width=32, var_w=1 / 32, input_m2=1.0, input_mean=0.0, input_unitvar=1.0
    )
    for name in ("m2_z", "unitvar_z", "m2_dz", "var_dw"):
        assert_close(getattr(a, name), getattr(b, name), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_m2=0.0), "input_m2 must be a finite number > 0, got 0.0"),
        (dict(input_mean=1.0), r"input_mean\*\*2 must be < input_m2"),
        (dict(input_unitvar=2.0), r"input_unitvar must be <= input_m2 - input_mean\*\*2"),
        (dict(input_mean=float("nan")), "input_mean must be finite"),
    ],
)
def test_start_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        recursions.profile(Block(), depth=3, width=8, var_w=0.1, **kwargs)


def test_profile_works_under_an_outer_jit_with_the_default_start():
    block = Block(activation="relu", norm="none")
    f = jax.jit(lambda v: recursions.profile(block, depth=5, width=16.0, var_w=v).m2_z)
    assert_close(f(0.1), recursions.profile(block, depth=5, width=16, var_w=0.1).m2_z, rtol=1e-6)


@pytest.mark.parametrize("block", [Block("relu", "bn_post", True), Block("relu", "none", False)])
def test_traced_depth_past_max_depth_gives_an_all_nan_profile(block):
    # Under vmap the depth cannot be refused; it must not be silently cut at max_depth.
    def run(L):
        return recursions.profile(block, depth=L, width=16, var_w=1 / 16, max_depth=5)

    batched = jax.vmap(run)(jnp.array([3, 7]))
    single = recursions.profile(block, depth=3, width=16, var_w=1 / 16)
    for name, value in batched.as_dict().items():
        value = np.asarray(value)
        assert value.shape == (2, 6)
        if name == "overflow":
            assert not np.any(value[1])
            assert np.array_equal(value[0, :4], np.asarray(single.overflow))
            continue
        assert np.all(np.isnan(value[1])), name
        assert_close(value[0, :4], getattr(single, name), rtol=1e-6)
        assert np.all(np.isnan(value[0, 4:])), name
