import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meanfield.core import architecture as arch
from meanfield.core.architecture import ACTIVATION_NAMES, Block


def test_twelve_distinct_blocks_round_trip_through_their_names():
    blocks = arch.all_blocks()
    assert len(set(blocks)) == 12
    assert {b.name for b in blocks} == {
        f"{a}-{n}-{r}"
        for a in ("identity", "relu")
        for n in ("none", "bn_post", "bn_pre")
        for r in ("residual", "plain")
    }
    for b in blocks:
        assert Block.from_name(b.name) == b


def test_block_is_frozen_and_hashable():
    b = Block(activation="relu", norm="bn_post", residual=True)
    with pytest.raises(AttributeError):
        b.norm = "none"
    assert {b: 1}[Block("relu", "bn_post", True)] == 1


@pytest.mark.parametrize(
    "kwargs, field, allowed",
    [
        (dict(activation="swish"), "activation", "'identity', 'relu', 'leaky_relu'"),
        (dict(norm="layernorm"), "norm", "'none', 'bn_post', 'bn_pre'"),
        (dict(residual="yes"), "residual", "True or False"),
        (dict(shortcut=4), "shortcut", "(1, 2, 3)"),
        (dict(shortcut=True), "shortcut", "(1, 2, 3)"),
        (dict(final_activation="no"), "final_activation", "True or False"),
    ],
)
def test_bad_block_field_names_field_value_and_allowed(kwargs, field, allowed):
    with pytest.raises(ValueError) as err:
        Block(**kwargs)
    msg = str(err.value)
    assert f"Block.{field}" in msg
    assert repr(next(iter(kwargs.values()))) in msg
    assert allowed in msg


@given(st.text(max_size=12).filter(lambda s: s not in ACTIVATION_NAMES))
def test_any_other_activation_is_rejected(name):
    with pytest.raises(ValueError, match="Block.activation"):
        Block(activation=name)


@given(
    st.sampled_from(["identity", "relu"]),
    st.sampled_from(["none", "bn_post", "bn_pre"]),
    st.booleans(),
)
def test_every_valid_combination_constructs(activation, norm, residual):
    b = Block(activation=activation, norm=norm, residual=residual)
    assert (b.activation, b.norm, b.residual, b.shortcut) == (activation, norm, residual, 1)


def test_shortcut_and_final_activation_round_trip_through_names():
    for k in (1, 2, 3):
        for norm in ("none", "bn_post", "bn_pre"):
            for final in (True, False) if norm != "bn_pre" else (True,):
                b = Block("relu", norm, True, shortcut=k, final_activation=final)
                assert Block.from_name(b.name) == b
    assert Block("relu", "none", True, 2, False).name == "relu-none-residual-k2-linear"
    assert Block("relu", "none", True, 2, False).activations() == ("relu", "identity")
    assert Block("relu", "bn_pre", True, 3).activations() == ("relu",) * 3


def test_bn_pre_has_no_final_activation_to_drop():
    with pytest.raises(ValueError, match="final_activation must be True for norm='bn_pre'"):
        Block("relu", "bn_pre", True, 2, final_activation=False)


@pytest.mark.parametrize(
    "name", ["relu-bn_post", "relu-bn-residual", "relu-none-deep", "", "relu-none-residual-k9"]
)
def test_bad_block_name(name):
    with pytest.raises(ValueError):
        Block.from_name(name)


@pytest.mark.parametrize(
    "check, name, bad",
    [
        (arch.check_width, "width", [0, 0.5, -3, float("nan"), float("inf"), True, "8"]),
        (arch.check_depth, "depth", [0, -1, 1.5, float("nan"), float("inf"), True]),
        (arch.check_var_w, "var_w", [0, -1e-3, float("nan"), float("inf"), -float("inf")]),
    ],
)
def test_bad_sizes_raise_naming_the_argument_and_value(check, name, bad):
    for value in bad:
        with pytest.raises(ValueError) as err:
            check(value)
        assert str(err.value).startswith(f"{name} must be")
        assert repr(value)[:3] in str(err.value) or name == "width"


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_var_w_accepts_exactly_the_positive_finite_floats(x):
    if np.isfinite(x) and x > 0:
        arch.check_var_w(x)
    else:
        with pytest.raises(ValueError, match="var_w must be a finite number > 0"):
            arch.check_var_w(x)


def test_array_checks_report_the_offending_entry():
    with pytest.raises(ValueError, match="got -2"):
        arch.check_depth(np.array([1, 5, -2]))
    arch.check_depth(np.array([1, 5, 10]))
    arch.check_width(np.array([1.0, 256.0]))


def test_static_int():
    assert arch.static_int("depth", 7) == 7
    assert arch.static_int("depth", 7.0) == 7
    for bad in (0, 2.5, "3", True, None):
        with pytest.raises(ValueError, match="depth must be a Python integer >= 1"):
            arch.static_int("depth", bad)


@pytest.mark.parametrize("bad", [2.0, 1.0, 3.0, np.float64(2.0), False, np.bool_(True), "2"])
def test_shortcut_must_be_an_integer_not_a_float_or_bool(bad):
    # 2.0 == 2 would pass a plain membership test, then name the block '-k2.0' (which
    # from_name cannot read back) and break the engines' loops over range(k).
    with pytest.raises(ValueError) as err:
        Block("relu", "none", True, shortcut=bad)
    msg = str(err.value)
    assert "Block.shortcut" in msg and repr(bad) in msg
    assert "integer in (1, 2, 3)" in msg


def test_integer_shortcut_is_stored_as_a_python_int_and_round_trips():
    for k in (1, 2, 3, np.int64(2)):
        b = Block("relu", "bn_pre", True, shortcut=k)
        assert type(b.shortcut) is int and b.shortcut == int(k)
        assert Block.from_name(b.name) == b
    assert Block(shortcut=np.int32(2)) == Block(shortcut=2)
    assert Block(shortcut=np.int32(2)).name == "relu-none-residual-k2"
