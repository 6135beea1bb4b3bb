"""``rnnkit export``: a trained run as an ONNX file that any ONNX runtime can run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rnnkit.cli.trained_run import add_run_arguments
from rnnkit.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    from rnnkit.training.checkpoint import Checkpoint

DESCRIPTION = """\
Write a run's checkpoint as an ONNX model, its recurrent layer as ONNX's own
RNN, LSTM or GRU operator.

The model takes the raw sequences, x (batch, steps, features) float32, any
batch size and length, and applies the run's own scaling itself. Every step
is valid, unless --lengths adds a second input, lengths (batch,) int64: the
valid steps of each padded sequence. It returns 'scores' (batch, classes), the logits, and
'probabilities', their softmax: what 'rnnkit predict' prints. Needs the onnx
extra (pip install 'rnnkit[onnx]').
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a trained run as an ONNX model (raw input in, class scores out)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--output", "-o", metavar="FILE",
        help="the ONNX file to write (default: model.onnx in RUN_DIR)",
    )
    parser.add_argument(
        "--lengths", action="store_true",
        help="add an input 'lengths' (batch,) int64: each sequence's valid steps, for padded batches",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from rnnkit.training.checkpoint import load_checkpoint
    from rnnkit.training.rundir import RunDir

    run_dir = RunDir.existing(args.run_dir)
    output = Path(args.output) if args.output else run_dir / "model.onnx"
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} exists; give --overwrite to replace it")
    checkpoint = load_checkpoint(run_dir / f"{args.checkpoint}.pt")
    write_onnx(checkpoint, output, with_lengths=args.lengths)
    inputs = f"x (batch, steps, {checkpoint.input_size})" + (", lengths (batch,)" if args.lengths else "")
    print(f"wrote {output}: {inputs} -> "
          f"scores, probabilities (batch, {checkpoint.num_classes})", file=sys.stderr)
    return 0


def write_onnx(checkpoint: Checkpoint, path: Path, with_lengths: bool = False) -> None:
    """Export the checkpoint's classifier, scaling included, to ``path``; with
    ``with_lengths``, the model also takes each sequence's valid length."""
    import torch

    import rnnkit.onnx
    from rnnkit.training.inference import RawInputClassifier

    missing = rnnkit.onnx.missing_requirements()
    if missing:
        raise UserError(f"exporting {missing}")
    model = RawInputClassifier(checkpoint).eval()
    reason = rnnkit.onnx.refusal(model.classifier.recurrent)
    if reason:
        raise UserError(f"cannot export this run: its {reason}")
    # Batch and steps differ, so that the exporter keeps them apart as two dynamic axes.
    example: tuple = (torch.zeros(2, 3, checkpoint.input_size),)
    if with_lengths:
        example += (torch.tensor([3, 2]),)
    try:
        program = rnnkit.onnx.export(
            model, example, input_names=["x", "lengths"][: len(example)],
            output_names=["scores", "probabilities"],
        )
        program.save(str(path))
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}") from None
