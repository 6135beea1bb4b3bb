"""A whole training run: data, model, epochs, checkpoints, test and plots.

:func:`train` is what ``rnnkit train`` runs, on every process of a
``torchrun`` launch alike; only the main process writes the run directory
and reports to its :class:`Callbacks`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

import rnnkit
from rnnkit.data.sources import absolute_paths
from rnnkit.data.splits import Splits, prepare
from rnnkit.errors import UserError
from rnnkit.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rnnkit.training.config import RunConfig
from rnnkit.training.distributed import World
from rnnkit.training.loop import Evaluation, TensorSet, evaluate, predict_logits, train_epoch
from rnnkit.training.model import SequenceClassifier
from rnnkit.training.rundir import RunDir

SAMPLES_SHOWN = 12
"""Test sequences drawn in ``samples.png``."""


@dataclass
class Progress:
    """Where a run stands after ``epoch`` epochs; saved in every checkpoint.

    The best epoch has the highest validation accuracy, ties going to the lower
    validation loss; without a validation split every epoch is the best so far.
    """

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_accuracy: float | None = None
    best_loss: float | None = None
    stale_epochs: int = 0

    def record(self, row: dict[str, Any]) -> bool:
        """Add an epoch's metrics row; whether that epoch is the new best."""
        self.history.append(row)
        self.epoch = row["epoch"]
        accuracy, loss = row["val_accuracy"], row["val_loss"]
        better = (
            accuracy is None
            or self.best_accuracy is None
            or (accuracy, -loss) > (self.best_accuracy, -self.best_loss)
        )
        if better:
            self.best_epoch, self.best_accuracy, self.best_loss = self.epoch, accuracy, loss
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        return better

    def stopped_early(self, config: RunConfig) -> bool:
        patience = config.optim.patience
        return patience > 0 and self.stale_epochs >= patience

    def done(self, config: RunConfig) -> bool:
        return self.epoch >= config.optim.epochs or self.stopped_early(config)


class Callbacks:
    """What a run reports as it goes (on the main process only). This base
    class ignores everything; the command line shows it."""

    def on_start(self, splits: Splits, parameters: int, progress: Progress) -> None:
        """Before the first epoch (or the first resumed one)."""

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        """An epoch of ``batches`` optimiser steps begins."""

    def on_batch(self, done: int, loss: float, accuracy: float, rate: float) -> None:
        """``done`` batches of the epoch are over, with running loss and accuracy
        and ``rate`` sequences per second."""

    def on_epoch_end(self, row: dict[str, Any], best: bool) -> None:
        """An epoch's metrics row, and whether it is the best so far."""


@dataclass(frozen=True)
class Outcome:
    """What a finished run reports."""

    test: Evaluation
    progress: Progress
    stopped_early: bool
    parameters: int
    train_seconds: float


def train(
    config: RunConfig,
    run: RunDir,
    world: World,
    device: torch.device,
    callbacks: Callbacks | None = None,
    resume: Checkpoint | None = None,
    plots: bool = True,
    command: str = "",
) -> Outcome:
    """Train, select on validation, score the best epoch on the test set.

    Args:
        config: the run's configuration. It is saved with absolute data
            paths (:func:`~rnnkit.data.absolute_paths`), so that the run can be
            evaluated or resumed from any working directory.
        run: the run directory; new (checked by :meth:`RunDir.check_new`) or,
            with ``resume``, the run's own.
        world, device: from :func:`rnnkit.training.distributed.setup`.
        callbacks: the progress observer of the main process.
        resume: the run's ``last.pt``: training continues after its epoch,
            exactly as if it had never stopped.
        plots: write the PNG plots; saved in ``config.json``, where a resumed
            run finds the choice (see :func:`saved_plots_choice`).
        command: the command line that started (or resumed) the run, for ``config.json``.

    An interruption (``KeyboardInterrupt``) propagates; ``last.pt`` then holds
    the last completed epoch (or the initial weights), ready for ``resume``.
    """
    callbacks = callbacks if world.is_main else None
    splits = prepare(config.data).scaled()
    # saved absolute; read above as typed, so that messages name what the user gave
    config = replace(config, data=absolute_paths(config.data))
    if resume is not None:
        _check_same_data(resume, splits, run)

    torch.manual_seed(config.optim.seed)
    model = SequenceClassifier(config.model, splits.train.features, splits.num_classes).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    progress, best_state = Progress(), None
    if resume is not None:
        model.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        progress = Progress(**resume.progress)
        if progress.best_epoch:
            best_state = load_checkpoint(run / "best.pt").model

    def checkpoint(with_optimizer: bool) -> Checkpoint:
        return Checkpoint(
            config, splits.train.features, splits.num_classes, splits.scaler,
            model.state_dict(), asdict(progress),
            optimizer.state_dict() if with_optimizer else None,
        )

    parameters = sum(p.numel() for p in model.parameters())
    world.barrier()  # every process has checked the run directory before it is made
    if world.is_main:
        if resume is None:
            run.create()
            save_checkpoint(run / "last.pt", checkpoint(with_optimizer=True))
        run.write_json(
            "config.json", _description(config, splits, parameters, world, device, run, command, plots)
        )
    if callbacks:
        callbacks.on_start(splits, parameters, progress)

    trained = model if world.size == 1 else DistributedDataParallel(model)
    train_set = TensorSet.of(splits.train, device)
    val_set = None if splits.val is None else TensorSet.of(splits.val, device)
    batches = math.ceil(len(train_set) / config.optim.batch_size)
    while not progress.done(config):
        epoch = progress.epoch + 1
        started = time.perf_counter()
        if callbacks:
            callbacks.on_epoch_start(epoch, batches)
        for group in optimizer.param_groups:
            group["lr"] = config.optim.learning_rate(epoch)
        train_loss, train_accuracy = train_epoch(
            trained, train_set, optimizer,
            epoch=epoch,
            batch_size=config.optim.batch_size,
            seed=config.optim.seed,
            clip_grad=config.optim.clip_grad,
            world=world,
            on_batch=callbacks.on_batch if callbacks else _ignore,
        )
        val = None if val_set is None else evaluate(model, val_set, splits.num_classes, world)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": None if val is None else val.loss,
            "val_accuracy": None if val is None else val.accuracy,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 3),
        }
        best = progress.record(row)
        if best:
            best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        if world.is_main:
            if best:
                save_checkpoint(run / "best.pt", checkpoint(with_optimizer=False))
            save_checkpoint(run / "last.pt", checkpoint(with_optimizer=True))
            run.write_metrics(progress.history)
        if callbacks:
            callbacks.on_epoch_end(row, best)

    assert best_state is not None
    model.load_state_dict(best_state)
    test_set = TensorSet.of(splits.test, device)
    test = evaluate(model, test_set, splits.num_classes, world)
    outcome = Outcome(
        test, progress, progress.stopped_early(config), parameters,
        sum(row["seconds"] for row in progress.history),
    )
    if world.is_main:
        run.write_json("results.json", _results(outcome))
        if plots:
            _plot(run, progress, test, splits, model, test_set)
    return outcome


def _ignore(*args: object) -> None:
    pass


def _check_same_data(resume: Checkpoint, splits: Splits, run: RunDir) -> None:
    same = (
        resume.input_size == splits.train.features
        and resume.num_classes == splits.num_classes
        and np.allclose(resume.scaler.mean, splits.scaler.mean)
        and np.allclose(resume.scaler.std, splits.scaler.std)
    )
    if not same:
        raise UserError(
            f"the data of run {run} has changed since it was saved "
            f"({resume.config.data.data}); it cannot be resumed"
        )


def _description(
    config: RunConfig, splits: Splits, parameters: int, world: World, device: torch.device,
    run: RunDir, command: str, plots: bool,
) -> dict[str, Any]:
    """The contents of ``config.json``; ``commands`` lists the command that
    started the run and each one that resumed it."""
    commands = run.description().get("commands", [])
    return {
        "config": config.to_dict(),
        "data": {
            "train": len(splits.train),
            "val": 0 if splits.val is None else len(splits.val),
            "test": len(splits.test),
            "steps": splits.train.steps,
            "features": splits.train.features,
            "classes": splits.num_classes,
        },
        "parameters": parameters,
        "processes": world.size,
        "device": device.type,
        "plots": plots,
        "commands": [*(commands if isinstance(commands, list) else []), command],
        "versions": {"rnnkit": rnnkit.__version__, "torch": torch.__version__},
    }


def saved_plots_choice(run: RunDir) -> bool:
    """Whether the run in ``run`` writes its plots, as saved in its ``config.json``
    (``True`` when it does not say)."""
    return run.description().get("plots", True) is not False


def _results(outcome: Outcome) -> dict[str, Any]:
    """The contents of ``results.json``."""
    progress = outcome.progress
    return {
        "checkpoint": "best.pt",
        "best_epoch": progress.best_epoch,
        "epochs_completed": progress.epoch,
        "stopped_early": outcome.stopped_early,
        "val_accuracy": progress.best_accuracy,
        "test_accuracy": outcome.test.accuracy,
        "test_loss": outcome.test.loss,
        "test_examples": outcome.test.count,
        "per_class_accuracy": outcome.test.per_class_accuracy,
        "confusion_matrix": outcome.test.confusion.tolist(),
        "train_seconds": round(outcome.train_seconds, 3),
        "parameters": outcome.parameters,
    }


def _plot(
    run: RunDir, progress: Progress, test: Evaluation, splits: Splits,
    model: SequenceClassifier, test_set: TensorSet,
) -> None:
    from rnnkit.training import plots

    plots.plot_curves(progress.history, progress.best_epoch, run / "curves.png")
    plots.plot_confusion(test.confusion, run / "confusion.png")
    shown = np.arange(min(SAMPLES_SHOWN, len(splits.test)))
    predicted = predict_logits(model, test_set, torch.from_numpy(shown)).argmax(1).cpu().numpy()
    plots.plot_samples(splits.test.subset(shown), predicted, run / "samples.png")
