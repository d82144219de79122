"""Closed forms for signal propagation in the toy ResNets of Taki (2017), and their corrections.

One pure function per formula, named for what it returns. Every function takes scalars or
arrays (NumPy broadcasting), is written in ``jax.numpy`` and can be jitted and vmapped. The
variance of one weight entry is ``var_w``, the fan-in ``width`` (n), and α = n·var_w; ``layer``
is l (0 = input), ``depth`` is L. Inputs have zero mean and unit variance unless an argument
says otherwise (``m2_x``, ``var_x``: finite and >= 0), and the output gradient dE/dz^L has
zero mean and unit variance.

Arguments out of their domain (a negative layer or var_w, a layer past the depth, a NaN α, a
correlation outside [-1, 1], an unknown activation) never give a number: a concrete value
raises ValueError naming the argument, the value and what is allowed; a traced one (under
``jax.jit``, ``vmap`` or ``grad``), which cannot be inspected, makes the result NaN wherever
it is out of its domain (:func:`meanfield.theory.common.domain`).

Where the paper is exact, one function gives its formula. Where it is approximate or wrong, a
``*_paper`` function gives the paper's formula and a sibling gives the correct one; each
docstring says which is which (see also docs/theory.md).

Any activation (plain network, no normalization; :mod:`meanfield.theory.activations`)
    :func:`he_like_alpha` (χ₁ = 1 at unit variance), :func:`critical_alpha` (q kept), :func:`chi1`,
    :func:`plain_correlation_map`, :func:`plain_fixed_point` (q*, c*): exact, from the
    Gaussian expectations.
Initialization
    :func:`he_var_w`, :func:`glorot_var_w`, :func:`depth_scaled_var_w` (eq. 10/28),
    :func:`depth_scaled_growth` (eq. 9, exact), :func:`depth_scaled_growth_limit` (e^c).
Forward, no normalization
    :func:`forward_second_moment` (eq. 7-8, identity, exact at any width),
    :func:`plain_forward_second_moment` ((nVar[w])^L), :func:`plain_relu_forward_second_moment`,
    :func:`relu_variance_lower_bound_paper` (eq. 13-14), :func:`relu_variance_lower_bound`,
    :func:`relu_second_moment_lower_bound`, :func:`relu_growth_rate` (the exact asymptotic rate),
    :func:`relu_depth_scaled_log_second_moment` (what c/(nL) really gives for ReLU).
Backward, no normalization
    :func:`backward_second_moment` (eq. 20, 25), :func:`relu_delta_variance` (eq. 21),
    :func:`identity_delta_variance` (eq. 26), :func:`plain_backward_second_moment`,
    :func:`relu_gradient_variance_lower_bound_paper` (eq. 22),
    :func:`relu_gradient_variance_lower_bound`, :func:`identity_gradient_variance_paper`
    (eq. 27, wrong), :func:`identity_gradient_variance` (corrected).
Batch normalization (population limit, both placements)
    :func:`bn_variance_paper` (eq. 31, 47), :func:`bn_sigma2_paper` (eq. 40),
    :func:`bn_unit_variance`, :func:`bn_mean`, :func:`bn_second_moment`,
    :func:`bn_gradient_growth_paper` (L/l, eq. 41-42, 52), :func:`bn_gradient_variance_paper`
    (eq. 54), :func:`bn_backward_second_moment` (exact Γ-ratio), :func:`bn_gradient_variance`,
    :func:`bn_relu_gradient_growth_asymptotic` ((L/l)^{π/(π-1)}),
    :func:`plain_bn_backward_second_moment`, and at finite batch
    :func:`identity_bn_finite_batch_gradient_variance`.
Finite width, spread over networks (one input per network)
    :func:`finite_width_m2_sd` (the standard deviation of E[(z^l)^2] over networks) and
    :func:`finite_width_log_m2_spread` (mean and standard deviation of its log; NumPy), exact
    where a layer multiplies the squared norm by an independent factor: identity residual,
    identity plain and ReLU plain blocks without normalization.
Branches of k weight layers and the companion inits
    :func:`branch_forward_second_moment` ((1 + α^k e_2^{k-1})^l, exact at any width),
    :func:`branch_backward_second_moment`, :func:`branch_gradient_variance` (Li et al. 2016's
    shortcut depth), :func:`weight_norm_forward_growth` and
    :func:`weight_norm_backward_growth` ((1 + 1/B)^l, Arpit et al. 2019).
All of one architecture
    :func:`closed_forms` lists every formula above that applies to a block, labelled exact,
    lower bound or approximation, for comparison with the recursions and Monte-Carlo.

Example:
    >>> import meanfield.theory as t
    >>> float(t.forward_second_moment(10, width=100, var_w=0.01))  # (1 + 1)^10
    1024.0
"""

from __future__ import annotations

# The modules and types theory.py imported, kept as attributes (see the end of this file).
from meanfield.theory.activations import (
    chi1,
    critical_alpha,
    he_like_alpha,
    plain_correlation_map,
    plain_fixed_point,
)
from meanfield.theory.backward import (
    backward_second_moment,
    identity_delta_variance,
    identity_gradient_variance,
    identity_gradient_variance_paper,
    plain_backward_second_moment,
    relu_delta_variance,
    relu_gradient_variance_lower_bound,
    relu_gradient_variance_lower_bound_paper,
)
from meanfield.theory.batchnorm import (
    bn_backward_second_moment,
    bn_gradient_growth_paper,
    bn_gradient_variance,
    bn_gradient_variance_paper,
    bn_mean,
    bn_relu_gradient_growth_asymptotic,
    bn_second_moment,
    bn_sigma2_paper,
    bn_unit_variance,
    bn_variance_paper,
    identity_bn_finite_batch_gradient_variance,
    plain_bn_backward_second_moment,
)
from meanfield.theory.branches import (
    branch_backward_second_moment as branch_backward_second_moment,
)
from meanfield.theory.branches import (
    branch_forward_second_moment as branch_forward_second_moment,
)
from meanfield.theory.branches import (
    branch_gradient_variance as branch_gradient_variance,
)
from meanfield.theory.branches import (
    weight_norm_backward_growth as weight_norm_backward_growth,
)
from meanfield.theory.branches import (
    weight_norm_forward_growth as weight_norm_forward_growth,
)
from meanfield.theory.catalog import CATALOG, CatalogEntry
from meanfield.theory.common import Array as Array
from meanfield.theory.evaluate import ClosedForm, closed_forms
from meanfield.theory.finite_width import (
    LogSpread,
    finite_width_log_m2_spread,
    finite_width_m2_sd,
)
from meanfield.theory.forward import (
    forward_second_moment,
    plain_forward_second_moment,
    plain_relu_forward_second_moment,
    relu_depth_scaled_log_second_moment,
    relu_growth_rate,
    relu_second_moment_lower_bound,
    relu_variance_lower_bound,
    relu_variance_lower_bound_paper,
)
from meanfield.theory.variances import (
    depth_scaled_growth,
    depth_scaled_growth_limit,
    depth_scaled_var_w,
    glorot_var_w,
    he_var_w,
)

__all__ = [
    "chi1",
    "critical_alpha",
    "he_like_alpha",
    "plain_correlation_map",
    "plain_fixed_point",
    "ClosedForm",
    "CATALOG",
    "CatalogEntry",
    "closed_forms",
    "he_var_w",
    "glorot_var_w",
    "depth_scaled_var_w",
    "depth_scaled_growth",
    "depth_scaled_growth_limit",
    "forward_second_moment",
    "plain_forward_second_moment",
    "plain_relu_forward_second_moment",
    "relu_variance_lower_bound_paper",
    "relu_variance_lower_bound",
    "relu_second_moment_lower_bound",
    "relu_growth_rate",
    "relu_depth_scaled_log_second_moment",
    "backward_second_moment",
    "relu_delta_variance",
    "identity_delta_variance",
    "plain_backward_second_moment",
    "relu_gradient_variance_lower_bound_paper",
    "relu_gradient_variance_lower_bound",
    "identity_gradient_variance_paper",
    "identity_gradient_variance",
    "bn_variance_paper",
    "bn_sigma2_paper",
    "bn_unit_variance",
    "bn_mean",
    "bn_second_moment",
    "bn_gradient_growth_paper",
    "bn_gradient_variance_paper",
    "bn_backward_second_moment",
    "bn_gradient_variance",
    "bn_relu_gradient_growth_asymptotic",
    "plain_bn_backward_second_moment",
    "identity_bn_finite_batch_gradient_variance",
    "LogSpread",
    "finite_width_m2_sd",
    "finite_width_log_m2_spread",
    "branch_forward_second_moment",
    "branch_backward_second_moment",
    "branch_gradient_variance",
    "weight_norm_forward_growth",
    "weight_norm_backward_growth",
]
