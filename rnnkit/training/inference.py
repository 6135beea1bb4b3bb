"""A trained run applied to data: scores for ``rnnkit evaluate``, class
probabilities for ``rnnkit predict``. New data always goes through the
checkpoint's own scaler, learned on the run's training split."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from rnnkit.data.dataset import Sequences, check_compatible, plural
from rnnkit.data.sources import BUILTIN, read_file
from rnnkit.data.splits import prepare_test
from rnnkit.errors import UserError
from rnnkit.training.checkpoint import Checkpoint
from rnnkit.training.distributed import World
from rnnkit.training.loop import Evaluation, TensorSet, evaluate, predict_logits


def evaluation_set(checkpoint: Checkpoint, **data_options: Any) -> Sequences:
    """The labelled sequences ``rnnkit evaluate`` scores, unscaled.

    With no options, the run's own test set, rebuilt exactly as the run drew
    it (split seed, fractions, ``--limit``). ``data_options`` (fields of
    :class:`~rnnkit.data.DataConfig`) replace the run's:

    * a file, as ``test_data`` or as ``data``, is read alone and scored whole:
      neither the run's training data nor its ``--limit`` is involved;
    * a built-in set as ``data`` gives the test set that the run's split
      options (test fraction, split seed, limit) draw from it: for the run's
      own set, its own test set.

    CSV rows are read in steps of the model's features; a ``csv_features``
    option must agree with them (see :func:`features_per_step`).

    Raises:
        UserError: both ``data`` and ``test_data`` given, or unusable data.
    """
    if "data" in data_options and "test_data" in data_options:
        raise UserError("--data and --test-data both name the data to score; give one of them")
    config = replace(checkpoint.config.data, **data_options)
    file = data_options.get("test_data")
    if "data" in data_options and config.data not in BUILTIN:
        file = config.data
    if file is not None:
        return read_input(checkpoint, file, labelled=True, csv_features=data_options.get("csv_features"))
    features_per_step(checkpoint, data_options.get("csv_features"))  # a given one must agree
    if "data" in data_options:
        config = replace(config, test_data=None)  # the run's own test file goes with its data
    return prepare_test(config)


def read_input(
    checkpoint: Checkpoint, path: str, *, labelled: bool, csv_features: int | None = None
) -> Sequences:
    """The sequences in a ``.npz`` or ``.csv`` file, for the checkpoint's model:
    a CSV row is read as steps of as many values as the model reads
    (``csv_features``, the user's ``--csv-features``, must agree)."""
    features = features_per_step(checkpoint, csv_features)
    return read_file(path, labelled=labelled, csv_features=features)


def features_per_step(checkpoint: Checkpoint, csv_features: int | None = None) -> int:
    """``F``, the features per step of the checkpoint's model; a
    ``--csv-features`` given as ``csv_features`` must be the same number.

    Raises:
        UserError: ``csv_features`` is given and is not ``F``.
    """
    if csv_features is not None and csv_features != checkpoint.input_size:
        raise UserError(
            f"--csv-features {csv_features} does not fit the run: its model reads "
            f"{plural(checkpoint.input_size, 'feature')} per step (leave --csv-features out "
            "to read CSV rows that way)"
        )
    return checkpoint.input_size


def score(checkpoint: Checkpoint, data: Sequences, device: torch.device) -> Evaluation:
    """Loss, accuracy and confusion matrix of the checkpoint's model on ``data``."""
    model, tensors = _model_and_data(checkpoint, data, device, "evaluation data")
    return evaluate(model, tensors, checkpoint.num_classes, World())


def predict_proba(checkpoint: Checkpoint, data: Sequences, device: torch.device) -> np.ndarray:
    """Class probabilities ``(N, C)`` of the checkpoint's model for ``data``."""
    model, tensors = _model_and_data(checkpoint, data, device, "input")
    return torch.softmax(predict_logits(model, tensors), dim=1).cpu().numpy()


def _model_and_data(
    checkpoint: Checkpoint, data: Sequences, device: torch.device, role: str
) -> tuple[torch.nn.Module, TensorSet]:
    """The checkpoint's model and ``data``, checked against it (``role`` names
    the data in messages) and scaled with its scaler, both on ``device``."""
    check_compatible(data, checkpoint.input_size, checkpoint.num_classes, role)
    return checkpoint.build_model(device), TensorSet.of(checkpoint.scaler(data), device)


class RawInputClassifier(torch.nn.Module):
    """A checkpoint's classifier with its scaling in front: raw sequences in,
    logits and class probabilities out, for export (``rnnkit export``).

    Inputs: ``x (N, T, F)`` and, optionally, ``lengths (N,)`` int64, the valid
    steps of each padded sequence (all ``T`` when omitted). Outputs:
    ``(scores, probabilities)``, each ``(N, C)``.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        self.classifier = checkpoint.build_model("cpu")
        self.register_buffer("mean", torch.from_numpy(checkpoint.scaler.mean))
        self.register_buffer("std", torch.from_numpy(checkpoint.scaler.std))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.classifier((x - self.mean) / self.std, lengths)
        return scores, torch.softmax(scores, dim=1)
