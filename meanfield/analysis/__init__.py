"""What is built on the engines (recursion and Monte-Carlo): the init solver
(:mod:`~meanfield.analysis.solver`), finite-width sweeps and fits
(:mod:`~meanfield.analysis.finitewidth`), the experiments' sweeps
(:mod:`~meanfield.analysis.sweeps`, :mod:`~meanfield.analysis.initzoo`), the calibrated
report (:mod:`~meanfield.analysis.calibration`), and the companion papers' Hessian and
input-output Jacobian (:mod:`~meanfield.analysis.hessian`,
:mod:`~meanfield.analysis.jacobian`). Each returns plain records for :mod:`meanfield.io`.
Those that take a network take a preset Block or a :mod:`meanfield.layers` tree, and read
what they need of it (a BatchNorm? positively homogeneous?) from its layers
(:mod:`~meanfield.analysis.structure`)."""
