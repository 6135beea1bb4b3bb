"""Entry point of the ``rnnkit`` command.

Each subcommand lives in its own module of this package, which defines
``register(subparsers)``: it adds its parser and sets ``run`` (a function of
the parsed arguments returning the exit status) as a default. Modules import
their heavy dependencies inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rnnkit.errors import UserError

SUBCOMMANDS = ("explain", "train", "evaluate", "predict", "export", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnkit",
        description="Drop-in torch.nn recurrent layers: explain them, benchmark them, train with them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"rnnkit.cli.{name}").register(subparsers)
    for subparser in subparsers.choices.values():
        subparser.set_defaults(parser=subparser)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line. An option the command does not know is
    reported with the usage of that command (``rnnkit train: error: ...``),
    exit status 2; the top parser's ``parse_args`` would report it with the
    top-level usage."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


BROKEN_PIPE = 141
"""The exit status after the reader of the output went away (``| head``):
128 + SIGPIPE, as a shell reports a command that the signal stopped."""


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        status = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except UserError as error:
        print(f"rnnkit {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rnnkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Stop quietly. What is still buffered would fail again when Python
        # flushes stdout at exit, so stdout now leads nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
