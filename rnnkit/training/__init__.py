"""Training the sequence classifier: the main job of ``rnnkit train``.

* :mod:`~rnnkit.training.config` — :class:`RunConfig` (data, model, optimiser), torch-free.
* :mod:`~rnnkit.training.model` — :class:`SequenceClassifier`.
* :mod:`~rnnkit.training.loop` — one epoch of training, one pass of evaluation.
* :mod:`~rnnkit.training.trainer` — a whole run: epochs, selection, test, outputs.
* :mod:`~rnnkit.training.checkpoint` — saving and safely loading checkpoints.
* :mod:`~rnnkit.training.rundir` — the run directory's files.
* :mod:`~rnnkit.training.plots` — curves, confusion matrix, sample sequences.
* :mod:`~rnnkit.training.distributed` — ``torchrun`` process groups.
* :mod:`~rnnkit.training.inference` — a trained run applied to new data.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnkit.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from rnnkit.training.config import ModelConfig, OptimConfig, RunConfig
    from rnnkit.training.model import SequenceClassifier
    from rnnkit.training.trainer import Callbacks, Outcome, Progress, train

_MODULES = {
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "ModelConfig": "config", "OptimConfig": "config", "RunConfig": "config",
    "SequenceClassifier": "model",
    "Callbacks": "trainer", "Outcome": "trainer", "Progress": "trainer", "train": "trainer",
}
"""Where each name of the package lives: loaded on first use (most import
torch), so that the command line reads the configurations without it."""

__all__ = [
    "Callbacks", "Checkpoint", "ModelConfig", "OptimConfig", "Outcome", "Progress",
    "RunConfig", "SequenceClassifier", "load_checkpoint", "save_checkpoint", "train",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(f"rnnkit.training.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
