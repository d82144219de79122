"""The foundation every other part stands on: the frozen, validated names of a network and the
checks for sizes (:mod:`~meanfield.core.architecture`: ``Block``), the Gaussian expectations
of the activations (:mod:`~meanfield.core.gaussian`), and the engines' normal sampler
(:mod:`~meanfield.core.sampling`). It imports nothing else of the project."""
