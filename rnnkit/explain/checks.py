"""What the layer (or its forward) would reject, explained: each check
returns :class:`~rnnkit.explain.result.Problem` entries, in the explanation's
language, instead of raising.

The arguments are judged by the layers' own checks (:mod:`rnnkit.layers.checks`,
which raise what ``torch.nn`` raises): the exception each would raise picks
the explanation.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

from rnnkit.explain.config import DEFAULTS, LayerConfig, is_int, is_shape
from rnnkit.explain.result import Problem, Size, format_shape
from rnnkit.kinds import CELLS
from rnnkit.layers import checks as layer_checks


def argument_problems(config: LayerConfig, text: dict[str, Any]) -> list[Problem]:
    """What the layer's constructor would reject, explained.

    The verdicts are those of the checks every rnnkit layer runs
    (:mod:`rnnkit.layers.checks`, which raise what ``torch.nn`` raises): the
    exception each raises picks the explanation, in the explanation's language.
    """
    problems: list[Problem] = []

    def problem(subject: str, key: str, **values: Any) -> None:
        problems.append(Problem(subject, text[key].format(name=subject, **values)))

    layer, taken = config.class_name, config.taken
    for name in (
        "num_layers", "nonlinearity", "batch_first", "dropout", "bidirectional", "proj_size",
        "recurrent_dropout", "zoneout",
    ):
        value = getattr(config, name)
        if name not in taken and value != DEFAULTS[name]:
            reason = text.get(f"reason.{name}", text["reason.cell"]).format(owners=_owners(name, text))
            problem(name, "problem.not_argument", value=value, layer=layer, reason=reason)

    for name in ("input_size", "hidden_size", "num_layers"):
        value = getattr(config, name)
        if name in taken:
            error = _rejection(layer_checks.check_size, name, value)
            if error is not None:
                problem(name, "problem.int" if error is TypeError else "problem.positive", value=value)
    for name in ("bias", "batch_first", "bidirectional", "layer_norm"):
        value = getattr(config, name)
        if name in taken and _rejection(layer_checks.check_flag, name, value):
            problem(name, "problem.bool", value=value)
    if "dropout" in taken and _rejection(layer_checks.check_dropout, config.dropout, config.num_layers):
        problem("dropout", "problem.dropout", value=config.dropout)
    for name in ("recurrent_dropout", "zoneout"):
        value = getattr(config, name)
        if name in taken and _rejection(layer_checks.check_probability, name, value):
            problem(name, "problem.probability", value=value)
    arguments = config.arguments()
    if "nonlinearity" in taken and _rejection(layer_checks.check_nonlinearity, arguments["nonlinearity"]):
        problem("nonlinearity", "problem.nonlinearity", value=config.nonlinearity)
    if "proj_size" in taken:
        proj, hidden = config.proj_size, config.hidden_size
        alone = _rejection(layer_checks.check_proj_size, proj, math.inf)  # any hidden size
        if alone is TypeError:
            problem("proj_size", "problem.int", value=proj)
        elif alone is not None:
            problem("proj_size", "problem.proj_negative", value=proj)
        elif (
            _rejection(layer_checks.check_size, "hidden_size", hidden) is None
            and _rejection(layer_checks.check_proj_size, proj, hidden) is not None
        ):
            problem("proj_size", "problem.proj_large", value=proj, hidden=hidden)
    return problems


def keyword_problems(
    config: LayerConfig, lengths: Any, return_states: Any, text: dict[str, Any]
) -> list[Problem]:
    """What the forward would reject in its keywords, whatever the input."""
    given = {"lengths": lengths is not None, "return_states": return_states is not False}
    if config.cell_only:
        value = {"lengths": lengths, "return_states": return_states}
        return [
            Problem(name, text["problem.not_argument"].format(
                name=name, value=value[name], layer=config.class_name, reason=text["reason.cell"]
            ))
            for name in given if given[name]
        ]
    problems = []
    if lengths is not None and lengths is not True and not is_shape(lengths):
        problems.append(Problem("lengths", text["problem.lengths_type"].format(value=lengths)))
    if not isinstance(return_states, bool):
        problems.append(Problem(
            "return_states", text["problem.bool"].format(name="return_states", value=return_states)
        ))
    return problems


def lengths_problems(
    lengths: Any, batched: bool, sizes: dict[str, Size], input_shape: Any, text: dict[str, Any]
) -> list[Problem]:
    """What the forward would say about ``lengths`` given this input (checked
    only as far as the input shape settles ``N`` and ``L``)."""
    if lengths is None:
        return []
    if not batched:
        return [Problem("lengths", text["problem.lengths_unbatched"].format(shape=format_shape(input_shape)))]
    if lengths is True:
        return []
    batch, steps = sizes["N"], sizes["L"]
    if is_int(batch) and len(lengths) != batch:
        return [Problem("lengths", text["problem.lengths_count"].format(got=len(lengths), n=batch))]
    for index, value in enumerate(lengths):
        if value < 1 or (is_int(steps) and value > steps):
            key = "problem.lengths_range" if is_int(steps) else "problem.lengths_positive"
            return [Problem("lengths", text[key].format(index=index, value=value, steps=steps))]
    return []


def _owners(argument: str, text: dict[str, Any]) -> str:
    """The classes that take ``argument``: ``'RNN and RNNCell'``."""
    owners = [
        name for cell in CELLS.values()
        for name, taken in ((cell.layer, cell.layer_arguments), (cell.cell_class, cell.cell_arguments))
        if argument in taken
    ]
    return text["and"].join(owners)


def _rejection(check: Callable[..., object], *arguments: Any) -> type[Exception] | None:
    """The type of the exception (``TypeError`` or ``ValueError``) that ``check``
    raises for ``arguments``, or ``None`` when it accepts them. Its warnings
    (dropout with one layer) are left to the explanation's notes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check(*arguments)
    except (TypeError, ValueError) as error:
        return type(error)
    return None


def read_input_shape(
    config: LayerConfig, input_shape: Any, text: dict[str, Any]
) -> tuple[bool, dict[str, Size], list[Problem]]:
    """Whether the input is batched, the size of every axis symbol, and what
    keeps the layer from taking ``input_shape``. Sizes the input does not
    settle (all of them, when it has a problem) stay symbolic."""
    sizes: dict[str, Size] = {"L": "L", "N": "N"}
    if all(is_int(getattr(config, n)) for n in ("input_size", "hidden_size", "num_layers", "proj_size")):
        directions = 2 if config.bidirectional is True and not config.cell_only else 1
        h_out = config.proj_size or config.hidden_size
        sizes |= {
            "H_in": config.input_size, "H_out": h_out, "H_cell": config.hidden_size,
            "D*num_layers": directions * config.num_layers, "D*H_out": directions * h_out,
        }
    if input_shape is None:
        return True, sizes, []

    def problem(key: str, **values: Any) -> tuple[bool, dict[str, Size], list[Problem]]:
        return True, sizes, [Problem("input_shape", text[key].format(**values))]

    if not is_shape(input_shape):
        return problem("problem.shape_type", value=input_shape)
    shape = tuple(int(size) for size in input_shape)
    batched_axes, unbatched_axes = (input_axes(config, batched) for batched in (True, False))
    if len(shape) not in (len(batched_axes), len(unbatched_axes)):
        return problem(
            "problem.ndim", shape=format_shape(shape), n=len(shape), layer=config.class_name,
            batched=len(batched_axes), batched_axes=format_shape(batched_axes),
            unbatched=len(unbatched_axes), unbatched_axes=format_shape(unbatched_axes),
        )
    if any(size < 0 for size in shape):
        return problem("problem.negative", shape=format_shape(shape))
    batched = len(shape) == len(batched_axes)
    axes = batched_axes if batched else unbatched_axes
    if shape[-1] != config.input_size:
        return problem("problem.features", got=shape[-1], want=config.input_size)
    if "L" in axes and shape[axes.index("L")] == 0:
        return problem("problem.empty", index=axes.index("L"))
    return batched, sizes | dict(zip(axes, shape)), []


def input_axes(config: LayerConfig, batched: bool) -> tuple[str, ...]:
    if config.cell_only:
        axes: tuple[str, ...] = ("N", "H_in")
    else:
        axes = ("N", "L", "H_in") if config.batch_first is True else ("L", "N", "H_in")
    return axes if batched else tuple(a for a in axes if a != "N")
