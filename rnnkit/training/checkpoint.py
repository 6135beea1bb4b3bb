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
import zipfile
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
            raise UserError(
                f"the checkpoint's weights do not fit its model: {first_line[0].strip()}{self._hint()}"
            ) from None
        return model.to(device).eval()

    def _hint(self) -> str:
        """Why the weights may not fit: a layer-norm run saved before the
        classifier gave its layer a constant feature (``F`` inputs, not ``F + 1``)."""
        first = self.model.get("recurrent.weight_ih_l0")
        if self.config.model.layer_norm and first is not None and first.shape[1] == self.input_size:
            return (
                "; this --layer-norm run was saved by an older rnnkit, whose layer had no constant "
                "input feature: train it again"
            )
        return ""


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
        UserError: the file is missing; or it cannot be read as one (corrupt,
            cut short, holding anything but plain data, or lacking what an
            rnnkit checkpoint holds): then one line, ``cannot read checkpoint
            PATH: it is damaged or not an rnnkit checkpoint (why)``.
    """
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    payload = _read_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = f"a {type(payload).__name__}" if not isinstance(payload, dict) else "a dictionary"
        raise _unreadable(path, f"it holds {what} without rnnkit's format mark")
    if not isinstance(payload.get("version"), int):
        raise _unreadable(path, "it has no version number")
    if payload["version"] != VERSION:
        raise UserError(
            f"{path} is a version {payload['version']} checkpoint; this rnnkit reads version {VERSION}"
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
    except KeyError as error:
        raise _unreadable(path, f"it has no {error} entry") from None
    except (TypeError, ValueError, UserError) as error:
        raise _unreadable(path, str(error)) from None


ZIP_MAGIC = b"PK\x03\x04"
"""The first bytes of the zip archive that ``torch.save`` writes."""


def _read_payload(path: Path) -> Any:
    """What ``torch.load(..., weights_only=True)`` reads from ``path``, after a
    check of the archive itself: torch's own errors for a damaged file are
    misleading (``[Errno 22] Invalid argument`` for a file cut short) or
    unsafe (advice to load it with ``weights_only=False``)."""
    try:
        with path.open("rb") as handle:
            start = handle.read(len(ZIP_MAGIC))
        if not start:
            raise _unreadable(path, "the file is empty")
        if start != ZIP_MAGIC:
            raise _unreadable(path, f"it is not the zip archive torch.save writes: it starts with {start!r}")
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, EOFError, UnicodeDecodeError):  # a name cut or flipped, too
        raise _unreadable(path, "its zip archive is cut short or altered") from None
    except OSError as error:
        raise _unreadable(path, error.strerror or str(error)) from None
    if broken is not None:
        raise _unreadable(path, f"its zip archive is altered: {broken} fails its checksum")
    try:
        with warnings.catch_warnings():
            # a plain pickle (not torch.save's format) draws this warning before being refused
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt file can fail in the unpickler in many ways
        raise _unreadable(path, _load_failure(error)) from None


def _load_failure(error: Exception) -> str:
    """Why ``torch.load`` refused a file, without torch's advice to turn
    ``weights_only`` off (which would run any code the file holds)."""
    text, marker, what = str(error), "WeightsUnpickler error:", ""
    if marker in text:  # the advice comes before the marker, the reason after it
        text, what = text.split(marker, 1)[1], "it holds more than tensors and plain data: "
    first_sentence = text.strip().split("\n", 1)[0].split(". ", 1)[0].strip().rstrip(".")
    return what + first_sentence if first_sentence else type(error).__name__


def _unreadable(path: Path, reason: str) -> UserError:
    return UserError(f"cannot read checkpoint {path}: it is damaged or not an rnnkit checkpoint ({reason})")
