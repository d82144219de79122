"""The convolutional ResNet of Taki (2017), section 4, in Flax Linen.

A stem convolution maps the RGB image to ``channels`` feature maps z^0; then come ``depth``
residual blocks of one of the three kinds of :class:`~meanfield.core.architecture.Block`, each with
one k x k convolution W^l of ``channels`` to ``channels`` (no bias):

=========  ==========================================  ===========
``norm``   block                                       paper
=========  ==========================================  ===========
none       z^l = z^{l-1} + f(W^l * z^{l-1})            Fig. 1a
bn_post    z^l = z^{l-1} + f(W^l * BN(z^{l-1}))        Fig. 1b
bn_pre     z^l = z^{l-1} + W^l * f(BN(z^{l-1}))        Fig. 4
=========  ==========================================  ===========

(``residual=False`` drops the z^{l-1} term: the plain network), then global average pooling
and a dense head to the 10 classes. The defaults are the paper's: 100 blocks of 8x8
convolutions with 16 channels and ReLU. A block with ``shortcut`` = k has k convolutions
per branch, the unit above repeated (``Conv_0`` ... ``Conv_{k-1}``, docs/theory.md §9), and
``final_activation=False`` drops the f after the last.

The companion inits (:data:`ZOO_INITS`, rules in :func:`meanfield.inits.branch_init` at the
conv's fan-in): ``fixup`` adds Fixup's scalar biases (0) before each convolution and
activation and a scalar multiplier (1) and bias (0) at the end of the branch, and starts the
head at zero; ``skipinit`` and ``rezero`` end every branch with a learned scalar started at 0
(``branch_scale`` gives it another start, for any init); ``weight_norm`` wraps each
convolution in ``flax.linen.WeightNorm`` (w = g v/||v|| per output channel, g started at
sqrt(γ)).

Initialization. The block kernels come from :mod:`meanfield.inits` with the fan-in of a
convolution, n = k·k·C (the paper's n = 8·8·16 = 1024): ``init="depth_scaled", c=1`` draws
N(0, 1/(8·8·16·100)) exactly as the paper's footnote 10 says (not truncated). The stem is He
(fan-in k·k·3), the head Glorot with zero bias, BN starts as the identity map (scale 1,
offset 0; running statistics 0 and 1).

Choices the paper leaves open, made here and configurable:

* ``padding="circular"``: every output position sees a full k x k window, so the network is
  translation-equivariant and the spatially averaged second moments follow the mean-field
  recursion of the same fan-in exactly for linear blocks (docs/training.md). ``"same"`` is
  zero padding (for an even k, 3 before and 4 after, as Flax and XLA pad).
* BN normalizes each channel over the batch and all positions (the usual BatchNorm2d), with
  ε = 1e-5, momentum 0.9 for the running averages used at evaluation, and a learned scale and
  offset.

The blocks (:mod:`meanfield.training.convblocks`) are one ``nn.scan`` over the stacked parameters
(leading axis = block), so the program size does not grow with depth. Circular convolutions
run by the FFT where that is faster (:mod:`meanfield.training.fftconv`: the paper's 8x8
kernels on a CPU), with the same parameters. On CPU a scan of direct convolutions is
unrolled: XLA:CPU runs them inside a loop body 10-50x slower than straight-line ones
(docs/performance.md); the FFT path runs as fast in the loop.

Measurement. ``model.apply(..., taps=jnp.zeros(depth + 1))`` also returns the per-layer
statistics of z^l (l = 0..L) on the batch (``mean_z``, and ``log_m2_z``, ``log_unitvar_z`` as
natural logs, computed without overflow), and the gradient of any loss with respect to
``taps`` is the per-layer log(mean((dE/dz^l)²)): each tap is the identity forward and returns
that as its own cotangent (:mod:`meanfield.training.modelstats`).
:mod:`meanfield.training.initcheck` uses this.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from meanfield import Block
    >>> cfg = ResNetConfig(block=Block("relu", "bn_post"), depth=3, channels=4, kernel_size=3)
    >>> model = ResNet(cfg)
    >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
    >>> jax.tree_util.tree_map(jnp.shape, variables["params"]["blocks"]["Conv_0"])
    {'kernel': (3, 3, 3, 4, 4)}
    >>> model.apply(variables, jnp.zeros((2, 32, 32, 3)), train=False).shape
    (2, 10)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from meanfield import inits, layers
from meanfield.core import architecture as arch
from meanfield.core.architecture import Block
from meanfield.training.convblocks import FLAX_PADDING, ResidualBlock, RisottoBlock
from meanfield.training.fftconv import CONV_METHODS, CircularConv, uses_fft
from meanfield.training.modelstats import gradient_tap, layer_stats

# Re-exported for the users of meanfield.training.models (they lived here before).
from meanfield.training.modelstats import log_mean_square as log_mean_square
from meanfield.training.seedmap import SEED_MAPS, map_seeds, seed_map_for_backend

__all__ = [
    "CONV_INITS",
    "PADDINGS",
    "SEED_MAPS",
    "ResNet",
    "ResNetConfig",
    "count_params",
    "map_seeds",
    "seed_map_for_backend",
]

PADDINGS = ("circular", "same")
# The companion schemes are branch rules (inits.branch_init); "orthogonal" makes the columns of
# the kernel flattened to (k·k·C_in, C_out) orthonormal (each output channel's weights a unit
# vector, α = 1).
CONV_INITS = (
    "he",
    "glorot",
    "depth_scaled",
    "zero",
    "orthogonal",
    "fixup",
    "skipinit",
    "rezero",
    "weight_norm",
    "risotto",
)
ZOO_INITS = ("fixup", "skipinit", "rezero", "weight_norm")
# init="risotto" runs RISOTTO's own type-C block on looks-linear channels; this is the Block
# value that names it (two convolutions per branch, ReLU), though its ReLU comes after the sum.
RISOTTO_BLOCK = inits.RISOTTO_BLOCK


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """The network: block kind, sizes and initialization; frozen and validated.

    Example:
        >>> cfg = ResNetConfig(init="depth_scaled")
        >>> cfg.fan_in, round(cfg.var_w * cfg.fan_in * cfg.depth, 6)  # Var[w] = 1/(8·8·16·100)
        (1024, 1.0)
    """

    block: Block = Block(activation="relu", norm="none", residual=True)
    depth: int = 100  # L, residual blocks
    channels: int = 16  # C, feature maps of every block
    kernel_size: int = 8  # k, the convolutions are k x k
    init: str = "he"  # block kernels: one of CONV_INITS
    c: float = 1.0  # the c of depth_scaled, Var[w] = c / (k·k·C·L)
    padding: str = "circular"  # one of PADDINGS
    num_classes: int = 10
    branch_scale: float | None = None  # a learned β on every branch, started here (SkipInit)

    def __post_init__(self):
        if not isinstance(self.block, (Block, layers.Layer)):
            raise ValueError(
                "ResNetConfig.block must be a meanfield.Block or a meanfield.layers tree, "
                f"got {self.block!r}"
            )
        for name in ("depth", "channels", "kernel_size", "num_classes"):
            object.__setattr__(self, name, arch.static_int(name, getattr(self, name)))
        if self.init not in CONV_INITS:
            raise ValueError(f"init must be one of {CONV_INITS}, got {self.init!r}")
        arch.check_positive("c", self.c)
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        object.__setattr__(self, "c", float(self.c))
        if self.branch_scale is not None:
            object.__setattr__(self, "branch_scale", float(self.branch_scale))
        if self.init == "risotto":
            if self.block != RISOTTO_BLOCK or self.branch_scale is not None:
                raise ValueError(
                    "init='risotto' is RISOTTO's type-C block (z -> relu(W2 relu(W1 z) + z) on "
                    f"looks-linear channels): give block={RISOTTO_BLOCK!r} and no branch_scale, "
                    f"got block={self.block!r}, branch_scale={self.branch_scale!r}"
                )
            return
        _ = self.rule  # validates branch_scale against the scheme (e.g. SkipInit's 1/sqrt(L))

    @property
    def rule(self) -> inits.BranchInit:
        """The branch rule of ``init`` at fan-in k·k·C (:func:`meanfield.inits.branch_init`):
        per-layer variances, law and β. For he/glorot/depth_scaled/zero it is the kernel
        initializer's variance (Glorot with the conv's own fan-out)."""
        if self.init in ZOO_INITS:
            with jax.ensure_compile_time_eval():  # plain numbers, also inside a traced model
                rule = inits.branch_init(
                    self.init,
                    width=self.fan_in,
                    depth=self.depth,
                    activations=layers.dense_activations(self.tree),
                    c=self.c,
                    branch_scale=self.branch_scale,
                )
                return rule._replace(
                    var_w=tuple(float(v) for v in rule.var_w), scale=float(rule.scale)
                )
        with jax.ensure_compile_time_eval():
            v = self.var_w
        return inits.var_w_rule(
            v,
            shortcut=layers.dense_count(self.tree),
            branch_scale=self.branch_scale,
            scheme=self.init,
            law="orthogonal" if self.init == "orthogonal" else "gaussian",
        )

    @property
    def tree(self) -> layers.Layer:
        """The block's :mod:`meanfield.layers` tree (a preset's, or the tree given)."""
        return layers.as_tree(self.block)

    @property
    def has_recursion(self) -> bool:
        """Whether the mean-field recursion of ``block`` describes this network (not for
        RISOTTO's own block, whose exact statement is that every block maps y to M y)."""
        return self.init != "risotto"

    @property
    def learned_scale(self) -> bool:
        """Whether every branch ends with a learned scalar β (SkipInit, ReZero, or any init
        with ``branch_scale`` given)."""
        return self.init in ("skipinit", "rezero") or self.branch_scale is not None

    @property
    def fan_in(self) -> int:
        """n = k·k·C, the fan-in of a block convolution."""
        return self.kernel_size**2 * self.channels

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        k, ch = self.kernel_size, self.channels
        return (k, k, ch, ch)

    @property
    def var_w(self) -> float:
        """Var[w] of one block-kernel entry under ``init`` (what the recursions take); for the
        companion schemes, whose layers differ, that of the branch's first layer."""
        if self.init in ZOO_INITS:
            return float(self.rule.var_w[0])
        if self.init == "risotto":
            return math.nan  # structured, not i.i.d.: no single variance
        if self.init == "orthogonal":  # unit columns of length k·k·C: α = 1
            return 1.0 / self.fan_in
        k, _, c_in, c_out = self.kernel_shape
        return float(
            inits.var_w(self.init, fan_in=k * k * c_in, fan_out=c_out, depth=self.depth, c=self.c)
        )

    def kernel_init(self, position: int = 0) -> inits.Initializer:
        """The initializer of the branch's kernel ``position`` (0..k-1); for weight_norm that
        of the direction v (only its direction matters)."""
        if self.init == "orthogonal":  # QR with the sign fix (Haar) on the flattened kernel
            return jax.nn.initializers.orthogonal()
        if self.init not in ZOO_INITS:
            return inits.get(self.init, depth=self.depth, c=self.c)
        rule = self.rule
        v = 1.0 / self.fan_in if rule.law == "weight_norm" else float(rule.var_w[position])
        if v == 0.0:
            return inits.zero

        def init(key, shape, dtype=jnp.float32):
            return inits.normal(key, shape, v, dtype)

        return init

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["block"] = self.block.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResNetConfig:
        d = dict(d)
        d["block"] = layers.network_from_name(d["block"])
        return cls(**d)


class ResNet(nn.Module):
    """The paper's network (module docstring). ``dtype`` is the computation type (bfloat16 for
    mixed precision; parameters stay float32); ``unroll`` the scan unrolling (None: all
    blocks on CPU, 1 elsewhere); ``conv`` how circular convolutions are computed, one of
    :data:`~meanfield.training.fftconv.CONV_METHODS` (``"auto"``: by the FFT where
    :func:`~meanfield.training.fftconv.fft_is_faster` says so, e.g. the paper's 8x8 kernels on
    a CPU; the parameters are the same either way)."""

    config: ResNetConfig
    dtype: Any = jnp.float32
    unroll: int | None = None
    conv: str = "auto"

    @nn.compact
    def __call__(self, x, *, train: bool, taps: jax.Array | None = None):
        cfg = self.config
        measure = taps is not None
        if measure and taps.shape != (cfg.depth + 1,):
            raise ValueError(
                f"taps must have shape (depth + 1,) = ({cfg.depth + 1},), got {taps.shape}"
            )
        if self.conv not in CONV_METHODS:
            raise ValueError(f"conv must be one of {CONV_METHODS}, got {self.conv!r}")
        z = CircularConv(
            cfg.channels,
            (cfg.kernel_size, cfg.kernel_size),
            padding=FLAX_PADDING[cfg.padding],
            use_bias=False,
            kernel_init=inits.he_normal,
            dtype=self.dtype,
            method=self.conv,
            name="stem",
        )(x).astype(jnp.float32)
        risotto = cfg.init == "risotto"
        if risotto:  # looks-linear channels [relu(y); relu(-y)] carry the signal y
            z = jax.nn.relu(jnp.concatenate([z, -z], axis=-1))
        stats0 = None
        if measure:
            stats0 = layer_stats(z)
            z = gradient_tap(z, taps[0])
        unroll = self.unroll
        if unroll is None:  # XLA:CPU's direct convolutions are slow in a loop, FFTs are not
            k = (cfg.kernel_size, cfg.kernel_size)
            direct = not uses_fft(self.conv, FLAX_PADDING[cfg.padding], k, cfg.channels)
            unroll = cfg.depth if jax.default_backend() == "cpu" and direct else 1
        block_args = (cfg, measure) if risotto else (cfg, train, measure)
        block_args += (self.dtype, self.conv)
        blocks = nn.scan(
            RisottoBlock if risotto else ResidualBlock,
            variable_axes={"params": 0, "batch_stats": 0},
            split_rngs={"params": True},
            in_axes=0,
            length=cfg.depth,
            unroll=unroll,
        )(*block_args, name="blocks")
        tap_in = taps[1:] if measure else jnp.zeros((cfg.depth,), jnp.float32)
        z, stats = blocks(z, tap_in)
        if risotto:  # read the signal back: y = relu(y) - relu(-y)
            z = z[..., : cfg.channels] - z[..., cfg.channels :]
        pooled = jnp.mean(z.astype(jnp.float32), axis=(1, 2))
        head_init = inits.zero if cfg.init == "fixup" else inits.glorot_normal  # Fixup: logits 0
        logits = nn.Dense(cfg.num_classes, kernel_init=head_init, dtype=jnp.float32, name="head")(
            pooled
        )
        if not measure:
            return logits
        stats = {k: jnp.concatenate([stats0[k][None], v]) for k, v in stats.items()}
        return logits, stats


def count_params(config: ResNetConfig) -> int:
    """Trainable parameters: stem k·k·3·C; each block k_s convolutions k·k·C·C (k_s the
    shortcut depth), + 2C per BN (scale and offset), + C per weight-normalized kernel (g),
    + Fixup's 2k_s + 2 scalars (k_s + 1 without the last activation), + 1 for a learned
    branch scale; head C·classes + classes."""
    tree = config.tree
    k, c, m = config.kernel_size, config.channels, layers.dense_count(tree)
    if config.init == "risotto":  # two convolutions of 2C -> 2C channels per block
        block = 2 * k * k * (2 * c) ** 2
        return k * k * 3 * c + config.depth * block + c * config.num_classes + config.num_classes
    block = m * k * k * c * c
    block += 2 * c * sum(isinstance(x, layers.BatchNorm) for x in layers.walk(tree))
    if config.init == "weight_norm":
        block += m * c
    if config.init == "fixup" and not layers.has_batchnorm(tree):
        nonlinear = [x for x in layers.walk(tree) if isinstance(x, layers.Activation)]
        block += m + sum(not x.identity for x in nonlinear) + 2
    if config.learned_scale:
        block += 1
    return k * k * 3 * c + config.depth * block + c * config.num_classes + config.num_classes
