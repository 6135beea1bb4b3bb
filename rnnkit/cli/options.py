"""Command-line flags built from configuration dataclasses.

Each field becomes one flag (``hidden_size`` -> ``--hidden-size``) with the
field's type, choices and help, in an argument group titled by the class
docstring; a ``bool`` field gets ``--flag/--no-flag``. Flags default to
*absent* (``argparse.SUPPRESS``), so a command can tell what the user gave
from what the dataclass fills in.
"""

from __future__ import annotations

import argparse
import math
import typing
from dataclasses import MISSING, Field, fields
from typing import Any, Iterable

from rnnkit.errors import flag


METAVARS = {int: "N", float: "X"}
"""The placeholder of a number flag in ``--help``, unless its field names one."""


def finite_float(text: str) -> float:
    """An argparse type: a float that is not NaN or infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_options(
    parser: argparse.ArgumentParser,
    config_class: type,
    only: Iterable[str] | None = None,
    *,
    title: str | None = None,
    helps: dict[str, str] | None = None,
) -> None:
    """Add a flag for each field of ``config_class`` (or of those named in ``only``).

    The group is titled by the class docstring, or by ``title`` (then without
    a description). ``helps`` replaces the help of some fields, whole (the
    default is not added): for a command where they mean something else or
    default to a saved run's value.
    """
    doc = (config_class.__doc__ or config_class.__name__).strip().splitlines()[0]
    heading, _, description = doc.partition(": ")
    group = parser.add_argument_group(title or heading, None if title else description or None)
    hints = typing.get_type_hints(config_class)
    chosen = None if only is None else set(only)
    helps = helps or {}
    for field in fields(config_class):
        if chosen is not None and field.name not in chosen:
            continue
        kind = _base_type(hints[field.name])
        help_text = helps.get(
            field.name, f"{field.metadata.get('help', '')} (default: {_default_text(field)})"
        )
        if kind is bool:
            group.add_argument(
                flag(field.name), action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS, help=help_text,
            )
        else:
            group.add_argument(
                flag(field.name),
                type=finite_float if kind is float else kind,
                choices=field.metadata.get("choices"),
                metavar=field.metadata.get("metavar", METAVARS.get(kind)),
                default=argparse.SUPPRESS,
                help=help_text,
            )


def add_execution_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads`` (fields of the training options) for a
    command that runs a trained model: ``rnnkit evaluate`` and ``predict``."""
    from rnnkit.training.config import OptimConfig

    add_options(parser, OptimConfig, only=("device", "threads"), title="Execution", helps={
        "device": "where to run the model: auto picks cuda when a GPU is present "
                  "(default: auto)",
        "threads": "CPU threads for tensor operations (0: PyTorch's default, one per core; "
                   "default: 1)",
    })


def given_options(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The fields of ``config_class`` that the user set on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(config_class) if hasattr(args, f.name)}


def format_options(options: dict[str, Any]) -> list[str]:
    """The flags that set ``options`` (field name -> value), as a user would type them."""
    words: list[str] = []
    for name, value in options.items():
        if isinstance(value, bool):
            words.append(flag(name, negated=not value))
        elif value is not None:
            words += [flag(name), str(value)]
    return words


def _base_type(hint: Any) -> type:
    """``int`` from ``int`` or ``int | None``."""
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return options[0] if options else hint


def _default_text(field: Field) -> str:
    default = field.default if field.default is not MISSING else None
    if isinstance(default, bool):
        return flag(field.name, negated=not default)
    return "none" if default is None else str(default)
