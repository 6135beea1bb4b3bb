"""What ``rnnkit train`` and ``rnnkit evaluate`` show in the terminal.

A live progress bar per epoch (only on an interactive terminal), one line per
finished epoch, and summary tables. Everything goes through a
:class:`rich.console.Console`; in a pipe or a log file the bar is left out and
the lines stay plain.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rnnkit.data.dataset import plural
from rnnkit.data.splits import Splits
from rnnkit.kinds import CELLS
from rnnkit.training.config import RunConfig
from rnnkit.training.loop import Evaluation
from rnnkit.training.rundir import RunDir
from rnnkit.training.trainer import Callbacks, Outcome
from rnnkit.training.trainer import Progress as RunProgress


class TrainDisplay(Callbacks):
    """The training loop's observer on the main process."""

    def __init__(self, config: RunConfig, run: RunDir, console: Console) -> None:
        self.config, self.run, self.console = config, run, console
        self.bar: Progress | None = None
        self.last_epoch: int | None = None  # the last epoch in last.pt, once training started

    def on_start(self, splits: Splits, parameters: int, progress: RunProgress) -> None:
        data, model = self.config.data, self.config.model
        sizes = f"{len(splits.train)} train / {0 if splits.val is None else len(splits.val)} val / {len(splits.test)} test"
        self.console.print(
            f"[bold]{data.data}[/]: {sizes} sequences of {plural(splits.train.steps, 'step')} x "
            f"{plural(splits.train.features, 'feature')}, {splits.num_classes} classes",
            soft_wrap=True,
        )
        self.console.print(
            f"[bold]{model.cell}[/] classifier: {_model_text(self.config)}, "
            f"{parameters:,} parameters -> {self.run}",
            soft_wrap=True,
        )
        self.last_epoch = progress.epoch
        if progress.epoch:
            self.console.print(f"resuming after epoch {progress.epoch}", soft_wrap=True)

    def on_epoch_start(self, epoch: int, batches: int) -> None:
        if not self.console.is_terminal:
            return
        self.bar = Progress(
            TextColumn(f"epoch {epoch}/{self.config.optim.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[accuracy]:.4f}  "
                       "{task.fields[rate]:,.0f} seq/s"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.add_task("train", total=batches, loss=0.0, accuracy=0.0, rate=0.0)
        self.bar.start()

    def on_batch(self, done: int, loss: float, accuracy: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(0, completed=done, loss=loss, accuracy=accuracy, rate=rate)

    def on_epoch_end(self, row: dict[str, Any], best: bool) -> None:
        self.close()
        self.last_epoch = row["epoch"]
        width = len(str(self.config.optim.epochs))
        text = (
            f"epoch {row['epoch']:>{width}}/{self.config.optim.epochs}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}"
        )
        if row["val_accuracy"] is not None:
            text += f"  |  val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}"
        text += f"  {row['seconds']:.1f}s"
        self.console.print(text + ("  [green]best[/]" if best else ""), soft_wrap=True)

    def close(self) -> None:
        """Take the live bar off the screen (also after an interruption)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _model_text(config: RunConfig) -> str:
    model = config.model
    parts = [f"hidden {model.hidden_size}", plural(model.num_layers, "layer")]
    if "nonlinearity" in CELLS[model.cell].layer_arguments:
        parts.append(model.nonlinearity)
    if model.bidirectional:
        parts.append("bidirectional")
    if model.dropout:
        parts.append(f"dropout {model.dropout:g}")
    if not model.bias:
        parts.append("no bias")
    parts.append(f"readout {model.readout}")
    return ", ".join(parts)


def summary_table(
    config: RunConfig, outcome: Outcome, run: RunDir, seconds: float, resumed_after: int = 0
) -> Table:
    """The end-of-run summary; ``seconds`` is this command's time, and
    ``resumed_after`` the epoch it resumed the run after (0: a new run)."""
    progress, test = outcome.progress, outcome.test
    table = Table(title="rnnkit train", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("data", config.data.data)
    table.add_row("model", f"{config.model.cell}: {_model_text(config)} ({outcome.parameters:,} parameters)")
    epochs = f"{progress.epoch} of {config.optim.epochs}"
    if outcome.stopped_early:
        epochs += f" (stopped early: no better validation accuracy for {plural(config.optim.patience, 'epoch')})"
    table.add_row("epochs", epochs)
    best = f"epoch {progress.best_epoch}"
    if progress.best_accuracy is not None:
        best += f", validation accuracy {progress.best_accuracy:.4f}"
    table.add_row("best", best)
    table.add_row(
        "test accuracy",
        f"[bold green]{test.accuracy:.4f}[/] ({int(test.confusion.trace())} of {test.count})",
    )
    table.add_row("test loss", f"{test.loss:.4f}")
    if not resumed_after:
        table.add_row("time", f"{seconds:.1f} s ({outcome.train_seconds:.1f} s training)")
    else:  # this command trained some epochs, earlier ones the others
        history = outcome.progress.history
        session = sum(row["seconds"] for row in history if row["epoch"] > resumed_after)
        table.add_row("time", f"{seconds:.1f} s this session ({session:.1f} s training)")
        table.add_row(
            "training time", f"{outcome.train_seconds:.1f} s over all {plural(len(history), 'epoch')}"
        )
    table.add_row("results", str(run))
    return table


def evaluation_table(evaluation: Evaluation, title: str) -> Table:
    """Scores and the per-class accuracy of an evaluation."""
    table = Table(title=title, title_justify="left")
    table.add_column("class", justify="right")
    table.add_column("examples", justify="right")
    table.add_column("accuracy", justify="right")
    totals = evaluation.confusion.sum(1)
    for label, accuracy in enumerate(evaluation.per_class_accuracy):
        table.add_row(str(label), str(totals[label]), "-" if accuracy is None else f"{accuracy:.4f}")
    table.add_section()
    table.add_row("all", str(evaluation.count), f"[bold]{evaluation.accuracy:.4f}[/]")
    table.caption = f"loss {evaluation.loss:.4f}"
    return table
