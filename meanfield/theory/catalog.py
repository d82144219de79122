"""The catalogue of closed forms: which formula applies to which preset block, with its
statistic, label, source (paper or corrected) and kind (exact, lower bound, approximation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

from meanfield.core import architecture as arch
from meanfield.theory.backward import (
    backward_second_moment,
    identity_gradient_variance,
    identity_gradient_variance_paper,
    plain_backward_second_moment,
    relu_gradient_variance_lower_bound,
    relu_gradient_variance_lower_bound_paper,
)
from meanfield.theory.batchnorm import (
    bn_backward_second_moment,
    bn_gradient_growth_paper,
    bn_gradient_variance,
    bn_gradient_variance_paper,
    bn_second_moment,
    bn_sigma2_paper,
    bn_unit_variance,
    bn_variance_paper,
    plain_bn_backward_second_moment,
)
from meanfield.theory.branches import (
    branch_backward_second_moment,
    branch_forward_second_moment,
    branch_gradient_variance,
)
from meanfield.theory.common import Array
from meanfield.theory.forward import (
    forward_second_moment,
    plain_forward_second_moment,
    plain_relu_forward_second_moment,
    relu_second_moment_lower_bound,
    relu_variance_lower_bound,
    relu_variance_lower_bound_paper,
)


class At(NamedTuple):
    """What a catalogue entry evaluates: layers l (0..max_depth, capped at L), lp (the layers
    with a weight, 1..max_depth), L, n, Var[w], the block's activation f, its norm, k, the
    activation after the last weight, and f's Gaussian moments."""

    l: Array
    lp: Array
    L: Array
    n: Array
    v: Array
    act: str
    norm: str
    k: int
    last: str
    fm: Any


def pad(values: Array) -> Array:
    """Gradient curves: NaN at l = 0."""
    return jnp.concatenate([jnp.full((1,), jnp.nan, values.dtype), values])


class CatalogEntry(NamedTuple):
    """One closed form of the catalogue: the statistic it gives, its label, source and kind,
    which preset blocks it applies to, and how it is evaluated."""

    statistic: str
    label: str
    source: str  # "paper" or "corrected"
    kind: str  # "exact", "lower_bound" or "approximation"
    applies: Callable[[arch.Block], bool]
    evaluate: Callable[[At], Array]


def paper_block(b: arch.Block) -> bool:
    """Whether ``b`` is the paper's block: one weight layer, f after it."""
    return b.shortcut == 1 and b.final_activation


def when(residual: bool, norms: tuple, acts: tuple, k1: bool = True):
    """The predicate "residual (or plain), norm in ``norms``, activation in ``acts``, and the
    paper's block if ``k1`` (else not)" of a catalogue entry."""

    def applies(b: arch.Block) -> bool:
        return (
            b.residual == residual
            and b.norm in norms
            and b.activation in acts
            and paper_block(b) == k1
        )

    return applies


def plain_forward(act: str):
    """The plain network's forward second moment for activation ``act`` (identity or ReLU)."""
    return plain_forward_second_moment if act == "identity" else plain_relu_forward_second_moment


BN_NORMS = ("bn_post", "bn_pre")
ALL_ACTIVATIONS = arch.ACTIVATIONS
_E = CatalogEntry

# Which forms apply to which block, in the order they are listed; "every form is tested" is a
# loop over this table (tests/test_theory.py).
CATALOG: tuple[CatalogEntry, ...] = (
    # Branches of k weight layers: exact where the branch is linear in its last weight without
    # normalization, and the BN forward (the last weight sees a BN output whatever precedes
    # it, so the k = 1 form holds with the last layer's activation).
    _E(
        "m2_z",
        "(1+α^{k} e_2^{km1})^l",
        "corrected",
        "exact",
        lambda b: (
            not paper_block(b)
            and b.residual
            and b.norm == "none"
            and b.activations()[-1] == "identity"
        ),
        lambda a: branch_forward_second_moment(a.l, a.n, a.v, a.k, a.act),
    ),
    _E(
        "m2_dz",
        "(1+α^{k} a^{km1})^(L-l)",
        "corrected",
        "exact",
        lambda b: (
            not paper_block(b)
            and b.residual
            and b.norm == "none"
            and b.activations()[-1] == "identity"
        ),
        lambda a: branch_backward_second_moment(a.l, a.L, a.n, a.v, a.k, a.act),
    ),
    _E(
        "var_dw",
        "(αa)^{km1}(1+α^{k} a^{km1})^(L-1)",
        "corrected",
        "exact",
        lambda b: (
            not paper_block(b)
            and b.residual
            and b.norm == "none"
            and b.activations()[-1] == "identity"
        ),
        lambda a: pad(branch_gradient_variance(a.lp, a.L, a.n, a.v, a.k, a.act)),
    ),
    _E(
        "m2_z",
        "1+lα(b_f+l e_1²) (post) / 1+lα e_2 (pre)",
        "corrected",
        "exact",
        when(True, BN_NORMS, ALL_ACTIVATIONS, k1=False),
        lambda a: bn_second_moment(a.l, a.n, a.v, a.last, a.norm),
    ),
    _E(
        "unitvar_z",
        "σ² = 1 + lα b_f",
        "corrected",
        "exact",
        when(True, BN_NORMS, ALL_ACTIVATIONS, k1=False),
        lambda a: bn_unit_variance(a.l, a.n, a.v, a.last if a.norm == "bn_post" else a.act),
    ),
    # The paper's block (k = 1), residual, no BN.
    _E(
        "m2_z",
        "(1+α)^l, eq. (7)",
        "paper",
        "exact",
        when(True, ("none",), ("identity",)),
        lambda a: forward_second_moment(a.l, a.n, a.v),
    ),
    _E(
        "m2_dz",
        "(1+α)^(L-l), eq. (25)",
        "paper",
        "exact",
        when(True, ("none",), ("identity",)),
        lambda a: backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
    _E(
        "var_dw",
        "(1+α/2)^(L-1), eq. (27)",
        "paper",
        "approximation",
        when(True, ("none",), ("identity",)),
        lambda a: pad(
            jnp.broadcast_to(identity_gradient_variance_paper(a.L, a.n, a.v), a.lp.shape)
        ),
    ),
    _E(
        "var_dw",
        "(1+α)^(L-1)",
        "corrected",
        "exact",
        when(True, ("none",), ("identity",)),
        lambda a: pad(identity_gradient_variance(a.lp, a.L, a.n, a.v)),
    ),
    _E(
        "var_z",
        "(1+α/4)^l bound, eq. (14)",
        "paper",
        "lower_bound",
        when(True, ("none",), ("relu",)),
        lambda a: relu_variance_lower_bound_paper(a.l, a.n, a.v),
    ),
    _E(
        "var_z",
        "(1+α(π-1)/2π)^l bound",
        "corrected",
        "lower_bound",
        when(True, ("none",), ("relu",)),
        lambda a: relu_variance_lower_bound(a.l, a.n, a.v),
    ),
    _E(
        "m2_z",
        "(1+α/2)^l bound",
        "corrected",
        "lower_bound",
        when(True, ("none",), ("relu",)),
        lambda a: relu_second_moment_lower_bound(a.l, a.n, a.v),
    ),
    _E(
        "m2_dz",
        "(1+α/2)^(L-l), eq. (20)",
        "paper",
        "exact",
        when(True, ("none",), ("relu",)),
        lambda a: backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
    _E(
        "var_dw",
        "¼(1+α/4)^(L-1) bound, eq. (22)",
        "paper",
        "lower_bound",
        when(True, ("none",), ("relu",)),
        lambda a: pad(
            jnp.broadcast_to(relu_gradient_variance_lower_bound_paper(a.L, a.n, a.v), a.lp.shape)
        ),
    ),
    _E(
        "var_dw",
        "½(1+α/2)^(L-1) bound",
        "corrected",
        "lower_bound",
        when(True, ("none",), ("relu",)),
        lambda a: pad(
            jnp.broadcast_to(relu_gradient_variance_lower_bound(a.L, a.n, a.v), a.lp.shape)
        ),
    ),
    # The paper's block, residual, with BN (eq. 29-54).
    _E(
        "m2_z",
        "1+lα(b_f+l e_1²) (post) / 1+lα e_2 (pre)",
        "corrected",
        "exact",
        when(True, BN_NORMS, ALL_ACTIVATIONS),
        lambda a: bn_second_moment(a.l, a.n, a.v, a.act, a.norm),
    ),
    _E(
        "var_z",
        "a lα + Var x, eq. (31)/(47)",
        "paper",
        "exact",
        lambda b: (
            when(True, BN_NORMS, ALL_ACTIVATIONS)(b)
            and (b.activation == "identity" or b.norm == "bn_pre")
        ),
        lambda a: bn_variance_paper(a.l, a.n, a.v, a.act),
    ),
    _E(
        "unitvar_z",
        "σ² ≈ a lα, eq. (40)/(51)",
        "paper",
        "approximation",
        when(True, BN_NORMS, ALL_ACTIVATIONS),
        lambda a: bn_sigma2_paper(a.l, a.n, a.v, a.act),
    ),
    _E(
        "unitvar_z",
        "σ² = 1 + lα b_f",
        "corrected",
        "exact",
        when(True, BN_NORMS, ALL_ACTIVATIONS),
        lambda a: bn_unit_variance(a.l, a.n, a.v, a.act),
    ),
    _E(
        "m2_dz",
        "L/l, eq. (41)/(52)",
        "paper",
        "approximation",
        when(True, BN_NORMS, ALL_ACTIVATIONS),
        lambda a: pad(bn_gradient_growth_paper(a.lp, a.L)),
    ),
    _E(
        "m2_dz",
        "Γ-ratio",
        "corrected",
        "exact",
        when(True, BN_NORMS, ALL_ACTIVATIONS),
        lambda a: bn_backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
    _E(
        "var_dw",
        "a L/l, eq. (42)/(54)",
        "paper",
        "approximation",
        when(True, BN_NORMS, ALL_ACTIVATIONS),
        lambda a: pad(bn_gradient_variance_paper(a.lp, a.L, a.act)),
    ),
    _E(
        "var_dw",
        "a p_l (post) / b_f p_l + e_1² (pre)",
        "corrected",
        "exact",
        when(True, BN_NORMS, ALL_ACTIVATIONS),
        lambda a: pad(bn_gradient_variance(a.lp, a.L, a.n, a.v, a.act, a.norm)),
    ),
    # Plain networks (the paper's contrast), without and with BN.
    _E(
        "m2_z",
        "(e_2 α)^l",
        "corrected",
        "exact",
        when(False, ("none",), ALL_ACTIVATIONS),
        lambda a: plain_forward(a.act)(a.l, a.n, a.v),
    ),
    _E(
        "m2_dz",
        "(a α)^(L-l)",
        "corrected",
        "exact",
        when(False, ("none",), ALL_ACTIVATIONS),
        lambda a: plain_backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
    _E(
        "var_dw",
        "a (aα)^(L-l) (e_2 α)^(l-1)",
        "corrected",
        "exact",
        when(False, ("none",), ALL_ACTIVATIONS),
        lambda a: pad(
            a.fm.a
            * plain_backward_second_moment(a.lp, a.L, a.n, a.v, a.act)
            * plain_forward(a.act)(a.lp - 1, a.n, a.v)
        ),
    ),
    _E(
        "m2_dz",
        "κ^(L-l)",
        "corrected",
        "exact",
        when(False, BN_NORMS, ALL_ACTIVATIONS),
        lambda a: plain_bn_backward_second_moment(a.l, a.L, a.n, a.v, a.act),
    ),
)
