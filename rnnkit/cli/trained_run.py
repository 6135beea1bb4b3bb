"""What ``rnnkit evaluate`` and ``rnnkit predict`` share: the trained run they
read and the device they run its model on."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rnnkit.cli.options import given_options

if TYPE_CHECKING:
    import torch

    from rnnkit.training.checkpoint import Checkpoint
    from rnnkit.training.rundir import RunDir


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``RUN_DIR`` (the first positional argument) and ``--checkpoint``; the
    command adds ``--device``/``--threads`` with
    :func:`~rnnkit.cli.options.add_execution_options`, last."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by rnnkit train")
    parser.add_argument(
        "--checkpoint", choices=("best", "last"), default="best",
        help="best.pt (the epoch of best validation accuracy) or last.pt (default: best)",
    )


def open_run(args: argparse.Namespace) -> tuple[RunDir, Checkpoint, torch.device]:
    """The run directory, the chosen checkpoint in it, and the device to run
    its model on (set up, with the thread count, as given)."""
    from rnnkit.training.checkpoint import load_checkpoint
    from rnnkit.training.config import OptimConfig
    from rnnkit.training.distributed import pick_device
    from rnnkit.training.rundir import RunDir

    run_dir = RunDir.existing(args.run_dir)
    checkpoint = load_checkpoint(run_dir / f"{args.checkpoint}.pt")
    execution = OptimConfig(**given_options(args, OptimConfig))
    return run_dir, checkpoint, pick_device(execution.device, execution.threads)
