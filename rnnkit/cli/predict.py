"""``rnnkit predict``: class labels and probabilities for new sequences."""

from __future__ import annotations

import argparse

from rnnkit.cli.options import add_execution_options, add_options, given_options
from rnnkit.cli.trained_run import add_run_arguments, open_run
from rnnkit.data.config import DataConfig
from rnnkit.errors import UserError

DESCRIPTION = """\
Predict the class of every sequence in INPUT with a trained run.

INPUT is a .npz (x (N, T, F) or (N, T), optional lengths (N,); a y array is
ignored) or a .csv of one sequence per row, values step after step, as many
per step as the run's model reads. A CSV
without a header holds values only; a first row that names a 'label' (or
'y') column, or whose cells are mostly not numbers, is a header, and a label
column is ignored. Any other row is data: a cell that is not a number is an
error. The run's scaling is applied. The output has one row per sequence:
its index, the predicted class, that class's probability, and the
probability of every class (p_0 ... p_{C-1}).
"""

FORMATS = ("csv", "json")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict labels and class probabilities for new sequences",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser)
    parser.add_argument("input", metavar="INPUT", help="the sequences: a .npz or .csv file")
    parser.add_argument(
        "--output", "-o", metavar="FILE",
        help="write the predictions to FILE (.csv or .json) instead of standard output",
    )
    parser.add_argument(
        "--format", choices=FORMATS,
        help="output format (default: from --output's suffix, else csv)",
    )
    add_options(parser, DataConfig, only=("csv_features",), title="Input", helps={
        "csv_features": "features per step in INPUT's CSV rows; the run's model fixes it, so "
                        "it may be left out (default: the model's)",
    })
    add_execution_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import csv
    import io
    import json
    import sys
    from dataclasses import replace
    from pathlib import Path

    from rnnkit.training.inference import predict_proba, read_input

    output_format = args.format or _format_of(args.output)
    _, checkpoint, device = open_run(args)
    given = given_options(args, DataConfig)
    replace(checkpoint.config.data, **given)  # checks the values alone (--csv-features >= 1)
    data = read_input(checkpoint, args.input, labelled=False, csv_features=given.get("csv_features"))
    probabilities = predict_proba(checkpoint, data, device)  # (N, C)
    predicted = probabilities.argmax(1)

    classes = range(probabilities.shape[1])
    if output_format == "json":
        text = json.dumps([
            {
                "index": n,
                "predicted": int(predicted[n]),
                "probability": round(float(p[predicted[n]]), 6),
                "probabilities": [round(float(value), 6) for value in p],
            }
            for n, p in enumerate(probabilities)
        ], indent=1) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["index", "predicted", "probability", *(f"p_{c}" for c in classes)])
        for n, p in enumerate(probabilities):
            writer.writerow([n, int(predicted[n]), *(f"{value:.6f}" for value in (p[predicted[n]], *p))])
        text = buffer.getvalue()

    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as error:
            raise UserError(f"cannot write {args.output}: {error.strerror}") from None
        print(f"{len(predicted)} predictions written to {args.output}", file=sys.stderr)
    return 0


def _format_of(output: str | None) -> str:
    if output is None:
        return "csv"
    suffix = output.rsplit(".", 1)[-1].lower() if "." in output else ""
    if suffix not in FORMATS:
        raise UserError(f"--output {output}: give a .csv or .json file name, or --format")
    return suffix
