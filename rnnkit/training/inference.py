"""A trained run applied to data: scores for ``rnnkit evaluate``, class
probabilities for ``rnnkit predict``. New data always goes through the
checkpoint's own scaler, learned on the run's training split."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from rnnkit.data.dataset import Sequences, check_compatible
from rnnkit.data.sources import BUILTIN, read_file
from rnnkit.data.splits import prepare
from rnnkit.training.checkpoint import Checkpoint
from rnnkit.training.distributed import World
from rnnkit.training.loop import Evaluation, TensorSet, evaluate, predict_logits


def evaluation_set(checkpoint: Checkpoint, **data_options: Any) -> Sequences:
    """The labelled sequences ``rnnkit evaluate`` scores, unscaled.

    With no options, the run's own test set, rebuilt exactly. ``data_options``
    (fields of :class:`~rnnkit.data.DataConfig`) replace the run's: a built-in
    set or ``test_data`` gives that set's test split; a file given as ``data``
    alone is scored whole.
    """
    config = replace(checkpoint.config.data, **data_options)
    if "data" in data_options and config.data not in BUILTIN and config.test_data is None:
        return read_file(config.data, labelled=True, csv_features=config.csv_features)
    return prepare(config).test


def score(checkpoint: Checkpoint, data: Sequences, device: torch.device) -> Evaluation:
    """Loss, accuracy and confusion matrix of the checkpoint's model on ``data``."""
    check_compatible(data, checkpoint.input_size, checkpoint.num_classes, "evaluation data")
    model = checkpoint.build_model(device)
    return evaluate(model, TensorSet.of(checkpoint.scaler(data), device), checkpoint.num_classes, World())


def predict_proba(checkpoint: Checkpoint, data: Sequences, device: torch.device) -> np.ndarray:
    """Class probabilities ``(N, C)`` of the checkpoint's model for ``data``."""
    check_compatible(data, checkpoint.input_size, checkpoint.num_classes, "input")
    model = checkpoint.build_model(device)
    logits = predict_logits(model, TensorSet.of(checkpoint.scaler(data), device))
    return torch.softmax(logits, dim=1).cpu().numpy()
