"""Checkpoints: plain dictionaries of tensors, numbers and strings.

A checkpoint is written with ``torch.save`` and read back with
``torch.load(..., weights_only=True)``, which refuses anything but tensors
and plain containers, so opening a checkpoint never runs code from it. Each
one holds the run's configuration, the data scaling, the model weights and
the training progress; ``last.pt`` also holds the optimiser state that
``--resume`` needs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit.data.splits import Scaler
from rnnkit.errors import UserError
from rnnkit.training.config import RunConfig
from rnnkit.training.model import SequenceClassifier
from rnnkit.training.rundir import write_atomically

FORMAT = "rnnkit.SequenceClassifier"
VERSION = 1


@dataclass
class Checkpoint:
    """The contents of a checkpoint file.

    Attributes:
        config: the run's configuration.
        input_size: ``F``, features per step.
        num_classes: ``C``.
        scaler: the scaling learned on the training split, to apply to new data.
        model: the classifier's ``state_dict``.
        progress: the trainer's progress after the saved epoch (a plain dict,
            see :class:`rnnkit.training.trainer.Progress`).
        optimizer: the optimiser's ``state_dict``, or ``None`` (``best.pt``).
    """

    config: RunConfig
    input_size: int
    num_classes: int
    scaler: Scaler
    model: dict[str, torch.Tensor]
    progress: dict[str, Any]
    optimizer: dict[str, Any] | None = None

    def build_model(self, device: torch.device | str = "cpu") -> SequenceClassifier:
        """The classifier with the saved weights, in evaluation mode."""
        model = SequenceClassifier(self.config.model, self.input_size, self.num_classes)
        try:
            model.load_state_dict(self.model)
        except RuntimeError as error:
            first_line = str(error).splitlines()[1:2] or [str(error)]
            raise UserError(f"the checkpoint's weights do not fit its model: {first_line[0].strip()}") from None
        return model.to(device).eval()


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically: an interrupted save leaves
    the previous file whole."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": checkpoint.config.to_dict(),
        "input_size": checkpoint.input_size,
        "num_classes": checkpoint.num_classes,
        "scaler": {
            "mean": torch.from_numpy(checkpoint.scaler.mean),
            "std": torch.from_numpy(checkpoint.scaler.std),
        },
        "model": {name: tensor.detach().cpu() for name, tensor in checkpoint.model.items()},
        "progress": checkpoint.progress,
        "optimizer": checkpoint.optimizer,
    }
    write_atomically(path, lambda partial: torch.save(payload, partial))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        UserError: the file is missing, corrupt, holds anything but plain
            data, or is not an rnnkit classifier checkpoint.
    """
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():
            # a plain pickle (not torch.save's format) draws this warning before being refused
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt file can fail in the unpickler in many ways
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not an rnnkit classifier checkpoint")
    if payload.get("version") != VERSION:
        raise UserError(
            f"{path} is a version {payload.get('version')} checkpoint; this rnnkit reads version {VERSION}"
        )
    try:
        return Checkpoint(
            config=RunConfig.from_dict(payload["config"]),
            input_size=int(payload["input_size"]),
            num_classes=int(payload["num_classes"]),
            scaler=Scaler(
                np.asarray(payload["scaler"]["mean"], np.float32),
                np.asarray(payload["scaler"]["std"], np.float32),
            ),
            model=payload["model"],
            progress=payload["progress"],
            optimizer=payload["optimizer"],
        )
    except (KeyError, TypeError) as error:
        raise UserError(f"{path} is an incomplete checkpoint (missing {error})") from None
