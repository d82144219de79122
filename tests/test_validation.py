"""Arguments out of their domain are refused by name, never turned into a number: every public
closed form (a ValueError for concrete values, NaN under tracing), values that must be one
number, key arrays, missing or complex sizes, trees without a weight, and Monte-Carlo calls
that do not fit in memory (refused before anything is compiled) or that run long (which
report their progress)."""

import inspect
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield
from meanfield import inits, recursions
from meanfield import layers as ml
from meanfield import theory as t
from meanfield.core.architecture import ACTIVATION_NAMES, Block
from meanfield.montecarlo import NetworkMemoryError, memory, runner
from meanfield.theory.common import check_activation
from tests.helpers import assert_close

NAN = float("nan")
BLOCK = Block("identity", "none", True)
LBW = dict(layer=3, width=10, var_w=0.1)  # a layer, width and weight variance
LDWV = dict(layer=2, depth=5, width=10, var_w=0.1)

# Every public closed form: a call inside its domain, and arguments out of it.
THEORY = {
    "chi1": (dict(activation="tanh", alpha=1.5, q=1.0), [("alpha", -1.0), ("q", NAN)]),
    "critical_alpha": (dict(activation="relu", q=1.0), [("q", -1.0), ("steps", 0)]),
    "he_like_alpha": (dict(activation="leaky_relu", slope=0.1), [("slope", NAN)]),
    "plain_correlation_map": (
        dict(activation="relu", alpha=2.0, q=1.0, c=0.5),
        [("c", 1.5), ("q", 0.0), ("alpha", NAN)],
    ),
    "plain_fixed_point": (
        dict(activation="relu", alpha=2.0, steps=20),
        [("alpha", -1.0), ("c0", -2.0), ("q0", 0.0)],
    ),
    "closed_forms": (dict(block=BLOCK, depth=3, width=16, var_w=0.1), [("var_w", -0.1)]),
    "he_var_w": (dict(fan_in=64), [("fan_in", 0.5)]),
    "glorot_var_w": (dict(fan_in=64, fan_out=32), [("fan_out", 0)]),
    "depth_scaled_var_w": (dict(width=64, depth=10, c=1.0), [("depth", 0), ("c", -1.0)]),
    "depth_scaled_growth": (dict(depth=10, c=1.0), [("depth", 2.5), ("c", NAN)]),
    "depth_scaled_growth_limit": (dict(c=1.0), [("c", -1.0)]),
    "forward_second_moment": (
        dict(LBW, m2_x=1.0),
        [("layer", -1), ("var_w", -0.1), ("m2_x", -1.0)],
    ),
    "plain_forward_second_moment": (LBW, [("layer", 1.5)]),
    "plain_relu_forward_second_moment": (LBW, [("width", 0.0)]),
    "relu_variance_lower_bound_paper": (dict(LBW, var_x=1.0), [("var_x", -1.0)]),
    "relu_variance_lower_bound": (LBW, [("var_w", NAN)]),
    "relu_second_moment_lower_bound": (LBW, [("layer", -2)]),
    "relu_growth_rate": (dict(width=10, var_w=0.1), [("var_w", -0.1)]),
    "relu_depth_scaled_log_second_moment": (dict(depth=100, c=1.0), [("depth", 0), ("c", -1)]),
    "backward_second_moment": (
        dict(LDWV, activation="relu"),
        [("layer", 6), ("layer", -1), ("var_w", -0.1)],
    ),
    "relu_delta_variance": (LDWV, [("var_w", -1.0)]),
    "identity_delta_variance": (LDWV, [("layer", -1)]),
    "plain_backward_second_moment": (dict(LDWV, activation="relu"), [("var_w", 0.0)]),
    "relu_gradient_variance_lower_bound_paper": (
        dict(depth=5, width=10, var_w=0.1),
        [("depth", 0)],
    ),
    "relu_gradient_variance_lower_bound": (dict(depth=5, width=10, var_w=0.1), [("width", NAN)]),
    "identity_gradient_variance_paper": (dict(depth=5, width=10, var_w=0.1), [("var_w", -1.0)]),
    "identity_gradient_variance": (LDWV, [("layer", 0), ("layer", 6)]),
    "bn_variance_paper": (dict(LBW, activation="relu", var_x=1.0), [("var_x", -1.0)]),
    "bn_sigma2_paper": (dict(LBW, activation="relu"), [("layer", -1)]),
    "bn_unit_variance": (dict(LBW, activation="relu"), [("var_w", -1.0)]),
    "bn_mean": (dict(LBW, activation="relu", norm="bn_post"), [("layer", -1)]),
    "bn_second_moment": (dict(LBW, activation="relu", norm="bn_pre"), [("var_w", -0.1)]),
    "bn_gradient_growth_paper": (dict(layer=2, depth=10), [("layer", 0)]),
    "bn_gradient_variance_paper": (dict(layer=2, depth=10, activation="relu"), [("layer", 11)]),
    "bn_backward_second_moment": (
        dict(LDWV, activation="relu"),
        [("var_w", -0.1), ("layer", -1)],
    ),
    "bn_gradient_variance": (dict(LDWV, activation="relu", norm="bn_pre"), [("layer", 0)]),
    "bn_relu_gradient_growth_asymptotic": (dict(layer=2, depth=10), [("layer", 0)]),
    "plain_bn_backward_second_moment": (dict(LDWV, activation="relu"), [("depth", 5.5)]),
    "identity_bn_finite_batch_gradient_variance": (dict(LDWV, batch=16), [("batch", 3)]),
    "finite_width_m2_sd": (dict(block=BLOCK, layer=3, width=16, var_w=0.1), [("layer", -1)]),
    "finite_width_log_m2_spread": (dict(block=BLOCK, depth=3, width=16, var_w=0.1), []),
    "branch_forward_second_moment": (dict(LBW, shortcut=2, m2_x=1.0), [("m2_x", -1.0)]),
    "branch_backward_second_moment": (dict(LDWV, shortcut=2), [("layer", -1)]),
    "branch_gradient_variance": (dict(LDWV, shortcut=2), [("layer", 0)]),
    "weight_norm_forward_growth": (dict(layer=3, blocks=4), [("blocks", 0)]),
    "weight_norm_backward_growth": (dict(layer=2, depth=5, blocks=4), [("layer", 6)]),
}
# NumPy in float64 by design: its arguments are concrete sizes, so it is not traced; and the
# leaky slope, a static number (the activation's closed form is chosen by it).
NOT_TRACEABLE = {("finite_width_log_m2_spread", None), ("he_like_alpha", "slope")}
CASES = [
    (name, arg, bad) for name, (_, bads) in THEORY.items() for arg, bad in bads or [(None, None)]
]


def _numbers(result):
    """The arrays of a result (labels left out)."""
    return [jnp.asarray(x) for x in jax.tree_util.tree_leaves(result) if not isinstance(x, str)]


def _jitted(name, kwargs, arg):
    """``name`` jitted over ``arg`` (the other arguments fixed): fn(value)."""
    fn = getattr(t, name)
    return jax.jit(lambda value: _numbers(fn(**{**kwargs, arg: value})))


def test_the_table_covers_every_public_closed_form():
    public = {
        n for n in t.__all__ if callable(getattr(t, n)) and not isinstance(getattr(t, n), type)
    }
    assert public == set(THEORY)


@pytest.mark.parametrize("name, arg, bad", CASES, ids=[f"{n}-{a}={b}" for n, a, b in CASES])
def test_theory_refuses_out_of_domain_eagerly_and_gives_nan_under_jit(name, arg, bad):
    fn, (kwargs, _) = getattr(t, name), THEORY[name]
    # In the domain: numbers, and the same jitted.
    eager = _numbers(fn(**kwargs))
    assert any(np.any(np.isfinite(x)) for x in eager), name
    if arg is None:
        return
    # Out of it: a ValueError naming the argument (not 0.5 for layer -1, nor NaN for α < 0).
    with pytest.raises(ValueError, match=rf"^{arg} must be"):
        fn(**{**kwargs, arg: bad})
    if (name, None) in NOT_TRACEABLE or (name, arg) in NOT_TRACEABLE:
        return
    jitted = _jitted(name, kwargs, arg)
    valid = kwargs.get(arg, inspect.signature(fn).parameters[arg].default)
    for got, want in zip(_numbers(jitted(valid)), eager, strict=True):
        assert_close(got, want, rtol=1e-5, err_msg=name)
    for got in _numbers(jitted(bad)):
        assert np.all(np.isnan(got)), f"{name}({arg}={bad}) under jit gave {got}"


def test_traced_checks_are_elementwise_under_vmap():
    layers = jnp.array([-1, 0, 2, 6])
    got = jax.vmap(lambda layer: t.backward_second_moment(layer, 5, 10, 0.1, "relu"))(layers)
    want = t.backward_second_moment(np.array([0, 2]), 5, 10, 0.1, "relu")
    assert np.isnan(got[0]) and np.isnan(got[3])
    assert_close(got[1:3], want, rtol=1e-6)


def test_the_rule_is_documented_once_where_it_applies():
    assert "out of their domain" in t.__doc__ and "NaN" in t.__doc__
    assert "traced" in meanfield.core.architecture.check_all.__doc__


@pytest.mark.parametrize(
    "call",
    [
        lambda a: t.chi1(a, 1.0, 1.0),
        lambda a: t.he_like_alpha(a),
        lambda a: t.plain_correlation_map(a, 1.0, 1.0, 0.5),
        lambda a: t.plain_fixed_point(a, 1.0, steps=2),
        lambda a: t.critical_alpha(a, steps=2),
        lambda a: t.backward_second_moment(1, 3, 10, 0.1, a),
        lambda a: t.bn_backward_second_moment(1, 3, 10, 0.1, a),
    ],
)
def test_an_unknown_activation_is_a_value_error_listing_the_names(call):
    for name in ("swish", "", ["relu"]):
        with pytest.raises(ValueError, match=r"activation must be one of \('identity', 'relu'"):
            call(name)
    assert np.all(np.isfinite(_numbers(call("relu"))[0]))


def test_the_activation_functions_take_every_name_and_any_function():
    with pytest.raises(ValueError, match="activation must be one of"):
        t.he_like_alpha("swish")
    for name in ACTIVATION_NAMES:
        check_activation("activation", name)
    assert float(t.chi1(jnp.tanh, 1.0, 1.0)) == pytest.approx(float(t.chi1("tanh", 1.0, 1.0)))


KEY = jax.random.key(0)
KEYS = jax.random.split(KEY, 4)
SIM = dict(key=KEY, depth=3, width=16, var_w=0.1, networks=4, batch=2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: meanfield.simulate(BLOCK, **{**SIM, "var_w": np.ones(3)}), r"^var_w .*scalar"),
        (lambda: meanfield.simulate(BLOCK, **SIM, branch_scale=np.ones(2)), r"^branch_scale"),
        (lambda: meanfield.simulate(BLOCK, **SIM, input_std=np.ones(2)), r"^input_std .*scalar"),
        (lambda: meanfield.simulate(BLOCK, **SIM, input_mean=np.ones(2)), r"^input_mean"),
        (
            lambda: meanfield.simulate(
                BLOCK, **{**SIM, "var_w": None}, init="depth_scaled", c=np.ones(2)
            ),
            r"^c must be a scalar .*meanfield.sweep",
        ),
        (lambda: meanfield.simulate(BLOCK, **{**SIM, "key": KEYS}), r"^key must be one PRNG key"),
        (lambda: inits.normal(KEYS, (4, 4), 0.1), r"^key must be one PRNG key.*shape \(4,\)"),
        (lambda: inits.he_normal(KEYS, (4, 4)), r"^key must be one PRNG key"),
        (lambda: inits.orthogonal(KEYS, (4, 4)), r"^key must be one PRNG key"),
        (lambda: inits.branch_weight(KEYS, (4, 4), inits.var_w_rule(0.1), 0), r"^key must be"),
        (lambda: inits.orthogonal(KEY, (4, 4), gain=np.ones(2)), r"^gain must be a scalar"),
        (lambda: inits.get("orthogonal", gain=np.ones(2)), r"^gain must be a scalar"),
        (lambda: inits.depth_scaled(KEY, (4, 4), depth=3, c=np.ones(2)), r"^c must be a scalar"),
        (lambda: inits.get("depth_scaled", depth=np.array([3, 4])), r"^depth must be a scalar"),
        (lambda: t.closed_forms(BLOCK, depth=3, width=np.full(3, 16.0), var_w=0.1), r"^width"),
        (lambda: t.finite_width_log_m2_spread(BLOCK, 3, 16, np.ones(2)), r"^var_w .*scalar"),
        (lambda: recursions.profile(BLOCK, depth=3, width=None, var_w=0.1), r"^width must be"),
        (lambda: recursions.profile(BLOCK, depth=3, width=16 + 1j, var_w=0.1), r"^width must"),
        (lambda: recursions.profile(BLOCK, depth=3, width=16, var_w=1j), r"^var_w must be"),
        (lambda: t.forward_second_moment(3, None, 0.1), r"^width must be .*got None"),
        (lambda: t.he_var_w(64 + 0j), r"^fan_in must be .*got \(64\+0j\)"),
        (lambda: meanfield.sweep(BLOCK, depth=3, width=None, var_w=np.ones(2)), r"^width must"),
        (lambda: meanfield.sweep(BLOCK, depth=3, width=4j, var_w=np.ones(2)), r"^width must be"),
        (lambda: meanfield.simulate(BLOCK, **{**SIM, "width": None}), r"^width must be"),
    ],
)
def test_arrays_keys_and_sizes_are_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_scalars_are_required_only_where_one_number_is_meant():
    with pytest.raises(ValueError, match="var_w must be a scalar"):
        meanfield.simulate(BLOCK, **{**SIM, "var_w": np.ones(3)})
    # profile is vmappable and broadcasts var_w; a traced scalar var_w, gain or one key per
    # vmapped call works in the initializers.
    prof = recursions.profile(BLOCK, depth=3, width=16, var_w=np.array([0.05, 0.1]))
    assert prof.m2_z.shape == (2, 4)
    draws = jax.vmap(lambda k, v: inits.normal(k, (3, 3), v))(KEYS, jnp.linspace(0.1, 1.0, 4))
    assert draws.shape == (4, 3, 3)
    w = jax.jit(lambda g: inits.orthogonal(KEY, (4, 4), gain=g))(2.0)
    assert_close(w.T @ w, 4.0 * np.eye(4), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("engine", ["recursion", "montecarlo", "sweep"])
def test_a_tree_without_a_weight_is_refused_and_a_weightless_branch_is_not(engine):
    no_weight = ml.residual(ml.LayerNorm())
    mixed = ml.serial(no_weight, ml.Dense(), ml.Activation("relu"))
    run = {
        "recursion": lambda tree: recursions.profile(tree, depth=3, width=16, var_w=0.1).m2_z,
        "montecarlo": lambda tree: meanfield.simulate(tree, **SIM, warn=False).m2_z.mean,
        "sweep": lambda tree: meanfield.sweep(tree, depth=3, width=16, var_w=np.ones(2)).recursion,
    }[engine]
    with pytest.raises(ValueError, match=r"^block must have at least one Dense layer.*LayerNorm"):
        run(no_weight)
    for init in ("he", "weight_norm"):
        with pytest.raises(ValueError, match=r"^block must have at least one Dense layer"):
            recursions.profile(no_weight, depth=3, width=16, init=init)
    if engine == "montecarlo":  # the recursion refuses LayerNorm of the raw input by name
        assert np.all(np.isfinite(run(mixed)))


def test_a_call_that_does_not_fit_is_refused_before_anything_compiles(count_compiles):
    # 64 networks of width 10^6 in one chunk: about 156 GiB; 10^7 networks of depth 1000:
    # about 1.2 TiB of per-layer values. Both used to start compiling and run out of memory.
    big = dict(key=KEY, var_w=1e-6, batch=16)
    for kwargs in (
        dict(big, depth=10, width=10**6, networks=64, chunk_size=64),
        dict(big, depth=1000, width=8, networks=10**7, batch=2, var_w=0.1),
    ):
        start = time.perf_counter()
        with pytest.raises(NetworkMemoryError) as err:
            meanfield.simulate(BLOCK, **kwargs)
        assert time.perf_counter() - start < 2.0
        message = str(err.value)
        assert "GiB" in message and "available" in message
        assert "chunk_size" in message and "fewer networks" in message
    assert count_compiles == []


@pytest.mark.parametrize(
    "networks, depth, width, batch",
    [(2, 10, 10**7, 4), (16, 10, 10**6, 4), (8, 30, 10**6, 16)],
)
def test_a_long_call_reports_progress_at_least_every_auto_seconds(networks, depth, width, batch):
    # Measured on a 2-core CPU: 0.25 s per network-layer at width 10^6, batch 4 (the first
    # case ran 346 s without a line); the per-product estimate said 0.0064 s.
    chunk = memory.auto_chunk_size(depth, width, batch, networks, 4, "weightfree")
    progress, every, seconds = runner._progress_plan(
        None, "weightfree", networks, chunk, depth, width, batch, 1, False
    )
    assert seconds >= 0.5 * networks * depth * 6.4e-8 * width * batch
    assert progress
    # a line per chunk, and inside a chunk that is long itself a line every few layers
    assert every >= 1 or seconds * chunk / networks <= runner.AUTO_SECONDS
    if width == 10**7:
        assert every == 1


def test_a_short_call_stays_quiet():
    progress, every, seconds = runner._progress_plan(
        None, "weightfree", 64, 64, 10, 256, 16, 1, False
    )
    assert not progress and every == 0 and seconds < 1


def test_a_reported_call_says_its_size_and_estimate_first(capsys, monkeypatch):
    monkeypatch.setattr(runner, "AUTO_SECONDS", 0.0)
    meanfield.simulate(BLOCK, **SIM, chunk_size=2)
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert "4 networks of width 16, depth 3, batch 2" in first
    assert "GiB each" in first and "estimated" in first
    assert "layer 3/3" in err and "4/4 networks" in err


def test_a_residual_scale_must_be_one_number():
    from meanfield import layers as ml

    with pytest.raises(ValueError, match=r"^scale must be a scalar .*branch_scale arrays"):
        ml.residual(ml.Dense(), scale=np.array([1.0, 2.0]))
    assert ml.residual(ml.Dense(), scale=np.float64(0.5)).scale == 0.5
