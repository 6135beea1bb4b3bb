"""Training the sequence classifier: the main job of ``rnnkit train``.

* :mod:`~rnnkit.training.config` — :class:`RunConfig` (data, model, optimiser).
* :mod:`~rnnkit.training.model` — :class:`SequenceClassifier` and :class:`ModelConfig`.
* :mod:`~rnnkit.training.loop` — one epoch of training, one pass of evaluation.
* :mod:`~rnnkit.training.trainer` — a whole run: epochs, selection, test, outputs.
* :mod:`~rnnkit.training.checkpoint` — saving and safely loading checkpoints.
* :mod:`~rnnkit.training.rundir` — the run directory's files.
* :mod:`~rnnkit.training.plots` — curves, confusion matrix, sample sequences.
* :mod:`~rnnkit.training.distributed` — ``torchrun`` process groups.
* :mod:`~rnnkit.training.inference` — a trained run applied to new data.
"""

from rnnkit.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rnnkit.training.config import OptimConfig, RunConfig
from rnnkit.training.model import CELLS, ModelConfig, SequenceClassifier
from rnnkit.training.trainer import Callbacks, Outcome, Progress, train

__all__ = [
    "CELLS",
    "Callbacks",
    "Checkpoint",
    "ModelConfig",
    "OptimConfig",
    "Outcome",
    "Progress",
    "RunConfig",
    "SequenceClassifier",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
