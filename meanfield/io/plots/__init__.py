"""Figure builders: records in (as made by :mod:`meanfield.analysis.sweeps` or read back from JSON),
``matplotlib.figure.Figure`` out. Nothing here computes science, shows a window or touches
pyplot's global state; callers save the figures (:func:`save_figure`).

The builders are grouped by figure family, each family in its own module:

=================================  ==========================================================
:mod:`meanfield.io.plots.style`       colors, labels, closed-form line styles, the figure grid,
                                   log10 error bars (shared by every family)
:mod:`meanfield.io.plots.saving`      :func:`figure_formats`, :func:`add_formats_argument`,
                                   :func:`save_figure`
:mod:`meanfield.io.plots.depth`       :func:`profile_figure`, :func:`depth_figure`,
                                   :func:`gradient_figure`
:mod:`meanfield.io.plots.finitewidth` :func:`width_sweep_figure`, :func:`batch_sweep_figure`
:mod:`meanfield.io.plots.calibration` :func:`calibration_figure`
:mod:`meanfield.io.plots.activations` :func:`activation_figure`
:mod:`meanfield.io.plots.inits`       :func:`init_zoo_figure`, :func:`solve_init_figure`
:mod:`meanfield.io.plots.spectra`     :func:`hessian_figure`, :func:`jacobian_figure`
:mod:`meanfield.io.plots.training`    :func:`learning_curves_figure`, :func:`initcheck_figure`,
                                   :func:`init_comparison_figure`
=================================  ==========================================================

matplotlib is imported only inside the functions that make or save a figure, so importing
this package (or :mod:`meanfield`) leaves matplotlib unloaded.
"""

from meanfield.io.plots.activations import activation_figure
from meanfield.io.plots.calibration import REPORT_STAT_COLORS, calibration_figure
from meanfield.io.plots.depth import DEPTH_COLORS, depth_figure, gradient_figure, profile_figure
from meanfield.io.plots.finitewidth import batch_sweep_figure, width_sweep_figure
from meanfield.io.plots.inits import init_zoo_figure, solve_init_figure
from meanfield.io.plots.saving import add_formats_argument, figure_formats, save_figure
from meanfield.io.plots.spectra import SHORTCUT_COLORS, hessian_figure, jacobian_figure
from meanfield.io.plots.style import (
    CYCLE,
    INIT_COLORS,
    INIT_LABELS,
    KIND_STYLE,
    STAT_LABELS,
    log10_errorbars,
)
from meanfield.io.plots.training import (
    INITCHECK_ROWS,
    SETUP_COLORS,
    init_comparison_figure,
    initcheck_figure,
    learning_curves_figure,
)

__all__ = [
    "CYCLE",
    "activation_figure",
    "DEPTH_COLORS",
    "INITCHECK_ROWS",
    "INIT_COLORS",
    "INIT_LABELS",
    "KIND_STYLE",
    "REPORT_STAT_COLORS",
    "SETUP_COLORS",
    "SHORTCUT_COLORS",
    "STAT_LABELS",
    "add_formats_argument",
    "batch_sweep_figure",
    "calibration_figure",
    "depth_figure",
    "figure_formats",
    "gradient_figure",
    "hessian_figure",
    "init_comparison_figure",
    "init_zoo_figure",
    "initcheck_figure",
    "jacobian_figure",
    "learning_curves_figure",
    "log10_errorbars",
    "profile_figure",
    "save_figure",
    "solve_init_figure",
    "width_sweep_figure",
]
