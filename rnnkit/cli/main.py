"""Entry point of the ``rnnkit`` command.

Each subcommand lives in its own module of this package, which defines
``register(subparsers)``: it adds its parser and sets ``run`` (a function of
the parsed arguments returning the exit status) as a default. Modules import
their heavy dependencies inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rnnkit.errors import UserError

SUBCOMMANDS = ("explain", "train", "evaluate", "predict", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnkit",
        description="Drop-in torch.nn recurrent layers: explain them, benchmark them, train with them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"rnnkit.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as error:
        print(f"rnnkit {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rnnkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
