"""``rnnkit train``: train a sequence classifier and score it on held-out data."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rnnkit.cli.options import add_options, format_options, given_options
from rnnkit.data.config import DataConfig
from rnnkit.data.dataset import plural
from rnnkit.errors import UserError, flag
from rnnkit.training.config import ModelConfig, OptimConfig

if TYPE_CHECKING:
    from rnnkit.cli.display import TrainDisplay
    from rnnkit.training.checkpoint import Checkpoint
    from rnnkit.training.config import RunConfig
    from rnnkit.training.rundir import RunDir
    from rnnkit.training.trainer import Progress

DESCRIPTION = """\
Train a recurrent sequence classifier, select the epoch with the best
validation accuracy, and score it on a held-out test set.

With no options: an RNN reads scikit-learn's 8x8 digit images row by row
(8 steps of 8 pixels) and a linear layer on the last step's output picks the
digit -- the classic PyTorch MNIST tutorial in miniature, on data that ships
with scikit-learn (no download).

Every run writes a run directory (default runs/<data>-<cell>-<date>-<time>):
config.json, metrics.csv/.json (one row per epoch), best.pt and last.pt
checkpoints, results.json (test scores), and the plots curves.png,
confusion.png and samples.png.
"""

EPILOG = """\
examples:
  rnnkit train                                    # an RNN on the 8x8 digits
  rnnkit train --data mnist1d --hidden-size 256
  rnnkit train --data mnist --data-dir ~/data     # IDX files, or torchvision's MNIST/raw
  rnnkit train --data my.npz --test-data my-test.npz --normalize feature
  rnnkit train --resume runs/digits-rnn-20260101-120000 --epochs 60
  torchrun --nproc_per_node=4 -m rnnkit train --data mnist   # DistributedDataParallel

your own data:
  .npz  arrays x (N, T, F) or (N, T), y (N,) with labels 0..C-1, and
        optionally lengths (N,) for sequences shorter than T (x padded)
  .csv  one sequence per row: the label, then the values step after step
        (--csv-features per step); a first row naming a 'label' (or 'y')
        column is a header; empty trailing cells make a row a shorter sequence
"""

RESUMABLE = ("epochs", "device", "threads", "plots")
"""Options that ``--resume`` accepts: they do not change what was trained so far
(``--plots`` stands for ``--plots/--no-plots``)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a sequence classifier (default: an RNN on 8x8 digits)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for config_class in (DataConfig, ModelConfig, OptimConfig):
        add_options(parser, config_class)
    group = parser.add_argument_group("Run directory")
    group.add_argument(
        "--out", metavar="DIR",
        help="where to write the run (default: runs/<data>-<cell>-<date>-<time>)",
    )
    group.add_argument(
        "--overwrite", action="store_true",
        help="replace the files of an earlier run in --out (never done without it)",
    )
    group.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue a stopped or interrupted run from its last.pt, exactly where it "
             f"stopped, with its saved options (only {_resumable_flags()} may be given; "
             "a larger --epochs trains it further)",
    )
    group.add_argument(
        "--plots", action=argparse.BooleanOptionalAction,
        help="write the PNG plots (default: --plots; a resumed run keeps its own choice)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from rich.console import Console

    from rnnkit.cli.display import TrainDisplay, summary_table
    from rnnkit.training import distributed
    from rnnkit.training.config import RunConfig
    from rnnkit.training.rundir import RunDir
    from rnnkit.training.trainer import saved_plots_choice, train

    started = time.perf_counter()
    given = {cls: given_options(args, cls) for cls in (DataConfig, ModelConfig, OptimConfig)}
    if args.resume is not None:
        config, run_dir, resume = _resumed(args, given)
        plots = saved_plots_choice(run_dir) if args.plots is None else args.plots
    else:
        config = RunConfig(*(cls(**options) for cls, options in given.items()))
        run_dir, resume, plots = None, None, args.plots is not False

    world, device = distributed.setup(config.optim.device, config.optim.threads)
    display, interrupted = None, False
    try:
        if run_dir is None:
            path = args.out or world.share(RunDir.default_path(config.data.data, config.model.cell))
            run_dir = RunDir.check_new(path, args.overwrite)
        console = Console(highlight=False)
        display = TrainDisplay(config, run_dir, console) if world.is_main else None
        outcome = train(
            config, run_dir, world, device, display,
            resume=resume, plots=plots, command=_command_line(args, given, run_dir),
        )
    except KeyboardInterrupt:
        interrupted = True  # reported below, once the progress bar is off the screen
    finally:
        if display is not None:
            display.close()
        distributed.teardown(world)

    if interrupted:
        if world.is_main:
            print(f"rnnkit train: {_interruption(run_dir, resume, display)}", file=sys.stderr)
        return 130
    if world.is_main:
        resumed_after = resume.progress["epoch"] if resume is not None else 0
        console.print(
            summary_table(config, outcome, run_dir, time.perf_counter() - started, resumed_after)
        )
    return 0


def _interruption(run_dir: RunDir | None, resume: Checkpoint | None, display: TrainDisplay | None) -> str:
    """What an interruption (Ctrl-C) left behind, and how to go on."""
    last = run_dir / "last.pt" if run_dir is not None else None
    if last is None or not last.exists():
        return "interrupted before training started; nothing was written"
    if display is not None and display.last_epoch is not None:
        epoch = display.last_epoch
    else:  # stopped before training started: last.pt is as it was (a resumed run's) or fresh
        epoch = resume.progress["epoch"] if resume is not None else 0
    saved = f"epoch {epoch}" if epoch else "the initial weights"
    return f"interrupted; {last} holds {saved}: continue with rnnkit train --resume {run_dir}"


def _resumed(args: argparse.Namespace, given: dict[type, dict[str, Any]]) -> tuple[RunConfig, RunDir, Checkpoint]:
    """The configuration, directory and last checkpoint of the run to resume."""
    from dataclasses import replace

    from rnnkit.training.checkpoint import load_checkpoint
    from rnnkit.training.rundir import RunDir
    from rnnkit.training.trainer import Progress

    fixed = [name for options in given.values() for name in options if name not in RESUMABLE]
    fixed += [name for name in ("out", "overwrite") if getattr(args, name)]
    if fixed:
        raise UserError(
            f"--resume continues a run with its saved options; {flag(fixed[0])} cannot be "
            f"given with it (only {_resumable_flags()})"
        )
    run_dir = RunDir.existing(args.resume)
    resume = load_checkpoint(run_dir / "last.pt")
    config = replace(resume.config, optim=replace(resume.config.optim, **given[OptimConfig]))
    _check_resumable(run_dir, config, Progress(**resume.progress))
    return config, run_dir, resume


def _resumable_flags() -> str:
    """``RESUMABLE`` as flags, for messages: ``--epochs, --device, --threads, --plots``."""
    return ", ".join(map(flag, RESUMABLE))


def _command_line(args: argparse.Namespace, given: dict[type, dict[str, Any]], run_dir: RunDir) -> str:
    """This run's command as one would type it again, for ``config.json``."""
    import shlex

    words = ["rnnkit", "train"]
    for options in given.values():
        words += format_options(options)
    words += ["--resume", str(run_dir)] if args.resume else ["--out", str(run_dir)]
    words += ["--overwrite"] * args.overwrite
    if args.plots is not None:
        words.append("--plots" if args.plots else "--no-plots")
    return shlex.join(words)


def _check_resumable(run_dir: RunDir, config: RunConfig, progress: Progress) -> None:
    """A run that has nothing left to do is not resumed, nor is one asked to
    end before the epochs it has already trained."""
    if config.optim.epochs < progress.epoch:
        raise UserError(
            f"run {run_dir} has already trained {plural(progress.epoch, 'epoch')}, so --epochs "
            f"{config.optim.epochs} cannot be its length; give --epochs above {progress.epoch} "
            "to train it further"
        )
    if not progress.done(config) or not (run_dir / "results.json").is_file():
        return
    if progress.stopped_early(config):
        raise UserError(
            f"run {run_dir} stopped early at epoch {progress.epoch} (no better validation "
            f"accuracy for {plural(config.optim.patience, 'epoch')}); there is nothing to resume"
        )
    raise UserError(
        f"run {run_dir} is complete ({progress.epoch} of {plural(config.optim.epochs, 'epoch')}); "
        f"give --epochs above {progress.epoch} to train it further"
    )
