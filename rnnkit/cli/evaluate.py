"""``rnnkit evaluate``: score a trained run on its test set or on other data."""

from __future__ import annotations

import argparse

from rnnkit.cli.options import add_execution_options, add_options, given_options
from rnnkit.cli.trained_run import add_run_arguments, open_run
from rnnkit.data.config import DataConfig

DESCRIPTION = """\
Score a run's checkpoint: accuracy, loss and per-class accuracy.

Without data options, the run's own test set is rebuilt exactly as in
training (same data, split and --limit). A labelled .npz/.csv file given
with --data or --test-data is read alone and scored whole: the run's
training data is not needed and its --limit does not apply. A built-in set
given with --data is scored on the test set the run's split options draw
from it. Data is always scaled with the run's own scaling, learned on its
training split, and read by its model.
"""

DATA_OPTIONS = ("data", "data_dir", "test_data", "csv_features")

DATA_HELPS = {
    "data": "what to score instead of the run's test set: a labelled .npz/.csv file (all "
            "of it), or a built-in set, digits, mnist1d or mnist (the test set the run's "
            "split options draw from it)",
    "data_dir": "folder with the MNIST IDX files, for --data mnist or a run on mnist "
                "(default: the run's)",
    "test_data": "a labelled .npz/.csv file to score, all of it (the same as --data FILE)",
    "csv_features": "features per step in CSV rows; the run's model fixes it, so it may be "
                    "left out (default: the model's)",
}
"""The data options of ``evaluate``: they name what to score, and default to the run's."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a trained run on its test set or on other labelled data",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_options(parser, DataConfig, only=DATA_OPTIONS, title="Data", helps=DATA_HELPS)
    add_execution_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from rnnkit.cli.display import evaluation_table
    from rnnkit.training.inference import evaluation_set, score

    run_dir, checkpoint, device = open_run(args)
    data = evaluation_set(checkpoint, **given_options(args, DataConfig))
    evaluation = score(checkpoint, data, device)
    if args.json:
        print(json.dumps({
            "run": str(run_dir),
            "checkpoint": f"{args.checkpoint}.pt",
            "data": data.source,
            "examples": evaluation.count,
            "accuracy": evaluation.accuracy,
            "loss": evaluation.loss,
            "per_class_accuracy": evaluation.per_class_accuracy,
            "confusion_matrix": evaluation.confusion.tolist(),
        }, indent=2))
    else:
        title = f"{run_dir} ({args.checkpoint}.pt) on {data.source}"
        Console(highlight=False).print(evaluation_table(evaluation, title))
    return 0
