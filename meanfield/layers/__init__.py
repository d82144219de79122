"""The network language: every layer kind defined once, with what every engine needs from it.

A network is ``depth`` copies of one *block*, a small tree of layers; the statistics are
recorded at block boundaries (layer l = 0..L). The tree is built from five layer kinds and
two combinators:

==========================  ==================================================================
``Dense()``                 u = a W, W (n x n) drawn by the rule an init assigns to this Dense
                            (by its position in the block: variance, law, see
                            :func:`meanfield.inits.branch_init`)
``Activation(f, slope)``    f elementwise: a name (identity, relu, leaky_relu with its slope,
                            abs, tanh, erf, gelu, gelu_tanh, silu, softplus, elu, sigmoid,
                            sin) or any elementwise JAX function
``BatchNorm()``             per unit over the batch: (z - mean) / std, no ε, no affine
``LayerNorm()``             per input over the units: (z - mean) / std
``RMSNorm()``               per input over the units: z / rms
``serial(*layers)``         the layers one after another
``residual(branch, scale)`` z + β branch(z); β = ``scale``, or the init's branch scale if None
==========================  ==================================================================

so ``Block("relu", "bn_pre", shortcut=2)`` is
``residual(serial(BatchNorm(), Activation("relu"), Dense(), BatchNorm(), Activation("relu"),
Dense()))`` (:func:`block_tree`), and a tree that is not a preset is as good as one::

    unit = serial(BatchNorm(), Activation("relu"), Dense())
    meanfield.recursions.profile(residual(serial(unit, unit)), depth=100, width=256, var_w=2/256)

Each kind carries, in its class below:

* ``finite(x, net)``: its map on one sampled network's (batch, width) signal, used by both
  Monte-Carlo engines. ``Dense`` asks the engine for the product (``net.dense``), so explicit
  and weight-free weights are one switch. Signals are carried divided by the block input's
  scale (``Signal.relative``) until a norm makes them scale-free, which is exact for
  positively homogeneous layers (docs/theory.md §6); other activations are applied to the
  signal at its absolute scale.
* ``mean_field(s, mf)``: its exact infinite-width forward map on the :class:`State` (second
  moment q, mean m, pooled variance v, kernel gap q - k with k the cross moment of distinct
  inputs, all in log form relative to the block input), and ``backward(ct, mf)``, its rule for
  the cotangent's second moment p and batch-sum moment S (:class:`Cotangent`).
* ``conv(v, net)``: its convolutional Flax counterpart on a (batch, height, width, channels)
  array, inside the trainer's block module (:mod:`meanfield.training.models`: ``net.conv`` is a k x
  k convolution with the init's kernel, ``net.batch_norm`` Flax's BatchNorm).
* ``flags(f)``: what the mean field knows about its output (:class:`Flags`), so that a tree
  whose mean field is not exact (an activation of a non-Gaussian signal, a BatchNorm whose
  units differ in their variance over inputs) is refused before anything is computed.

No engine holds a ladder over layer kinds: a new activation or norm is one class here.
"""

from meanfield.layers.activation import Activation
from meanfield.layers.base import (
    CENTRED_INPUT_FLAGS,
    INPUT_FLAGS,
    Cotangent,
    Flags,
    Layer,
    Signal,
    State,
    merge,
    times,
)
from meanfield.layers.combinators import Residual, Serial, residual, serial
from meanfield.layers.dense import Dense
from meanfield.layers.norm import BatchNorm, LayerNorm, RMSNorm
from meanfield.layers.trees import (
    as_tree,
    block_tree,
    check_mean_field,
    dense_activations,
    dense_count,
    from_name,
    has_batchnorm,
    network_from_name,
    preset_of,
    walk,
)

__all__ = [
    "CENTRED_INPUT_FLAGS",
    "INPUT_FLAGS",
    "Activation",
    "BatchNorm",
    "Cotangent",
    "Dense",
    "Flags",
    "Layer",
    "LayerNorm",
    "RMSNorm",
    "Residual",
    "Serial",
    "Signal",
    "State",
    "as_tree",
    "block_tree",
    "check_mean_field",
    "dense_activations",
    "dense_count",
    "from_name",
    "has_batchnorm",
    "merge",
    "network_from_name",
    "preset_of",
    "residual",
    "serial",
    "times",
    "walk",
]
