"""Initialization schemes for weights, as pure functions of (key, shape, ...).

Every sampler has the Flax initializer signature ``init(key, shape, dtype=jnp.float32)`` (with
extra keyword arguments where a scheme needs them), so :func:`get` can hand one to
``flax.linen.Dense(kernel_init=...)`` or ``flax.linen.Conv(kernel_init=...)``. The variance of
one weight entry that each scheme gives is :func:`var_w`:

================  ===========================  ==============================================
scheme            per-entry variance           reference
================  ===========================  ==============================================
``he``            2 / fan_in                   He et al. (2015), "Delving deep into rectifiers"
``glorot``        2 / (fan_in + fan_out)       Glorot & Bengio (2010)
``depth_scaled``  c / (fan_in · depth)         Taki (2017), eq. (10) and (28)
``orthogonal``    gain² / n  (Haar, n x n)     Saxe et al. (2014); Mezzadri (2007) for Haar QR
``zero``          0                            Li et al. (2016), "Demystifying ResNet"
================  ===========================  ==============================================

and :func:`normal` draws i.i.d. N(0, var_w) for any given ``var_w``.

The companion papers' rules for residual branches are functions of their own, since each
needs more than one number: :func:`fixup` (Zhang et al. 2019), :func:`branch_scale`
(SkipInit, ReZero), :func:`risotto_type_c` (an exact looks-linear orthogonal block) and
:func:`weight_norm` with :func:`weight_norm_gamma` (Arpit et al. 2019).

**Branch rules.** The simulator and the trainer take any of :data:`BRANCH_SCHEMES` (the five
above and ``fixup``, ``skipinit``, ``rezero``, ``weight_norm``) through :func:`branch_init`,
which gives, for a branch of k weight layers, each layer's per-entry variance, how it is
drawn (Gaussian, Haar-orthogonal, or weight-normalized columns) and the scalar β that
multiplies the branch output; :func:`branch_weight` draws one of the k weights:

===============  ===========================================  =====  ====================
scheme           var_w of W_1 .. W_k (n = fan-in)              β      law
===============  ===========================================  =====  ====================
he, glorot, ...  the scheme's, every layer                     1      Gaussian (orthogonal)
``fixup``        2/n · L^(-1/(k-1)) for i < k; 0 for W_k       1      Gaussian
``skipinit``     2/n (He)                                      α = 0  Gaussian
``rezero``       2/n (Glorot with gain √2, their notebook)     0      Gaussian
``weight_norm``  γ_i/n, γ = 2 (ReLU after W_i, i < k), 1       1      columns of norm² γ_i
                 (no ReLU), 1/L for W_k (one stage of L)
===============  ===========================================  =====  ====================

With k = 1 Fixup's only layer is the last, so every branch starts at zero.

Shape convention (the same as Flax): a weight of shape ``(..., fan_in_last, fan_out)`` maps
inputs on the second-to-last axis to outputs on the last, so ``fan_in = prod(shape[:-1])`` and
``fan_out = shape[-1]`` (:func:`fan_in_out`). A dense n x n weight has fan-in n; a convolution
kernel ``(k, k, C_in, C_out)`` has fan-in k·k·C_in (the paper's n = 8·8·16). The residual-branch
weights of the mean-field engine are square, where the convention does not matter.

Keys are explicit typed keys from ``jax.random.key``; the shape is static. Every function works
under ``jax.jit`` (with ``shape`` static) and ``jax.vmap`` over keys.

Example:
    >>> import jax
    >>> from meanfield import inits
    >>> inits.he_normal(jax.random.key(0), (8, 8, 16, 16)).shape
    (8, 8, 16, 16)
    >>> float(inits.var_w("depth_scaled", fan_in=8 * 8 * 16, depth=64))  # 1 / (1024 · 64)
    1.52587890625e-05
"""

from meanfield.inits.branch import (
    BRANCH_SCHEMES,
    BranchInit,
    branch_init,
    branch_weight,
    check_plain,
    var_w_rule,
)
from meanfield.inits.companions import (
    RISOTTO_BLOCK,
    branch_scale,
    fixup,
    risotto_type_c,
    weight_norm,
    weight_norm_gamma,
)
from meanfield.inits.initializers import LAWS as LAWS
from meanfield.inits.initializers import (
    SCHEMES,
    depth_scaled,
    fan_in_out,
    get,
    glorot_normal,
    he_normal,
    normal,
    orthogonal,
    var_w,
    zero,
)
from meanfield.inits.initializers import Array as Array
from meanfield.inits.initializers import Initializer as Initializer

__all__ = [
    "SCHEMES",
    "fan_in_out",
    "normal",
    "he_normal",
    "glorot_normal",
    "depth_scaled",
    "orthogonal",
    "zero",
    "var_w",
    "get",
    "fixup",
    "branch_scale",
    "risotto_type_c",
    "RISOTTO_BLOCK",
    "weight_norm",
    "weight_norm_gamma",
    "BRANCH_SCHEMES",
    "BranchInit",
    "branch_init",
    "branch_weight",
    "check_plain",
    "var_w_rule",
]
