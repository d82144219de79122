"""The Gaussian expectations of every named activation against scipy's adaptive quadrature over
q from 1e-4 to 1e4 and correlations from -1 to 1 (float64), exact decorrelation of odd
activations, user activations refused unless elementwise, and NaN or inf never turned into a
finite number.

The reference is scipy.integrate.quad with plain-Python integrands, independent of the
implementation (its polar coordinates, maps and autodiff): a pair's expectation is nested
(u = √q x, u' = √q (ρx + √(1 - ρ²) y)), each integral split at f's kink or inflection and
around it on the scale where f changes there, the inner one 100 times tighter than the outer.
One-dimensional references (every field at ρ = -1, 0 and 1) are computed here; the pair's
fields at the other correlations take seconds to minutes each, so they are stored in
``_PAIR_TABLE`` below, and ``python tests/test_activation_accuracy.py`` computes them again
(``test_the_table_is_what_scipy_gives`` recomputes a few of them each run).
"""

import math
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import meanfield
from meanfield import layers as ml
from meanfield import recursions
from meanfield.core import activations as acts

TOLERANCE = 1e-9  # in every log (the relative error of the value) and in t, relative
Q = (1e-4, 1e-2, 1.0, 1e2, 1e4)
RHO_PAIR = (-0.999999, -0.5, 0.5, 0.999999)  # by nested quadrature (the table)
RHO_LINE = (-1.0, 0.0, 1.0)  # where the pair's fields are one-dimensional integrals
FIELDS = ("log_e2", "t", "log_var", "log_gap_ratio", "log_a", "log_d", "log_a_minus_d")
PAIR_FIELDS = ("log_gap_ratio", "log_d", "log_a_minus_d")
ODD = ("identity", "tanh", "erf", "sin")
SLOPE = 0.01  # leaky_relu's default

# ---------------------------------------------------------------------------------------------
# The reference: f and f' in plain Python, and scipy's quad.

_C = math.sqrt(2.0 / math.pi)


def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _Phi(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _phi(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + math.tanh(_C * (x + 0.044715 * x**3)))


def _gelu_tanh_slope(x):
    th = math.tanh(_C * (x + 0.044715 * x**3))
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * _C * (1.0 + 3 * 0.044715 * x * x)


FUNCTIONS = {
    "identity": (lambda x: x, lambda x: 1.0),
    "relu": (lambda x: max(x, 0.0), lambda x: float(x > 0)),
    "leaky_relu": (lambda x: x if x > 0 else SLOPE * x, lambda x: 1.0 if x > 0 else SLOPE),
    "abs": (abs, lambda x: math.copysign(1.0, x)),
    "tanh": (math.tanh, lambda x: 1.0 - math.tanh(x) ** 2),
    "erf": (math.erf, lambda x: 2.0 / math.sqrt(math.pi) * math.exp(-x * x)),
    "gelu": (lambda x: x * _Phi(x), lambda x: _Phi(x) + x * _phi(x)),
    "gelu_tanh": (_gelu_tanh, _gelu_tanh_slope),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1.0 + x * _sigmoid(-x))),
    "softplus": (lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x))), _sigmoid),
    "elu": (lambda x: x if x > 0 else math.expm1(x), lambda x: 1.0 if x > 0 else math.exp(x)),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * _sigmoid(-x)),
    "sin": (math.sin, math.cos),
}
NAMES = tuple(FUNCTIONS)
_X = 16.0  # |x| beyond which the Gaussian weight is below 1e-55


def _quad(h, a, b, rel, atol):
    if b <= a:
        return 0.0
    with warnings.catch_warnings():  # roundoff warnings: the tolerances are met to rounding
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return integrate.quad(h, a, b, limit=1000, epsrel=rel, epsabs=atol)[0]


def _pieces(h, center, scales, rel=1e-13, atol=0.0):
    """∫ h over [-16, 16], split at ``center`` and at center ± (0.1, 1, 10, 100)·scale for
    each of ``scales`` (f's kink or inflection and the scales on which h changes there) and at
    0, ±3 (the Gaussian): adaptive quadrature never sees a feature far narrower than its
    interval."""
    points = {0.0, -3.0, 3.0, -_X, _X}
    for k in (-100, -10, -1, -0.1, 0, 0.1, 1, 10, 100):
        points.update(min(max(center + k * scale, -_X), _X) for scale in scales)
    points = sorted(points)
    return sum(_quad(h, a, b, rel, atol) for a, b in zip(points[:-1], points[1:], strict=True))


def _line(g, s):
    """E g(u), u = s·x ~ N(0, s²)."""
    return _pieces(lambda x: g(s * x) * _phi(x), 0.0, [1.0 / s])


def _nested(h, s, rho, rel, atol):
    """E h(u, u') for u = s x, u' = s(ρx + √(1 - ρ²) y); the inner integral 100 times
    tighter than the outer, in absolute terms as far as the outer weight φ(x) lets through.
    The inner integral changes with x where its kink, at y = -ρx/r, crosses the bulk of the
    Gaussian: on the scale r in x, the outer integral's second scale."""
    r = math.sqrt(1.0 - rho * rho)

    def inner(x):
        h_x = lambda y: h(s * x, s * (rho * x + r * y)) * _phi(y)  # noqa: E731
        tight = 0.01 * atol / max(_phi(x), 1e-300)
        return _pieces(h_x, -rho * x / r, [1.0 / (s * r)], 0.01 * rel, tight)

    return _pieces(lambda x: inner(x) * _phi(x), 0.0, [1.0 / s, r], rel, atol)


def _pair(h, s, rho):
    """:func:`_nested` to 1e-10 relative (or 1e-12 of its size, from a rough first pass, which
    stops at 1e-25 absolute: rounding noise of f where it saturates is no size)."""
    size = abs(_nested(h, s, rho, 1e-5, 1e-25))
    return _nested(h, s, rho, 1e-10, 1e-12 * size)


def scipy_line(name, q):
    """Every field at ρ = -1, 0, 1 (one-dimensional integrals), keyed by ρ, and at ``q``."""
    f, df = FUNCTIONS[name]
    s = math.sqrt(q)
    m1 = _line(f, s)
    e2, var = _line(lambda u: f(u) ** 2, s), _line(lambda u: (f(u) - m1) ** 2, s)
    a, slope = _line(lambda u: df(u) ** 2, s), _line(df, s)
    one = dict(log_e2=math.log(e2), t=m1 / math.sqrt(e2), log_var=math.log(var), log_a=_log(a))
    odd = _line(lambda u: 0.5 * (f(u) - f(-u)) ** 2, s)  # the gap at ρ = -1
    mirror = _line(lambda u: df(u) * df(-u), s)
    odd_slope = _line(lambda u: 0.5 * (df(u) - df(-u)) ** 2, s)
    var_slope = _line(lambda u: (df(u) - slope) ** 2, s)
    fields = {
        -1.0: (_log(odd / (2 * q)), _log(mirror), _log(odd_slope)),
        0.0: (_log(var / q), _log(slope * slope), _log(var_slope)),
        1.0: (_log(a), _log(a), -math.inf),
    }
    return {rho: dict(one, **dict(zip(PAIR_FIELDS, v, strict=True))) for rho, v in fields.items()}


def scipy_pair(name, q, rho):
    """The pair's fields at correlation ``rho`` (nested quadrature)."""
    f, df = FUNCTIONS[name]
    s = math.sqrt(q)
    gap = _pair(lambda u, v: 0.5 * (f(u) - f(v)) ** 2, s, rho)
    d = _pair(lambda u, v: df(u) * df(v), s, rho)
    a_minus_d = _pair(lambda u, v: 0.5 * (df(u) - df(v)) ** 2, s, rho)
    return dict(
        zip(PAIR_FIELDS, (_log(gap / (q * (1 - rho))), _log(d), _log(a_minus_d)), strict=True)
    )


def _log(x):
    """log x, -inf at 0 and NaN below (E f'(u) f'(u') < 0 has no log: gelu near ρ = -1)."""
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


# ---------------------------------------------------------------------------------------------
# The pair's fields at ρ in RHO_PAIR by scipy_pair: name, q, ρ, log_gap_ratio, log_d,
# log_a_minus_d (nan: E f'(u) f'(u') < 0). sin only up to q = 1: beyond, it oscillates through
# ~√q periods per standard deviation and one row takes adaptive quadrature hours (its closed
# form is checked up to q = 1e4 at ρ = -1, 0, 1).
_PAIR_TABLE = """
identity 0.0001 -0.999999 4.4408920985006252e-16 -1.1102230246251565e-16 -inf
identity 0.0001 -0.5 4.4408920985006252e-16 0.0000000000000000e+00 -inf
identity 0.0001 0.5 2.2204460492503128e-16 0.0000000000000000e+00 -inf
identity 0.0001 0.999999 1.1063150395723563e-11 -1.1102230246251565e-16 -inf
identity 0.01 -0.999999 -2.2204460492503136e-16 0.0000000000000000e+00 -inf
identity 0.01 -0.5 2.2204460492503128e-16 0.0000000000000000e+00 -inf
identity 0.01 0.5 4.4408920985006252e-16 2.2204460492503128e-16 -inf
identity 0.01 0.999999 1.1062484261908796e-11 0.0000000000000000e+00 -inf
identity 1 -0.999999 4.4408920985006252e-16 0.0000000000000000e+00 -inf
identity 1 -0.5 0.0000000000000000e+00 2.2204460492503128e-16 -inf
identity 1 0.5 0.0000000000000000e+00 2.2204460492503128e-16 -inf
identity 1 0.999999 1.1062484261908796e-11 0.0000000000000000e+00 -inf
identity 100 -0.999999 0.0000000000000000e+00 0.0000000000000000e+00 -inf
identity 100 -0.5 0.0000000000000000e+00 2.2204460492503128e-16 -inf
identity 100 0.5 2.2204460492503128e-16 2.2204460492503128e-16 -inf
identity 100 0.999999 1.1063594484933408e-11 0.0000000000000000e+00 -inf
identity 10000 -0.999999 4.4408920985006252e-16 0.0000000000000000e+00 -inf
identity 10000 -0.5 2.2204460492503128e-16 2.2204460492503128e-16 -inf
identity 10000 0.5 0.0000000000000000e+00 2.2204460492503128e-16 -inf
identity 10000 0.999999 1.1065814930982634e-11 0.0000000000000000e+00 -inf
relu 0.0001 -0.999999 -1.3862938614198708e+00 -8.3990586717582527e+00 -6.9359744010716395e-01
relu 0.0001 -0.5 -1.2140206497720214e+00 -1.7917594692280547e+00 -1.0986122886681093e+00
relu 0.0001 0.5 -9.3904204393417690e-01 -1.0986122886681093e+00 -1.7917594692280545e+00
relu 0.0001 0.999999 -6.9344733104326561e-01 -6.9359744010716384e-01 -8.3990586717582527e+00
relu 0.01 -0.999999 -1.3862938614198708e+00 -8.3990586717582527e+00 -6.9359744010716373e-01
relu 0.01 -0.5 -1.2140206497720210e+00 -1.7917594692280547e+00 -1.0986122886681093e+00
relu 0.01 0.5 -9.3904204393417656e-01 -1.0986122886681096e+00 -1.7917594692280547e+00
relu 0.01 0.999999 -6.9344733104326628e-01 -6.9359744010716384e-01 -8.3990586717582527e+00
relu 1 -0.999999 -1.3862938614198708e+00 -8.3990586717582527e+00 -6.9359744010716362e-01
relu 1 -0.5 -1.2140206497720214e+00 -1.7917594692280550e+00 -1.0986122886681093e+00
relu 1 0.5 -9.3904204393417701e-01 -1.0986122886681093e+00 -1.7917594692280550e+00
relu 1 0.999999 -6.9344733104326617e-01 -6.9359744010716384e-01 -8.3990586717582527e+00
relu 100 -0.999999 -1.3862938614198708e+00 -8.3990586717582527e+00 -6.9359744010716351e-01
relu 100 -0.5 -1.2140206497720216e+00 -1.7917594692280550e+00 -1.0986122886681096e+00
relu 100 0.5 -9.3904204393417701e-01 -1.0986122886681093e+00 -1.7917594692280550e+00
relu 100 0.999999 -6.9344733104326506e-01 -6.9359744010716384e-01 -8.3990586717582527e+00
relu 10000 -0.999999 -1.3862938614198705e+00 -8.3990586717582527e+00 -6.9359744010716362e-01
relu 10000 -0.5 -1.2140206497720212e+00 -1.7917594692280550e+00 -1.0986122886681093e+00
relu 10000 0.5 -9.3904204393417701e-01 -1.0986122886681093e+00 -1.7917594692280550e+00
relu 10000 0.999999 -6.9344733104326295e-01 -6.9359744010716384e-01 -8.3990586717582527e+00
leaky_relu 0.0001 -0.999999 -1.3663932193076880e+00 -4.5833499851908357e+00 -7.1369811181416654e-01
leaky_relu 0.0001 -0.5 -1.2003446442895263e+00 -1.7524426068511043e+00 -1.1187129603751120e+00
leaky_relu 0.0001 0.5 -9.3338278536066166e-01 -1.0885629528151080e+00 -1.8118601409350577e+00
leaky_relu 0.0001 0.999999 -6.9334133275040222e-01 -6.9348843882943367e-01 -8.4191593434652550e+00
leaky_relu 0.01 -0.999999 -1.3663932193076880e+00 -4.5833499851908357e+00 -7.1369811181416631e-01
leaky_relu 0.01 -0.5 -1.2003446442895265e+00 -1.7524426068511045e+00 -1.1187129603751123e+00
leaky_relu 0.01 0.5 -9.3338278536066177e-01 -1.0885629528151082e+00 -1.8118601409350577e+00
leaky_relu 0.01 0.999999 -6.9334133275040288e-01 -6.9348843882943367e-01 -8.4191593434652550e+00
leaky_relu 1 -0.999999 -1.3663932193076882e+00 -4.5833499851908357e+00 -7.1369811181416631e-01
leaky_relu 1 -0.5 -1.2003446442895267e+00 -1.7524426068511045e+00 -1.1187129603751123e+00
leaky_relu 1 0.5 -9.3338278536066210e-01 -1.0885629528151082e+00 -1.8118601409350577e+00
leaky_relu 1 0.999999 -6.9334133275040288e-01 -6.9348843882943367e-01 -8.4191593434652550e+00
leaky_relu 100 -0.999999 -1.3663932193076882e+00 -4.5833499851908357e+00 -7.1369811181416631e-01
leaky_relu 100 -0.5 -1.2003446442895265e+00 -1.7524426068511045e+00 -1.1187129603751123e+00
leaky_relu 100 0.5 -9.3338278536066199e-01 -1.0885629528151082e+00 -1.8118601409350579e+00
leaky_relu 100 0.999999 -6.9334133275040166e-01 -6.9348843882943367e-01 -8.4191593434652550e+00
leaky_relu 10000 -0.999999 -1.3663932193076880e+00 -4.5833499851908357e+00 -7.1369811181416631e-01
leaky_relu 10000 -0.5 -1.2003446442895265e+00 -1.7524426068511045e+00 -1.1187129603751123e+00
leaky_relu 10000 0.5 -9.3338278536066210e-01 -1.0885629528151082e+00 -1.8118601409350579e+00
leaky_relu 10000 0.999999 -6.9334133275039944e-01 -6.9348843882943367e-01 -8.4191593434652550e+00
abs 0.0001 -0.999999 -1.4509257629590412e+01 nan 6.9269692101272662e-01
abs 0.0001 -0.5 -1.6712975790010480e+00 nan 2.8768207245178135e-01
abs 0.0001 0.5 -5.7268529033293825e-01 -1.0986122886681096e+00 -4.0546510810816394e-01
abs 0.0001 0.999999 -6.0039109507243260e-04 -9.0072191942434639e-04 -7.0127643106383619e+00
abs 0.01 -0.999999 -1.4509257629590412e+01 nan 6.9269692101272684e-01
abs 0.01 -0.5 -1.6712975790010480e+00 nan 2.8768207245178118e-01
abs 0.01 0.5 -5.7268529033293825e-01 -1.0986122886681096e+00 -4.0546510810816411e-01
abs 0.01 0.999999 -6.0039109507343234e-04 -9.0072191942423526e-04 -7.0127643106383619e+00
abs 1 -0.999999 -1.4509257629590412e+01 nan 6.9269692101272695e-01
abs 1 -0.5 -1.6712975790010483e+00 nan 2.8768207245178118e-01
abs 1 0.5 -5.7268529033293869e-01 -1.0986122886681093e+00 -4.0546510810816427e-01
abs 1 0.999999 -6.0039109507332132e-04 -9.0072191942412413e-04 -7.0127643106383619e+00
abs 100 -0.999999 -1.4509257629590410e+01 nan 6.9269692101272706e-01
abs 100 -0.5 -1.6712975790010483e+00 nan 2.8768207245178101e-01
abs 100 0.5 -5.7268529033293847e-01 -1.0986122886681093e+00 -4.0546510810816427e-01
abs 100 0.999999 -6.0039109507187716e-04 -9.0072191942412413e-04 -7.0127643106383619e+00
abs 10000 -0.999999 -1.4509257629590408e+01 nan 6.9269692101272695e-01
abs 10000 -0.5 -1.6712975790010483e+00 nan 2.8768207245178118e-01
abs 10000 0.5 -5.7268529033293847e-01 -1.0986122886681093e+00 -4.0546510810816427e-01
abs 10000 0.999999 -6.0039109506998859e-04 -9.0072191942423526e-04 -7.0127643106383619e+00
tanh 0.0001 -0.999999 -1.9996334533451659e-04 -1.9995002002953083e-04 -3.0850697154263461e+01
tanh 0.0001 -0.5 -1.9996501099498723e-04 -1.9996501099498723e-04 -1.8016015389309455e+01
tanh 0.0001 0.5 -1.9995834832613752e-04 -1.9996501099487618e-04 -1.8016015389309455e+01
tanh 0.0001 0.999999 -1.9995000894628995e-04 -1.9995002002953083e-04 -3.0850697154263461e+01
tanh 0.01 -0.999999 -1.9644826745953491e-02 -1.9519019560028078e-02 -2.1716846683539636e+01
tanh 0.01 -0.5 -1.9660550270147251e-02 -1.9660557193761793e-02 -8.8825320333540301e+00
tanh 0.01 0.5 -1.9597657405074877e-02 -1.9660557193761793e-02 -8.8825320333540301e+00
tanh 0.01 0.999999 -1.9519019360200097e-02 -1.9519019560028078e-02 -2.1716846683539636e+01
tanh 1 -0.999999 -9.3065730022204574e-01 -7.6700342571808300e-01 -1.5018805944872691e+01
tanh 1 -0.5 -9.4912577729522951e-01 -9.5516922964309969e-01 -2.5300394976085951e+00
tanh 1 0.5 -8.7721388871200534e-01 -9.5516922964309969e-01 -2.5300394976085951e+00
tanh 1 0.999999 -7.6700310249277437e-01 -7.6700342571808300e-01 -1.5018805944872691e+01
tanh 100 -0.999999 -4.6879708023616633e+00 -2.9355303217799951e+00 -1.2371572625889369e+01
tanh 100 -0.5 -4.7867848792263166e+00 -4.9237689230064730e+00 -3.0827047788490836e+00
tanh 100 0.5 -4.4393340449272172e+00 -4.9237689230064730e+00 -3.0827047788490836e+00
tanh 100 0.999999 -2.9354904266721600e+00 -2.9355303217799951e+00 -1.2371572625889369e+01
tanh 10000 -0.999999 -9.2183770919337515e+00 -5.2443616426826338e+00 -1.0078905983830015e+01
tanh 10000 -0.5 -9.3341480773994387e+00 -9.5181916921891272e+00 -5.2503576071271185e+00
tanh 10000 0.5 -8.9346523786664100e+00 -9.5181916921891272e+00 -5.2503576071271185e+00
tanh 10000 0.999999 -5.2404129694648258e+00 -5.2443616426826338e+00 -1.0078905983830015e+01
erf 0.0001 -0.999999 2.4136450193181866e-01 2.4136451525978697e-01 -3.0608932845510058e+01
erf 0.0001 -0.5 2.4136450026582501e-01 2.4136450026582501e-01 -1.7774251063096649e+01
erf 0.0001 0.5 2.4136450692982600e-01 2.4136450026582518e-01 -1.7774251063096649e+01
erf 0.0001 0.999999 2.4136451527086752e-01 2.4136451525978697e-01 -3.0608932845510058e+01
erf 0.01 -0.999999 2.2182593486403465e-01 2.2195411830923462e-01 -2.1456823663817200e+01
erf 0.01 -0.5 2.2180991288166643e-01 2.2180990872313455e-01 -8.6223581758830878e+00
erf 0.01 0.5 2.2187399952734349e-01 2.2180990872313436e-01 -8.6223581758830878e+00
erf 0.01 0.999999 2.2195411851260419e-01 2.2195411830923462e-01 -2.1456823663817200e+01
erf 1 -0.999999 -7.6666670624995636e-01 -5.6315528094551948e-01 -1.4601810290183870e+01
erf 1 -0.5 -7.8979619571119708e-01 -7.9815629556942713e-01 -2.1265174121870856e+00
erf 1 0.5 -7.0032424031339358e-01 -7.9815629556942713e-01 -2.1265174121870856e+00
erf 1 0.999999 -5.6315488093512556e-01 -5.6315528094551948e-01 -1.4601810290183870e+01
erf 100 -0.999999 -4.6708106313713360e+00 -2.7555159790075101e+00 -1.1968403602698471e+01
erf 100 -0.5 -4.7732130104765069e+00 -4.9195509155245771e+00 -2.8774135742173059e+00
erf 100 0.5 -4.4146093306003937e+00 -4.9195509155245771e+00 -2.8774135742173059e+00
erf 100 0.999999 -2.7554661099359268e+00 -2.7555159790075101e+00 -1.1968403602698471e+01
erf 10000 -0.999999 -9.2167581633247302e+00 -5.0666664547759659e+00 -9.6768249260718395e+00
erf 10000 -0.5 -9.3329232396608841e+00 -9.5181487049288087e+00 -5.0683789481364716e+00
erf 10000 0.5 -8.9322254519393418e+00 -9.5181487049288087e+00 -5.0683789481364716e+00
erf 10000 0.999999 -5.0617281775952883e+00 -5.0666664547759659e+00 -9.6768249260718395e+00
gelu 0.0001 -0.999999 -1.3862943609925920e+00 -1.3865489902698815e+00 -8.9689763775417397e+00
gelu 0.0001 -0.5 -1.3862307138982424e+00 -1.3864216677170633e+00 -9.2566579516596388e+00
gelu 0.0001 0.5 -1.3861034316065646e+00 -1.3861670707276239e+00 -1.0355270233662749e+01
gelu 0.0001 0.999999 -1.3860397966510716e+00 -1.3860397967893994e+00 -2.3477633602696024e+01
gelu 0.01 -0.999999 -1.3862943486372530e+00 -1.4115765290695366e+00 -4.3834170876558192e+00
gelu 0.01 -0.5 -1.3800725899243693e+00 -1.3988549448372352e+00 -4.6711149182148040e+00
gelu 0.01 0.5 -1.3677439882994544e+00 -1.3738895905844539e+00 -5.7696621757793585e+00
gelu 0.01 0.999999 -1.3616356390134636e+00 -1.3616356512047088e+00 -1.8891944260740321e+01
gelu 1 -0.999999 -1.3862939494183135e+00 -3.1201757152148293e+00 -8.8745681454511360e-01
gelu 1 -0.5 -1.2085910798328392e+00 -1.8468530859718013e+00 -1.2102655350617368e+00
gelu 1 0.5 -9.2671200748544835e-01 -1.0721634363617960e+00 -2.1752159451486670e+00
gelu 1 0.999999 -7.8558987432607574e-01 -7.8559017669959463e-01 -1.5104082017036381e+01
gelu 100 -0.999999 -1.3862938503231270e+00 nan -6.7178373542221437e-01
gelu 100 -0.5 -1.2113714652244689e+00 -1.7971689592527851e+00 -1.0798915845863837e+00
gelu 100 0.5 -9.3301536807878938e-01 -1.0959184776968052e+00 -1.7651133513186679e+00
gelu 100 0.999999 -6.8240840953791482e-01 -6.8241146620521809e-01 -1.2687428316268765e+01
gelu 10000 -0.999999 -1.3862938600256332e+00 nan -6.9096116361194371e-01
gelu 10000 -0.5 -1.2139901350898115e+00 -1.7918145916923942e+00 -1.0968987931991494e+00
gelu 10000 0.5 -9.3897250949729882e-01 -1.0985847285753298e+00 -1.7884452804317739e+00
gelu 10000 0.999999 -6.9205364631632782e-01 -6.9208427353317292e-01 -1.0390209358717655e+01
gelu_tanh 0.0001 -0.999999 -1.3862943609925920e+00 -1.3865489900179124e+00 -8.9689773669695345e+00
gelu_tanh 0.0001 -0.5 -1.3862307139612162e+00 -1.3864216675910885e+00 -9.2566589411039555e+00
gelu_tanh 0.0001 0.5 -1.3861034317954621e+00 -1.3861670708535665e+00 -1.0355271223040972e+01
gelu_tanh 0.0001 0.999999 -1.3860397969029117e+00 -1.3860397970412401e+00 -2.3477634591991386e+01
gelu_tanh 0.01 -0.999999 -1.3862943486384300e+00 -1.4115741145658756e+00 -4.3835113922903020e+00
gelu_tanh 0.01 -0.5 -1.3800731762130709e+00 -1.3988537472143046e+00 -4.6712093728661097e+00
gelu_tanh 0.01 0.5 -1.3677457256153209e+00 -1.3738907586798195e+00 -5.7697560303903739e+00
gelu_tanh 0.01 0.999999 -1.3616379359027031e+00 -1.3616379480928400e+00 -1.8892037364981313e+01
gelu_tanh 1 -0.999999 -1.3862939494843531e+00 -3.1194280927513209e+00 -8.8761723276731774e-01
gelu_tanh 1 -0.5 -1.2085909301232962e+00 -1.8469338322120454e+00 -1.2103335770991952e+00
gelu_tanh 1 0.5 -9.2671166867860599e-01 -1.0721262269113474e+00 -2.1756188616645940e+00
gelu_tanh 1 0.999999 -7.8566231197547332e-01 -7.8566261409209837e-01 -1.5105004440697673e+01
gelu_tanh 100 -0.999999 -1.3862938503052959e+00 nan -6.7174882783348111e-01
gelu_tanh 100 -0.5 -1.2113737258440473e+00 -1.7971614503075333e+00 -1.0798690023649637e+00
gelu_tanh 100 0.5 -9.3302050213768317e-01 -1.0959222018896599e+00 -1.7650540004917725e+00
gelu_tanh 100 0.999999 -6.8239076916145558e-01 -6.8239382377320135e-01 -1.2688083467185942e+01
gelu_tanh 10000 -0.999999 -1.3862938600240278e+00 nan -6.9095796104290930e-01
gelu_tanh 10000 -0.5 -1.2139901835645803e+00 -1.7918145005095365e+00 -1.0968964642175192e+00
gelu_tanh 10000 0.5 -9.3897261995560422e-01 -1.0985847741629926e+00 -1.7884404481724685e+00
gelu_tanh 10000 0.999999 -6.9205204299185075e-01 -6.9208265138848490e-01 -1.0390830396972021e+01
silu 0.0001 -0.999999 -1.3862943610698955e+00 -1.3863943560203904e+00 -9.9035880458703378e+00
silu 0.0001 -0.5 -1.3862693639320465e+00 -1.3863443573702028e+00 -1.0191269618738573e+01
silu 0.0001 0.5 -1.3862193714308595e+00 -1.3862443673690779e+00 -1.1289881905740351e+01
silu 0.0001 0.999999 -1.3861943761563151e+00 -1.3861943762173710e+00 -2.4412245281022543e+01
silu 0.01 -0.999999 -1.3862943561693148e+00 -1.3962448445584767e+00 -5.3082519389602343e+00
silu 0.01 -0.5 -1.3838221469595924e+00 -1.3912571703805314e+00 -5.5959375963270555e+00
silu 0.01 0.5 -1.3788959789624917e+00 -1.3813560597570376e+00 -6.6945335453692616e+00
silu 0.01 0.999999 -1.3764419101700933e+00 -1.3764419150833540e+00 -1.9816876497551558e+01
silu 1 -0.999999 -1.3862941021552351e+00 -2.1159578838324875e+00 -1.3510640628152542e+00
silu 1 -0.5 -1.2667804232036375e+00 -1.6728017386948182e+00 -1.6515004316789035e+00
silu 1 0.5 -1.0635973879662102e+00 -1.1638562896587554e+00 -2.7000413129473770e+00
silu 1 0.999999 -9.6894737699102229e-01 -9.6894756651504577e-01 -1.5754608627436117e+01
silu 100 -0.999999 -1.3862938468138690e+00 nan -6.6493706095464278e-01
silu 100 -0.5 -1.2069554662480488e+00 -1.8082804847075948e+00 -1.0693893356665345e+00
silu 100 0.5 -9.2301427528135072e-01 -1.0904530202351685e+00 -1.7655678024312387e+00
silu 100 0.999999 -6.7894264770447554e-01 -6.7894438450113537e-01 -1.3249261678966732e+01
silu 10000 -0.999999 -1.3862938594251493e+00 nan -6.8976364695288661e-01
silu 10000 -0.5 -1.2139218490304067e+00 -1.7919406767692525e+00 -1.0959568381451377e+00
silu 10000 0.5 -9.3881691447120630e-01 -1.0985216972095881e+00 -1.7868161312204165e+00
silu 10000 0.999999 -6.9145399886014158e-01 -6.9147157681168581e-01 -1.0946262990667439e+01
softplus 0.0001 -0.999999 -1.3862943611073910e+00 -1.3863193601574537e+00 -1.1289832411364664e+01
softplus 0.0001 -0.5 -1.3862881114518977e+00 -1.3863068605730486e+00 -1.1577513983920472e+01
softplus 0.0001 0.5 -1.3862756122330879e+00 -1.3862818618229664e+00 -1.2676126272171977e+01
softplus 0.0001 0.999999 -1.3862693626837643e+00 -1.3862693627072638e+00 -2.5798489649016197e+01
softplus 0.01 -0.999999 -1.3862943598760964e+00 -1.3887850455564581e+00 -6.6895894964471880e+00
softplus 0.01 -0.5 -1.3856726584386043e+00 -1.3875389253109172e+00 -6.9772720951696092e+00
softplus 0.01 0.5 -1.3844304114185995e+00 -1.3850513439437293e+00 -8.0758802787445561e+00
softplus 0.01 0.999999 -1.3838098635310905e+00 -1.3838098647828729e+00 -2.1198238524658176e+01
softplus 1 -0.999999 -1.3862942743618238e+00 -1.5768690383177706e+00 -2.4446323355602315e+00
softplus 1 -0.5 -1.3440839072056179e+00 -1.4759054444488662e+00 -2.7363360788386397e+00
softplus 1 0.5 -1.2646592438488522e+00 -1.3040571684507301e+00 -3.8189557834291712e+00
softplus 1 0.999999 -1.2262899446549507e+00 -1.2262900210795213e+00 -1.6920249118680943e+01
softplus 100 -0.999999 -1.3862939396395493e+00 -3.2375434669358469e+00 -8.6398243236088468e-01
softplus 100 -0.5 -1.2221620638400963e+00 -1.7746100846211232e+00 -1.2337762361484699e+00
softplus 100 0.5 -9.5769193065100822e-01 -1.1072985449624955e+00 -2.0379926475448049e+00
softplus 100 0.999999 -7.7492114860803651e-01 -7.7492186556999687e-01 -1.4230029515069825e+01
softplus 10000 -0.999999 -1.3862938691039433e+00 -5.5226093836208916e+00 -7.0924439953295371e-01
softplus 10000 -0.5 -1.2141202899818404e+00 -1.7915781951713337e+00 -1.1107425088452869e+00
softplus 10000 0.5 -9.3926911503608546e-01 -1.0987029380205660e+00 -1.8157973892268844e+00
softplus 10000 0.999999 -7.0116340255362164e-01 -7.0117009579582301e-01 -1.1922100887671469e+01
elu 0.0001 -0.999999 -7.9420786731824577e-03 -7.9607128844097277e-03 -9.9193977252255170e+00
elu 0.0001 -0.5 -7.9365884084552103e-03 -7.9552694089520572e-03 -1.0035638001075961e+01
elu 0.0001 0.5 -7.9213475442488964e-03 -7.9304680131978399e-03 -1.0860325512936987e+01
elu 0.0001 0.999999 -7.9111100257059745e-03 -7.9111100615607190e-03 -2.3735188368827675e+01
elu 0.01 -0.999999 -7.6243376173098135e-02 -7.8007412168705700e-02 -5.4532795889764287e+00
elu 0.01 -0.5 -7.5728139481290146e-02 -7.7469092109731047e-02 -5.5769259550701387e+00
elu 0.01 0.5 -7.4326636082841263e-02 -7.5160041190135099e-02 -6.4101442672573770e+00
elu 0.01 0.999999 -7.3388439896526797e-02 -7.3388442216248947e-02 -1.9266769864071151e+01
elu 1 -0.999999 -5.3776691802147469e-01 -6.4787446416287697e-01 -1.9313980395466728e+00
elu 1 -0.5 -5.0972830643377232e-01 -6.0159652649753448e-01 -2.1188823372590844e+00
elu 1 0.5 -4.4578170368847758e-01 -4.8258774197291548e-01 -2.9775428851632793e+00
elu 1 0.999999 -4.0331454636534048e-01 -4.0331467204742510e-01 -1.5599587232406668e+01
elu 100 -0.999999 -1.2319909332305454e+00 -2.5381377825464675e+00 -8.1897299438574500e-01
elu 100 -0.5 -1.0876489700341994e+00 -1.5619212382951941e+00 -1.1706512572790373e+00
elu 100 0.5 -8.4688676628244219e-01 -9.8654494292805328e-01 -1.9170854036079144e+00
elu 100 0.999999 -6.5412528189540009e-01 -6.5412717833112188e-01 -1.3135015236521616e+01
elu 10000 -0.999999 -1.3703664944352738e+00 -4.8308963473240167e+00 -7.0518879919341870e-01
elu 10000 -0.5 -1.2006658120395401e+00 -1.7678919755137550e+00 -1.1047242450531345e+00
elu 10000 0.5 -9.2894585667024965e-01 -1.0867162486785529e+00 -1.8037978297429234e+00
elu 10000 0.999999 -6.8918452857400658e-01 -6.8920272735839405e-01 -1.0895572438150417e+01
sigmoid 0.0001 -0.999999 -2.7726387199483020e+00 -2.7726387191150961e+00 -3.6395274867368691e+01
sigmoid 0.0001 -0.5 -2.7726387200524529e+00 -2.7726387200524529e+00 -2.3560593064909249e+01
sigmoid 0.0001 0.5 -2.7726387196358493e+00 -2.7726387200524529e+00 -2.3560593064909249e+01
sigmoid 0.0001 0.999999 -2.7726387191044957e+00 -2.7726387191150961e+00 -3.6395274867368691e+01
sigmoid 0.01 -0.999999 -2.7775659910189168e+00 -2.7775577807579488e+00 -2.7204557922898541e+01
sigmoid 0.01 -0.5 -2.7775670172896820e+00 -2.7775670173197926e+00 -1.4369900568700892e+01
sigmoid 0.01 0.5 -2.7775629121965189e+00 -2.7775670173197926e+00 -1.4369900568700892e+01
sigmoid 0.01 0.999999 -2.7775577807345684e+00 -2.7775577807579488e+00 -2.7204557922898541e+01
sigmoid 1 -0.999999 -3.1377790161200516e+00 -3.1047386136306945e+00 -1.9166941201273129e+01
sigmoid 1 -0.5 -3.1418011869468043e+00 -3.1421458182365054e+00 -6.4092729889308933e+00
sigmoid 1 0.5 -3.1258086028692258e+00 -3.1421458182365054e+00 -6.4092729889308933e+00
sigmoid 1 0.999999 -3.1047385607454228e+00 -3.1047386136306945e+00 -1.9166941201273129e+01
sigmoid 100 -0.999999 -6.1622992989087964e+00 -5.0196990440744438e+00 -1.5849415680902226e+01
sigmoid 100 -0.5 -6.2444115302447258e+00 -6.3414149722004920e+00 -5.3298414831244649e+00
sigmoid 100 0.5 -5.9500156529729509e+00 -6.3414149722004920e+00 -5.3298414831244649e+00
sigmoid 100 0.999999 -5.0196891431223980e+00 -5.0196990440744438e+00 -1.5849415680902226e+01
sigmoid 10000 -0.999999 -1.0612731452068957e+01 -7.3179273550112303e+00 -1.3534202205741929e+01
sigmoid 10000 -0.5 -1.0726547988929633e+01 -1.0904814873398591e+01 -7.3439507393083812e+00
sigmoid 10000 0.5 -1.0332990580643122e+01 -1.0904814873398591e+01 -7.3439507393083812e+00
sigmoid 10000 0.999999 -7.3169307017121339e+00 -7.3179273550112303e+00 -1.3534202205741929e+01
sin 0.0001 -0.999999 -9.9998333335071866e-05 -9.9995000009884638e-05 -3.2236291800218169e+01
sin 0.0001 -0.5 -9.9998749999805032e-05 -9.9998749999693996e-05 -1.9401609995922421e+01
sin 0.0001 0.5 -9.9997083333101092e-05 -9.9998749999693996e-05 -1.9401609995922421e+01
sin 0.0001 0.999999 -9.9994988940409359e-05 -9.9995000009995674e-05 -3.2236291800218169e+01
sin 0.01 -0.999999 -9.9833334055547448e-03 -9.9500009333075828e-03 -2.3035834763306308e+01
sin 0.01 -0.5 -9.9875000208330730e-03 -9.9875000520828778e-03 -1.0201159208339037e+01
sin 0.01 0.5 -9.9708335972180217e-03 -9.9875000520828778e-03 -1.0201159208339037e+01
sin 0.01 0.999999 -9.9500008722446017e-03 -9.9500009333075828e-03 -2.3035834763306308e+01
sin 1 -0.999999 -8.3856079494628744e-01 -5.6621993111091851e-01 -1.4654071852870953e+01
sin 1 -0.5 -8.7701776341345705e-01 -8.7988549304172214e-01 -1.8783817690525879e+00
sin 1 0.5 -7.3133885158443590e-01 -8.7988549304172214e-01 -1.8783817690525879e+00
sin 1 0.999999 -5.6621955030289495e-01 -5.6621993111091851e-01 -1.4654071852870953e+01
"""


def _pair_table() -> dict:
    rows = (line.split() for line in _PAIR_TABLE.strip().splitlines())
    return {
        (name, float(q), float(rho)): dict(zip(PAIR_FIELDS, map(float, values), strict=True))
        for name, q, rho, *values in rows
    }


def _references(name) -> dict:
    """Every field at every (q, ρ) of the grid (but sin's pair at q > 1): one-dimensional
    integrals here, the pair's fields at RHO_PAIR from the table."""
    table, out = _pair_table(), {}
    for q in Q:
        line = scipy_line(name, q)
        single = {k: line[0.0][k] for k in ("log_e2", "t", "log_var", "log_a")}
        for rho in RHO_LINE:
            out[q, rho] = line[rho]
        for rho in RHO_PAIR:
            if (name, q, rho) in table:
                out[q, rho] = dict(single, **table[name, q, rho])
    return out


_EXPECTATIONS = jax.jit(acts.expectations, static_argnums=(0, 3))


def _computed(name) -> dict:
    """The implementation's fields on the whole grid (float64), keyed by (q, ρ)."""
    rhos = RHO_LINE + RHO_PAIR
    log_q = np.log(np.array(Q))[:, None] * np.ones(len(rhos))
    with np.errstate(divide="ignore"):  # ρ = 1: log δ = -inf
        log_delta = np.log(1.0 - np.array(rhos))[None, :] * np.ones((len(Q), 1))
    ex = _EXPECTATIONS(name, jnp.asarray(log_q), jnp.asarray(log_delta), SLOPE)
    ex = {k: np.asarray(getattr(ex, k)) for k in (*FIELDS, "log_decorrelation")}
    return {
        (q, rho): {k: float(v[i, j]) for k, v in ex.items()}
        for i, q in enumerate(Q)
        for j, rho in enumerate(rhos)
    }


def _error(field, got, want, scale):
    """The error that TOLERANCE bounds: of a log, its difference (the value's relative error);
    of t, relative, or absolute below 1e-3 (an odd f's reference t is 1e-17, not 0); where the
    value is 0 (log -inf: a - d at ρ = 1, the gap of an even f at ρ = -1), the size of what was
    computed against ``scale`` (log E f'²); NaN where both are (E f'(u) f'(u') < 0). E f'(u)
    f'(u') is no gap: relative to itself or, where it is below 1e-12 of E f'² (sin at q = 1e4,
    e^-q), to that, as the reference's own accuracy is."""
    if field == "t":
        return abs(got - want) / max(abs(want), 1e-3)
    if math.isnan(want) and math.isnan(got):
        return 0.0
    if want == -math.inf:
        return 0.0 if got == -math.inf else math.exp(got - scale)
    if field == "log_d" and want < scale + math.log(1e-12):
        return abs(math.exp(got - scale) - math.exp(want - scale)) / 1e-12
    return abs(got - want)


def worst_errors(computed: dict, references: dict) -> dict:
    """field -> (largest error over the grid, its (q, ρ))."""
    worst = {}
    for key, want in references.items():
        for field, value in want.items():
            e = _error(field, computed[key][field], value, want["log_a"])
            e = math.inf if math.isnan(e) else e  # NaN counts as the worst
            if e > worst.get(field, (-1.0,))[0]:
                worst[field] = (e, key)
    return worst


@pytest.mark.parametrize("name", NAMES)
def test_every_named_activation_matches_scipy_over_the_range(name, x64):
    """q from 1e-4 to 1e4, ρ in {-1, -1 + 1e-6, -0.5, 0, 0.5, 1 - 1e-6, 1}: every field
    within 1e-9, gaps relative to their own size. An odd activation has E f = 0 and, at ρ = 0,
    E f(u) f(u') = 0 by construction: t and log(1 - E f f'/E f²) are exactly 0 (so the
    recursion carries corr_z = 0 exactly, below)."""
    computed = _computed(name)
    worst = worst_errors(computed, _references(name))
    assert all(e <= TOLERANCE for e, _ in worst.values()), (name, worst)
    if name in ODD:
        assert all(v["t"] == 0.0 for v in computed.values()), name
        assert all(computed[q, 0.0]["log_decorrelation"] == 0.0 for q in Q), name


def test_the_table_is_what_scipy_gives():
    """A few rows of _PAIR_TABLE computed again (the cheaper ones), to the table's digits."""
    table = _pair_table()
    for key in [("gelu", 1.0, 0.5), ("tanh", 1e-2, -0.999999), ("elu", 1e-4, 0.5)]:
        again = scipy_pair(*key)
        for field, value in table[key].items():
            assert abs(again[field] - value) < 1e-11, (key, field, again[field], value)


def test_gauss_hermite_quadrature_fails_the_check():
    """A planted error: the former rule, 128-node Gauss-Hermite quadrature, for E f(u)² and
    E f'(u)² of tanh, which is exact to rounding at q = 1e-4 and off by percent at 1e4."""
    x, w = np.polynomial.hermite_e.hermegauss(128)
    w = w / w.sum()
    references = {(q, 0.0): scipy_line("tanh", q)[0.0] for q in Q}
    computed = {}
    for q in Q:
        u = math.sqrt(q) * x
        e2, a = np.sum(w * np.tanh(u) ** 2), np.sum(w * (1 - np.tanh(u) ** 2) ** 2)
        computed[q, 0.0] = dict(references[q, 0.0], log_e2=math.log(e2), log_a=math.log(a))
    worst = worst_errors(computed, references)
    assert worst["log_e2"][0] > 1e-4 and worst["log_a"][0] > 1e-4, worst
    first = {k: v for k, v in references.items() if k[0] < 1e-3}
    small = worst_errors(computed, first)
    assert small["log_e2"][0] < TOLERANCE and small["log_a"][0] < TOLERANCE, small


def test_the_issue_case_end_to_end(x64):
    """tanh-none-residual, α = 2, depth 30, orthogonal inputs: q_L against the recursion
    q_l = q_(l-1) + E tanh(u)², u ~ N(0, α q_(l-1)), by adaptive quadrature (25.09468; the
    former Gauss-Hermite rule gave 25.2393), and corr_z = 0 exactly at every layer."""
    block = meanfield.Block("tanh", "none", residual=True)
    prof = recursions.profile(block, depth=30, width=100, var_w=2 / 100, input_corr=0.0)
    q = 1.0
    for _ in range(30):
        q += _line(lambda u: math.tanh(u) ** 2, math.sqrt(2 * q))
    assert abs(float(prof.m2_z[-1]) / q - 1) < 1e-12, (float(prof.m2_z[-1]), q)
    assert np.all(np.asarray(prof.corr_z) == 0.0), prof.corr_z


def test_odd_activations_give_exactly_uncorrelated_outputs_in_the_recursion():
    """corr_z == 0 (not 1e-8) at every layer from input_corr = 0 in float32 too (in float64:
    the issue's case above), residual and plain."""
    for name, residual in [("tanh", True), ("erf", False), ("sin", True)]:
        block = meanfield.Block(name, "none", residual)
        prof = recursions.profile(block, depth=30, width=100, var_w=2 / 100, input_corr=0.0)
        assert np.all(np.asarray(prof.corr_z) == 0.0), (block.name, prof.corr_z)


_NOT_ELEMENTWISE = {
    "x - x.mean()": (lambda x: x - x.mean(), "a different value next to other elements"),
    "softmax": (jax.nn.softmax, "fails on one element alone"),
    "np.tanh": (np.tanh, "JAX cannot trace"),
    "math.tanh": (math.tanh, "JAX cannot trace"),
    "by position": (
        lambda x: x * jnp.linspace(1.0, 2.0, x.size).reshape(jnp.shape(x)),
        "a different value next to other elements",
    ),
    "x[..., None]": (lambda x: x[..., None], "maps an array of shape"),
    "cumsum": (
        lambda x: jnp.cumsum(jnp.ravel(x)).reshape(jnp.shape(x)),
        "a different value next to other elements",
    ),
    "x.sum()": (lambda x: x.sum(), "maps an array of shape"),
    "integers": (lambda x: jnp.round(x).astype(jnp.int32), "not real floats"),
}


@pytest.mark.parametrize("case", list(_NOT_ELEMENTWISE))
def test_an_activation_that_is_not_an_elementwise_jax_function_is_refused(case):
    fn, why = _NOT_ELEMENTWISE[case]
    with pytest.raises(ValueError, match="Activation.activation must be one of") as info:
        ml.Activation(fn)
    message = str(info.value)
    assert why in message and repr(fn) in message and "jnp.tanh, not np.tanh" in message


def test_elementwise_jax_functions_are_accepted_even_inside_a_trace():
    """NaN values are allowed (the engines flag them); the check runs outside the trace a
    layer is built in."""
    for fn in (jnp.tanh, jnp.log, lambda x: x * jnp.nan, lambda x: jnp.where(x > 1, x, 0.0)):
        ml.Activation(fn)
    built = jax.vmap(lambda v: v * ml.Activation(lambda x: 1.5 * jnp.tanh(x)).slope)
    assert np.allclose(built(jnp.ones(2)), 0.01)
    with pytest.raises(ValueError, match="a different value next to other elements"):
        jax.vmap(lambda v: v * ml.Activation(lambda x: x - x.mean()).slope)(jnp.ones(2))


_FORWARD = ("mean_z", "m2_z", "var_z", "unitvar_z", "corr_z")
_TREES = {
    "none": lambda f: ml.residual(ml.serial(ml.Dense(), ml.Activation(f))),
    "ln_pre": lambda f: ml.residual(ml.serial(ml.LayerNorm(), ml.Activation(f), ml.Dense())),
    "plain": lambda f: ml.serial(ml.Dense(), ml.Activation(f)),
}


def _check_never_finite(stats: dict, overflow, what):
    """After the first block every forward statistic is NaN or inf, every backward one below
    the top (which is the loss's own g) and every weight gradient too; all flagged."""
    for name in _FORWARD:
        assert not np.any(np.isfinite(stats[name][1:])), (what, name, stats[name])
    assert not np.any(np.isfinite(stats["m2_dz"][:-1])), (what, stats["m2_dz"])
    assert not np.any(np.isfinite(stats["var_dw"])), (what, stats["var_dw"])
    assert np.all(overflow), (what, overflow)


# (engine, tree, activation): log of negative inputs (NaN), f·NaN, and inf past u = 1.
_BAD = [
    ("recursion", "ln_pre", jnp.log),
    ("weightfree", "ln_pre", jnp.log),
    ("explicit", "plain", lambda x: jnp.where(x > 1, jnp.inf, x)),
    ("recursion", "none", lambda x: x * jnp.nan),
]


@pytest.mark.parametrize("case", range(len(_BAD)))
def test_nan_or_inf_from_an_activation_is_never_a_finite_statistic(case):
    """In the recursion and in both Monte-Carlo engines (the weight-free one took a NaN Gram
    matrix for a zero layer, and a LayerNorm a NaN row for a zero one: both gave a finite
    var_dw; the recursion a zero mean)."""
    engine, tree, fn = _BAD[case]
    kw = dict(depth=3, width=32, var_w=1 / 32)
    names = (*_FORWARD, "m2_dz", "var_dw")
    if engine == "recursion":
        prof = recursions.profile(_TREES[tree](fn), **kw)
        stats = {k: np.asarray(getattr(prof, k)) for k in names}
        _check_never_finite(stats, np.asarray(prof.overflow), (tree, engine))
        return
    est = meanfield.simulate(
        _TREES[tree](fn), key=jax.random.key(0), networks=2, batch=4, engine=engine,
        warn=False, **kw,
    )  # fmt: skip
    stats = {k: np.asarray(getattr(est, k).mean) for k in names}
    _check_never_finite(stats, est.overflow, (tree, engine))


def _table_rows(names):
    for name in names:
        for q in Q if name != "sin" else [q for q in Q if q <= 1]:
            for rho in RHO_PAIR:
                ref = scipy_pair(name, q, rho)
                values = " ".join(f"{ref[k]:.16e}" for k in PAIR_FIELDS)
                yield f"{name} {q:g} {rho:g} {values}"


if __name__ == "__main__":
    # The table's rows (of the activations named on the command line, default all), to paste
    # into _PAIR_TABLE.
    for row in _table_rows(sys.argv[1:] or NAMES):
        print(row, flush=True)
