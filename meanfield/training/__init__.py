"""The empirical half: CIFAR-10 (:mod:`~meanfield.training.data`, read through a restricted
unpickler in :mod:`~meanfield.training.batchfile`), the paper's conv ResNet built from the
same layer tree as the simulator (:mod:`~meanfield.training.models`,
:mod:`~meanfield.training.convblocks`), the trainer with K seeds in one program and its
checkpoints (:mod:`~meanfield.training.train`, :mod:`~meanfield.training.trainer`,
:mod:`~meanfield.training.checkpoints`), and the prediction check that compares the real
network at initialization with the mean field (:mod:`~meanfield.training.initcheck`), the
only module that imports both the engines and the trainer."""
