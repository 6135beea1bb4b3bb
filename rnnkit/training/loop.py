"""One epoch of training and one pass of evaluation, on one process or many.

With ``K`` processes every one draws the same shuffled order, cuts it into
the same global batches of ``batch_size`` sequences, and takes every K-th
sequence of each batch. Each process's loss is its share of the batch's
*sum* of losses scaled by ``K / batch size``, so that DistributedDataParallel's
gradient average is exactly the single-process gradient of the whole batch,
whatever ``K``: the runs differ only by float rounding. A process whose share
of a short last batch is empty still takes part, with a zero-weighted example.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.dataset import Sequences
from rnnkit.training.distributed import World

EVAL_BATCH_SIZE = 1024
"""Sequences per forward pass when no gradient is needed."""


class TensorSet(NamedTuple):
    """:class:`~rnnkit.data.Sequences` as tensors: ``x (N, T, F)`` and ``y (N,)``
    on the training device, ``lengths (N,)`` on the CPU (where packing needs them)."""

    x: Tensor
    y: Tensor | None
    lengths: Tensor | None

    @classmethod
    def of(cls, data: Sequences, device: torch.device) -> TensorSet:
        return cls(
            torch.from_numpy(data.x).to(device),
            None if data.y is None else torch.from_numpy(data.y).to(device),
            None if data.lengths is None else torch.from_numpy(data.lengths),
        )

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(x, y, lengths)`` of the sequences at ``index``, with ``x`` cut to
        the longest of them."""
        on_device = index.to(self.x.device)  # x and y live together, lengths on the CPU
        y = None if self.y is None else self.y[on_device]
        if self.lengths is None:
            return self.x[on_device], y, None
        lengths = self.lengths[index]
        return self.x[on_device, : int(lengths.max())], y, lengths


def derived_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (run seed, epoch, rank...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> np.uint64(1))


BatchHook = Callable[[int, float, float, float], None]
"""``hook(batches_done, running_loss, running_accuracy, sequences_per_second)``."""


def train_epoch(
    model: nn.Module,
    data: TensorSet,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    batch_size: int,
    seed: int,
    clip_grad: float,
    world: World,
    on_batch: BatchHook,
) -> tuple[float, float]:
    """One pass over ``data`` in shuffled batches; ``model`` may be DDP-wrapped.

    The order is drawn from ``(seed, epoch)`` and dropout from ``(seed, epoch,
    rank)``, so an epoch replays identically however the run got there
    (``--resume`` included).

    Returns:
        ``(mean loss, accuracy)`` over the epoch's sequences, all processes together.
    """
    model.train()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(derived_seed(seed, epoch)))
    torch.manual_seed(derived_seed(seed, epoch, world.rank))
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, sequences
    started = time.perf_counter()
    for number, start in enumerate(range(0, len(data), batch_size), 1):
        batch = order[start : start + batch_size]
        mine, weight = batch[world.rank :: world.size], 1.0
        if len(mine) == 0:
            mine, weight = batch[:1], 0.0
        x, y, lengths = data.batch(mine)
        logits = model(x, lengths)  # (n, C)
        losses = F.cross_entropy(logits, y, reduction="none")  # (n,)
        loss = losses.sum() * (weight * world.size / len(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()

        correct = (logits.argmax(1) == y).sum()
        totals += torch.stack([losses.sum().detach().cpu(), correct.cpu(), torch.tensor(len(mine))]) * weight
        seen = max(float(totals[2]), 1.0)
        on_batch(
            number,
            float(totals[0]) / seen,
            float(totals[1]) / seen,
            seen * world.size / (time.perf_counter() - started),
        )
    totals = world.sum(totals)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


@dataclass(frozen=True)
class Evaluation:
    """Scores of a model on a labelled set.

    Attributes:
        loss: mean cross-entropy.
        accuracy: share of sequences classified right.
        confusion: int64 ``(C, C)``, row = true class, column = predicted class.
    """

    loss: float
    accuracy: float
    confusion: np.ndarray

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Recall of each class; ``None`` for a class absent from the set."""
        totals = self.confusion.sum(1)
        return [
            float(self.confusion[c, c] / totals[c]) if totals[c] else None
            for c in range(len(totals))
        ]


@torch.no_grad()
def predict_logits(model: nn.Module, data: TensorSet, index: Tensor | None = None) -> Tensor:
    """Logits ``(n, C)`` of the sequences at ``index`` (all when ``None``), in
    evaluation mode; ``model`` is the plain module, not a DDP wrapper."""
    model.eval()
    index = torch.arange(len(data)) if index is None else index
    chunks = [
        model(*_inputs(data, index[start : start + EVAL_BATCH_SIZE]))
        for start in range(0, len(index), EVAL_BATCH_SIZE)
    ]
    return torch.cat(chunks) if chunks else data.x.new_zeros(0, model.classifier.out_features)


def _inputs(data: TensorSet, index: Tensor) -> tuple[Tensor, Tensor | None]:
    x, _, lengths = data.batch(index)
    return x, lengths


def evaluate(model: nn.Module, data: TensorSet, num_classes: int, world: World) -> Evaluation:
    """Loss, accuracy and confusion matrix of ``model`` on ``data``; each
    process scores every K-th sequence and the counts are summed."""
    assert data.y is not None
    shard = torch.arange(world.rank, len(data), world.size)
    logits = predict_logits(model, data, shard)
    y = data.y[shard.to(data.y.device)]
    loss_sum = F.cross_entropy(logits, y, reduction="sum").to(torch.float64).cpu().reshape(1)
    pairs = (y * num_classes + logits.argmax(1)).cpu()
    confusion = torch.bincount(pairs, minlength=num_classes * num_classes).to(torch.float64)
    totals = world.sum(torch.cat([loss_sum, confusion]))
    matrix = totals[1:].to(torch.int64).reshape(num_classes, num_classes).numpy()
    count = int(matrix.sum())
    return Evaluation(float(totals[0]) / count, int(np.trace(matrix)) / count, matrix)
