"""``rnnkit explain``: what a recurrent layer will do with an input, before it runs.

The options are the layer's constructor arguments, with ``torch.nn``'s
defaults, plus the input's shape; the work is :func:`rnnkit.explain.explain`.
"""

from __future__ import annotations

import argparse
import json
import sys

from rnnkit.errors import UserError
from rnnkit.explain import LANGS, explain, meaning
from rnnkit.kinds import CELLS

EXAMPLES = """\
examples:
  rnnkit explain --input-size 5 --hidden-size 8 --num-layers 2 --input-shape 3,2,5
  rnnkit explain --input-size 5 --hidden-size 8 --num-layers 2 --input-shape 3,2,5 --lang zh
  rnnkit explain --cell lstm --input-size 5 --hidden-size 8 --proj-size 4 --bidirectional
  rnnkit explain --cell gru --cell-only --input-size 5 --hidden-size 8 --input-shape 2,5
  rnnkit explain --input-size 5 --hidden-size 8 --input-shape 3,2,5 --json
  rnnkit explain --cell lstm --input-size 5 --hidden-size 8 --input-shape 3,2,5 --lengths 3,1 --return-states
  rnnkit explain --cell lstm --input-size 5 --hidden-size 8 --layer-norm --zoneout 0.1 --lang zh

A shape or argument that the layer would reject is explained first (and on
stderr), and the command exits with status 1.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="explain a layer's arguments, shapes and parameter count before running it",
        description=(
            "Explain a recurrent layer before running it: what each argument means, the "
            "recurrence it computes, the shape of every tensor (input, h_0, output, h_n, each "
            "parameter) with named axes, and the parameter count."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kind = parser.add_argument_group("which layer")
    kind.add_argument(
        "--cell", choices=tuple(CELLS), default="rnn",
        help="the recurrence: rnn (Elman), lstm or gru, i.e. torch.nn.RNN, LSTM or GRU "
             "(default: rnn)",
    )
    kind.add_argument(
        "--cell-only", action="store_true",
        help="explain the single-step cell (RNNCell, LSTMCell, GRUCell) instead of the "
             "sequence layer",
    )

    layer = parser.add_argument_group("layer arguments, as torch.nn takes them")
    layer.add_argument("--input-size", type=int, required=True, metavar="H_in",
                       help=meaning("input_size"))
    layer.add_argument("--hidden-size", type=int, required=True, metavar="H",
                       help=meaning("hidden_size"))
    layer.add_argument("--num-layers", type=int, default=1, metavar="K",
                       help=meaning("num_layers"))
    layer.add_argument("--nonlinearity", metavar="{tanh,relu}",
                       help=meaning("nonlinearity") + "; rnn only")
    # The default goes through set_defaults below: given to add_argument, it
    # would make BooleanOptionalAction repeat the default the help already states.
    layer.add_argument("--bias", action=argparse.BooleanOptionalAction,
                       help=meaning("bias"))
    layer.add_argument("--batch-first", action="store_true", help=meaning("batch_first"))
    layer.add_argument("--dropout", type=float, default=0.0, metavar="P",
                       help=meaning("dropout"))
    layer.add_argument("--bidirectional", action="store_true", help=meaning("bidirectional"))
    layer.add_argument("--proj-size", type=int, default=0, metavar="P",
                       help=meaning("proj_size") + "; lstm only")
    parser.set_defaults(bias=True)
    extensions = parser.add_argument_group("rnnkit's options beyond torch.nn")
    extensions.add_argument("--layer-norm", action="store_true", help=meaning("layer_norm"))
    extensions.add_argument("--recurrent-dropout", type=float, default=0.0, metavar="P",
                            help=meaning("recurrent_dropout") + "; sequence layers only")
    extensions.add_argument("--zoneout", type=float, default=0.0, metavar="P",
                            help=meaning("zoneout") + "; sequence layers only")

    output = parser.add_argument_group("input and output")
    output.add_argument(
        "--input-shape", metavar="SHAPE",
        help="shape of the input, comma-separated: L,N,H_in (N,L,H_in with --batch-first) or "
             "L,H_in unbatched; N,H_in or H_in with --cell-only. Without it, the sequence "
             "length L and batch size N stay symbolic",
    )
    output.add_argument(
        "--lengths", nargs="?", const="", metavar="N1,N2,...",
        help=meaning("lengths") + "; alone it says the forward gets lengths=, with values it "
             "also checks them against --input-shape",
    )
    output.add_argument("--return-states", action="store_true", help=meaning("return_states"))
    output.add_argument("--lang", choices=LANGS, default="en",
                        help="language of the explanation: en (English) or zh (Chinese (Traditional))")
    output.add_argument("--json", action="store_true",
                        help="print the explanation as JSON, for programs")
    parser.set_defaults(run=run)


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    """``'3,2,5'`` (or ``'(3, 2, 5)'``) as ``(3, 2, 5)``; ``option`` names the
    command-line option in the error."""
    items = [item.strip() for item in text.strip().strip("()[]").split(",")]
    if items and items[-1] == "":
        items.pop()  # "5," is the one-axis shape (5,)
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise UserError(
            f"{option} expects integers separated by commas, such as 3,2,5; got {text!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    explanation = explain(
        args.input_size, args.hidden_size, args.num_layers,
        nonlinearity=args.nonlinearity, bias=args.bias, batch_first=args.batch_first,
        dropout=args.dropout, bidirectional=args.bidirectional, proj_size=args.proj_size,
        layer_norm=args.layer_norm, recurrent_dropout=args.recurrent_dropout, zoneout=args.zoneout,
        cell=args.cell, cell_only=args.cell_only,
        input_shape=None if args.input_shape is None else parse_shape(args.input_shape),
        lengths=(
            None if args.lengths is None
            else True if args.lengths == ""
            else list(parse_shape(args.lengths, "--lengths"))
        ),
        return_states=args.return_states,
        lang=args.lang,
    )
    for problem in explanation.problems:  # the verdict, where a script or a reader looks first
        print(f"rnnkit explain: {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps(explanation.to_dict(), ensure_ascii=False, indent=2))
    elif sys.stdout.isatty():
        from rich.console import Console

        Console().print(explanation)
    else:
        print(explanation)
    return 0 if explanation.ok else 1
