"""Results and figures: atomic results files that carry their configuration and versions
(:mod:`~meanfield.io.results`, which imports no science and sits below everything), and the
figure builders by family (:mod:`~meanfield.io.plots`, matplotlib loaded only when a figure is
made)."""
