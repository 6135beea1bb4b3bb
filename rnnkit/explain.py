"""What a recurrent layer will do, before it runs: :func:`explain`.

Given a layer's constructor arguments (or the layer itself) and, optionally,
the shape of its input, :func:`explain` says what each argument means, which
recurrence the layer computes, every shape involved (input, initial state,
output, final state, each parameter) with named axes, and the parameter count,
in English or Traditional Chinese. Shapes come from arithmetic here, without
building or running a layer; the tests hold every one of them against ``torch.nn``.

Mistakes (an impossible argument, an input that does not fit) become
:class:`Problem` entries of the explanation instead of exceptions, so that it
can say what was expected; the arguments are judged by the layers' own checks
(:mod:`rnnkit.layers.checks`). The wording of both languages lives in ``_TEXT``,
at the end of this module.

>>> e = explain(5, 8, num_layers=2, input_shape=(3, 2, 5))
>>> e.shapes["output"], e.shapes["h_n"], e.num_parameters
((3, 2, 8), (2, 2, 8), 264)
"""

from __future__ import annotations

import math
import numbers
import unicodedata
import warnings
from dataclasses import dataclass, fields
from typing import Any, Callable

from rnnkit.layers import SEQUENCE_LAYERS, checks
from rnnkit.layers.shapes import parameter_shapes, suffix

CELLS = tuple(SEQUENCE_LAYERS)
LANGS = ("en", "zh")

_CLASS_NAMES = {
    ("rnn", False): "RNN", ("lstm", False): "LSTM", ("gru", False): "GRU",
    ("rnn", True): "RNNCell", ("lstm", True): "LSTMCell", ("gru", True): "GRUCell",
}
"""The ``torch.nn`` class of each ``(cell, cell_only)``."""

_KINDS = {name: kind for kind, name in _CLASS_NAMES.items()}

_SEQUENCE_ARGUMENTS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first",
                       "dropout", "bidirectional")
_ARGUMENTS = {
    "RNN": ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first",
            "dropout", "bidirectional"),
    "LSTM": (*_SEQUENCE_ARGUMENTS, "proj_size"),
    "GRU": _SEQUENCE_ARGUMENTS,
    "RNNCell": ("input_size", "hidden_size", "bias", "nonlinearity"),
    "LSTMCell": ("input_size", "hidden_size", "bias"),
    "GRUCell": ("input_size", "hidden_size", "bias"),
}
"""Constructor arguments of each class in torch's positional order (device and dtype aside)."""

_GATES = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
"""The blocks of ``hidden_size`` rows each cell type stacks, in order, in
``weight_ih`` and ``weight_hh``: an RNN's one block is the new state itself."""

Size = int | str
"""The size of one axis: a number, or the axis symbol ('L', 'N') when the input does not say."""


@dataclass(frozen=True)
class LayerConfig:
    """The constructor arguments of one ``torch.nn`` recurrent layer or cell.

    ``cell`` (``'rnn'``, ``'lstm'`` or ``'gru'``) and ``cell_only`` pick the
    class: ``LayerConfig(5, 8, cell='gru', cell_only=True)`` is ``GRUCell(5, 8)``.
    Fields the class does not take must keep their defaults. ``nonlinearity``
    is ``None`` unless given, which ``RNN`` and ``RNNCell`` read as ``'tanh'``.
    Values are not checked here: :func:`explain` reports what is wrong with them.
    """

    input_size: Any
    hidden_size: Any
    num_layers: Any = 1
    nonlinearity: Any = None
    bias: Any = True
    batch_first: Any = False
    dropout: Any = 0.0
    bidirectional: Any = False
    proj_size: Any = 0
    cell: str = "rnn"
    cell_only: bool = False

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, got {self.cell!r}")
        if not isinstance(self.cell_only, bool):
            raise TypeError(f"cell_only must be a bool, got {self.cell_only!r}")

    @classmethod
    def from_module(cls, module: Any) -> LayerConfig:
        """The configuration of an ``rnnkit`` or ``torch.nn`` RNN, LSTM, GRU or cell."""
        name = _class_name(module)
        if name is None:
            raise TypeError(
                "explain() takes input_size and hidden_size, or in their place a recurrent "
                f"module ({', '.join(_KINDS)}), got {type(module).__name__}"
            )
        cell, cell_only = _KINDS[name]
        values = {arg: getattr(module, arg) for arg in _ARGUMENTS[name]}
        return cls(**values, cell=cell, cell_only=cell_only)

    @property
    def class_name(self) -> str:
        """``'RNN'``, ``'LSTMCell'``, ...: the ``torch.nn`` class configured."""
        return _CLASS_NAMES[self.cell, self.cell_only]

    def arguments(self) -> dict[str, Any]:
        """The class's constructor arguments with their values (``nonlinearity``'s default filled in)."""
        values = {name: getattr(self, name) for name in _ARGUMENTS[self.class_name]}
        if values.get("nonlinearity", "") is None:
            values["nonlinearity"] = "tanh"
        return values

    def signature(self) -> str:
        """The constructor call, e.g. ``RNN(input_size=5, hidden_size=8, num_layers=2)``."""
        defaults = _DEFAULTS | {"nonlinearity": "tanh"}
        shown = [
            f"{name}={value!r}" for name, value in self.arguments().items()
            if name in ("input_size", "hidden_size") or value != defaults[name]
        ]
        return f"{self.class_name}({', '.join(shown)})"


_DEFAULTS = {f.name: f.default for f in fields(LayerConfig)}


def _class_name(module: Any) -> str | None:
    """``'LSTM'`` for an rnnkit or torch.nn LSTM (or a subclass), ...; ``None`` for anything else."""
    return next((k.__name__ for k in type(module).__mro__ if k.__name__ in _KINDS), None)


def meaning(argument: str, lang: str = "en") -> str:
    """What a constructor argument means, in one line: ``meaning('batch_first')``."""
    return _TEXT[lang]["meaning"][argument]


@dataclass(frozen=True)
class TensorShape:
    """One tensor going into or out of the layer."""

    name: str                 # input, h_0, c_0, output, h_n, c_n (cells: h_1, c_1 out)
    axes: tuple[str, ...]     # axis symbols, e.g. ('L', 'N', 'H_in')
    sizes: tuple[Size, ...]   # e.g. (3, 2, 5), or ('L', 'N', 5) without an input shape
    meaning: str


@dataclass(frozen=True)
class ParameterShape:
    """One parameter of the layer, under its ``torch.nn`` name."""

    name: str
    shape: tuple[int, ...]
    meaning: str              # the matrices it stacks, and where it sits

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


@dataclass(frozen=True)
class Problem:
    """Something that stops the layer from being built or from taking the input."""

    subject: str              # the argument at fault: 'hidden_size', 'input_shape', ...
    message: str              # what is wrong and what was expected, in the explanation's language

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, repr=False)
class Explanation:
    """What :func:`explain` found; ``print`` it, or read its fields.

    Without problems, every field is complete. A problem with the arguments
    leaves only ``arguments`` and ``problems`` (the layer could not be
    built); a problem with the input shape leaves the tensors in symbolic
    form, which is what the layer expects.
    """

    config: LayerConfig
    input_shape: Any
    lang: str
    title: str
    arguments: tuple[tuple[str, Any, str], ...]   # (name, value, meaning)
    equations: tuple[str, ...]
    tensors: tuple[TensorShape, ...]
    axes: tuple[tuple[str, Size, str], ...]       # (symbol, size, meaning)
    parameters: tuple[ParameterShape, ...]
    notes: tuple[str, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """Whether the layer can be built and takes the input."""
        return not self.problems

    @property
    def shapes(self) -> dict[str, tuple[Size, ...]]:
        """Each tensor's shape by name: ``{'input': (3, 2, 5), 'h_0': (2, 2, 8), ...}``."""
        return {t.name: t.sizes for t in self.tensors}

    @property
    def num_parameters(self) -> int:
        """``sum(p.numel() for p in layer.parameters())``."""
        return sum(p.numel for p in self.parameters)

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready plain data."""
        return {
            "layer": self.config.class_name,
            "arguments": self.config.arguments(),
            "input_shape": list(self.input_shape) if _is_shape(self.input_shape) else self.input_shape,
            "lang": self.lang,
            "meanings": {name: meaning for name, _, meaning in self.arguments},
            "equations": list(self.equations),
            "shapes": {
                t.name: {"shape": list(t.sizes), "axes": list(t.axes), "meaning": t.meaning}
                for t in self.tensors
            },
            "axes": {symbol: {"size": size, "meaning": m} for symbol, size, m in self.axes},
            "parameters": [
                {"name": p.name, "shape": list(p.shape), "numel": p.numel, "meaning": p.meaning}
                for p in self.parameters
            ],
            "num_parameters": self.num_parameters,
            "notes": list(self.notes),
            "problems": [{"subject": p.subject, "message": p.message} for p in self.problems],
        }

    def _sections(self) -> list[_Section]:
        """The explanation as titled tables, for both the plain and the rich rendering."""
        text = _TEXT[self.lang]
        sections = [
            _Section(text["heading.arguments"], [(f"{n}={v!r}", m) for n, v, m in self.arguments]),
            _Section(text["heading.cell" if self.config.cell_only else "heading.recurrence"],
                     [(line,) for line in self.equations]),
        ]
        if self.tensors:
            misfit = any(p.subject == "input_shape" for p in self.problems)
            sections.append(_Section(
                text["heading.expected" if misfit else "heading.shapes"],
                [(t.name, _format_shape(t.sizes), _format_shape(t.axes), t.meaning)
                 for t in self.tensors],
                header=text["header.shapes"],
            ))
            sections.append(_Section(
                text["heading.axes"],
                [(symbol, text["any"] if isinstance(size, str) else size, meaning)
                 for symbol, size, meaning in self.axes],
            ))
        if self.parameters:
            sections.append(_Section(
                text["heading.parameters"],
                [(p.name, _format_shape(p.shape), p.numel, p.meaning) for p in self.parameters]
                + [(text["total"], "", self.num_parameters, "")],
                header=text["header.parameters"],
            ))
        if self.notes:
            sections.append(_Section(text["heading.notes"], [(f"- {n}",) for n in self.notes]))
        if self.problems:
            sections.append(_Section(
                text["heading.problems"], [(f"- {p}",) for p in self.problems], style="red"
            ))
        return [section for section in sections if section.rows]

    def __str__(self) -> str:
        lines = [self.title]
        for section in self._sections():
            lines += ["", section.title]
            rows = ([section.header] if section.header else []) + section.rows
            lines += _plain_table(rows)
        return "\n".join(lines)

    def __rich__(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        parts: list[Any] = [Text(self.title, style="bold")]
        for section in self._sections():
            table = Table(
                title=section.title, title_justify="left", title_style="bold cyan",
                box=None, show_header=section.header is not None, header_style="dim",
                padding=(0, 1),
            )
            width = len(section.rows[0])
            for column in range(width):
                numeric = any(isinstance(row[column], int) for row in section.rows)
                table.add_column(
                    section.header[column] if section.header else None,
                    justify="right" if numeric else "left",
                    style="bold" if column == 0 and width > 1 else None,
                )
            for row in section.rows:
                table.add_row(*(str(cell) for cell in row), style=section.style or None)
            parts += [Text(""), table]
        return Group(*parts)

    def __repr__(self) -> str:
        return (
            f"<Explanation of {self.config.signature()}: {self.num_parameters} parameters, "
            f"{len(self.problems)} problem(s); print() it to read it>"
        )


@dataclass(frozen=True)
class _Section:
    title: str
    rows: list[tuple[Any, ...]]
    header: tuple[str, ...] | None = None
    style: str = ""


def explain(
    input_size: Any,
    hidden_size: Any = None,
    num_layers: Any = 1,
    *,
    nonlinearity: Any = None,
    bias: Any = True,
    batch_first: Any = False,
    dropout: Any = 0.0,
    bidirectional: Any = False,
    proj_size: Any = 0,
    cell: str = "rnn",
    cell_only: bool = False,
    input_shape: Any = None,
    lang: str = "en",
) -> Explanation:
    """Explain a recurrent layer: its arguments, shapes, recurrence and parameters.

    Args:
        input_size, hidden_size, num_layers, nonlinearity, bias, batch_first,
            dropout, bidirectional, proj_size: the layer's constructor
            arguments, as ``torch.nn`` takes them. ``nonlinearity`` belongs to
            RNN and RNNCell, ``proj_size`` to LSTM; cells take no
            ``num_layers``, ``batch_first``, ``dropout`` or ``bidirectional``.
            Instead of the arguments, ``input_size`` may be a layer: an
            ``rnnkit`` or ``torch.nn`` RNN, LSTM, GRU, or one of their cells.
        cell: ``'rnn'``, ``'lstm'`` or ``'gru'``.
        cell_only: explain the single-step cell (``RNNCell``, ...) instead of
            the sequence layer.
        input_shape: the shape of the input, e.g. ``(3, 2, 5)``: ``(L, N, H_in)``,
            ``(N, L, H_in)`` with ``batch_first``, or ``(L, H_in)`` unbatched;
            ``(N, H_in)`` or ``(H_in,)`` for a cell. Without it, the sequence
            length and batch size stay symbolic (``L``, ``N``).
        lang: ``'en'`` or ``'zh'`` (Traditional Chinese).

    Returns:
        An :class:`Explanation`. Arguments or an input shape that the layer
        would reject do not raise: they are listed in its ``problems``.

    Raises:
        ValueError: for an unknown ``cell`` or ``lang``.
        TypeError: for a module that is not a recurrent layer, or a module
            together with layer arguments.

    Example::

        >>> e = explain(5, 8, num_layers=2, input_shape=(3, 2, 5), lang="zh")
        >>> e.shapes["h_0"]
        (2, 2, 8)
        >>> print(e)  # doctest: +SKIP
    """
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(map(repr, LANGS))}, got {lang!r}")
    given = dict(
        num_layers=num_layers, nonlinearity=nonlinearity, bias=bias, batch_first=batch_first,
        dropout=dropout, bidirectional=bidirectional, proj_size=proj_size, cell=cell,
        cell_only=cell_only,
    )
    if hidden_size is None or _class_name(input_size) is not None:
        if hidden_size is not None or any(v != _DEFAULTS[k] for k, v in given.items()):
            raise TypeError("explain() takes either a module or layer arguments, not both")
        config = LayerConfig.from_module(input_size)
    else:
        config = LayerConfig(input_size, hidden_size, **given)

    text = _TEXT[lang]
    problems = _argument_problems(config, text)
    batched, sizes, shape_problems = _read_input_shape(config, input_shape, text)
    usable = not problems
    problems += shape_problems
    tensors = _tensors(config, batched, sizes, text) if usable else []
    used = [symbol for symbol in _AXIS_ORDER if any(symbol in t.axes for t in tensors)]

    if input_shape is not None:
        shape = _format_shape(input_shape) if _is_shape(input_shape) else repr(input_shape)
        title = text["title.shape"].format(layer=config.signature(), shape=shape)
    else:
        symbols = ", ".join(s for s in ("L", "N") if s in used) or "L, N"
        title = text["title.symbolic"].format(layer=config.signature(), symbols=symbols)
    return Explanation(
        config=config,
        input_shape=tuple(input_shape) if _is_shape(input_shape) else input_shape,
        lang=lang,
        title=title,
        arguments=tuple(
            (name, value, meaning(name, lang)) for name, value in config.arguments().items()
        ),
        equations=tuple(_equations(config, text)) if usable else (),
        tensors=tuple(tensors),
        axes=tuple((s, sizes[s], _axis_meaning(s, config, text)) for s in used),
        parameters=tuple(_parameters(config, text)) if usable else (),
        notes=tuple(_notes(config, batched, text)) if usable else (),
        problems=tuple(problems),
    )


# -- checks ------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(_is_int(size) for size in value)


def _argument_problems(config: LayerConfig, text: dict[str, Any]) -> list[Problem]:
    """What the layer's constructor would reject, explained.

    The verdicts are those of the checks every rnnkit layer runs
    (:mod:`rnnkit.layers.checks`, which raise what ``torch.nn`` raises): the
    exception each raises picks the explanation, in the explanation's language.
    """
    problems: list[Problem] = []

    def problem(subject: str, key: str, **values: Any) -> None:
        problems.append(Problem(subject, text[key].format(name=subject, **values)))

    layer = config.class_name
    taken = _ARGUMENTS[layer]
    for name in ("num_layers", "nonlinearity", "batch_first", "dropout", "bidirectional", "proj_size"):
        value = getattr(config, name)
        if name not in taken and value != _DEFAULTS[name]:
            reason = text.get(f"reason.{name}", text["reason.cell"]).format(layer=layer)
            problem(name, "problem.not_argument", value=value, layer=layer, reason=reason)

    for name in ("input_size", "hidden_size", "num_layers"):
        value = getattr(config, name)
        if name in taken:
            error = _rejection(checks.check_size, name, value)
            if error is not None:
                problem(name, "problem.int" if error is TypeError else "problem.positive", value=value)
    for name in ("bias", "batch_first", "bidirectional"):
        value = getattr(config, name)
        if name in taken and _rejection(checks.check_flag, name, value):
            problem(name, "problem.bool", value=value)
    if "dropout" in taken and _rejection(checks.check_dropout, config.dropout, config.num_layers):
        problem("dropout", "problem.dropout", value=config.dropout)
    arguments = config.arguments()
    if "nonlinearity" in taken and _rejection(checks.check_nonlinearity, arguments["nonlinearity"]):
        problem("nonlinearity", "problem.nonlinearity", value=config.nonlinearity)
    if "proj_size" in taken:
        proj, hidden = config.proj_size, config.hidden_size
        alone = _rejection(checks.check_proj_size, proj, math.inf)  # any hidden size
        if alone is TypeError:
            problem("proj_size", "problem.int", value=proj)
        elif alone is not None:
            problem("proj_size", "problem.proj_negative", value=proj)
        elif (
            _rejection(checks.check_size, "hidden_size", hidden) is None
            and _rejection(checks.check_proj_size, proj, hidden) is not None
        ):
            problem("proj_size", "problem.proj_large", value=proj, hidden=hidden)
    return problems


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


def _read_input_shape(
    config: LayerConfig, input_shape: Any, text: dict[str, Any]
) -> tuple[bool, dict[str, Size], list[Problem]]:
    """Whether the input is batched, the size of every axis symbol, and what
    keeps the layer from taking ``input_shape``. Sizes the input does not
    settle (all of them, when it has a problem) stay symbolic."""
    sizes: dict[str, Size] = {"L": "L", "N": "N"}
    if all(_is_int(getattr(config, n)) for n in ("input_size", "hidden_size", "num_layers", "proj_size")):
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

    if not _is_shape(input_shape):
        return problem("problem.shape_type", value=input_shape)
    shape = tuple(int(size) for size in input_shape)
    batched_axes, unbatched_axes = (_input_axes(config, batched) for batched in (True, False))
    if len(shape) not in (len(batched_axes), len(unbatched_axes)):
        return problem(
            "problem.ndim", shape=_format_shape(shape), n=len(shape), layer=config.class_name,
            batched=len(batched_axes), batched_axes=_format_shape(batched_axes),
            unbatched=len(unbatched_axes), unbatched_axes=_format_shape(unbatched_axes),
        )
    if any(size < 0 for size in shape):
        return problem("problem.negative", shape=_format_shape(shape))
    batched = len(shape) == len(batched_axes)
    axes = batched_axes if batched else unbatched_axes
    if shape[-1] != config.input_size:
        return problem("problem.features", got=shape[-1], want=config.input_size)
    if "L" in axes and shape[axes.index("L")] == 0:
        return problem("problem.empty", index=axes.index("L"))
    return batched, sizes | dict(zip(axes, shape)), []


# -- what the layer does -------------------------------------------------------------

_AXIS_ORDER = ("L", "N", "H_in", "H_out", "H_cell", "D*num_layers", "D*H_out")


def _input_axes(config: LayerConfig, batched: bool) -> tuple[str, ...]:
    if config.cell_only:
        axes: tuple[str, ...] = ("N", "H_in")
    else:
        axes = ("N", "L", "H_in") if config.batch_first is True else ("L", "N", "H_in")
    return axes if batched else tuple(a for a in axes if a != "N")


def _tensors(
    config: LayerConfig, batched: bool, sizes: dict[str, Size], text: dict[str, Any]
) -> list[TensorShape]:
    """input, the initial state, output (sequence layers) and the final state."""
    lstm = config.cell == "lstm"
    state = ("N",) if config.cell_only else ("D*num_layers", "N")
    states = {"h": (*state, "H_out"), **({"c": (*state, "H_cell")} if lstm else {})}
    final = "1" if config.cell_only else "n"
    axes = {"input": _input_axes(config, True)}
    axes |= {f"{s}_0": a for s, a in states.items()}
    if not config.cell_only:
        axes["output"] = (*axes["input"][:-1], "D*H_out")
    axes |= {f"{s}_{final}": a for s, a in states.items()}

    meanings = text["tensor.cell" if config.cell_only else "tensor.layer"]
    shapes = []
    for name, named in axes.items():
        named = named if batched else tuple(a for a in named if a != "N")
        shapes.append(TensorShape(name, named, tuple(sizes[a] for a in named), meanings[name]))
    return shapes


def _axis_meaning(symbol: str, config: LayerConfig, text: dict[str, Any]) -> str:
    if symbol == "H_out" and config.proj_size:
        return text["axis"]["H_out.proj"]
    return text["axis"][symbol]


def _parameters(config: LayerConfig, text: dict[str, Any]) -> list[ParameterShape]:
    """Every parameter in ``torch.nn``'s order, with the matrices it stacks."""
    gates = _GATES[config.cell]

    def stacked(kind: str, part: str) -> str:
        """``W_ih`` for an RNN; ``W_ii|W_if|W_ig|W_io`` for an LSTM's gate blocks."""
        if config.cell == "rnn":
            return f"{kind}_{part}h"
        return "|".join(f"{kind}_{part}{gate}" for gate in gates)

    symbols = {
        "weight_ih": stacked("W", "i"), "weight_hh": stacked("W", "h"),
        "bias_ih": stacked("b", "i"), "bias_hh": stacked("b", "h"), "weight_hr": text["projection"],
    }
    if config.cell_only:  # one step: the first layer's forward parameters, without a suffix
        blocks = parameter_shapes(len(gates), config.input_size, config.hidden_size, bias=config.bias)
    else:
        blocks = parameter_shapes(
            len(gates), config.input_size, config.hidden_size, config.num_layers, config.bias,
            config.bidirectional, config.proj_size,
        )
    parameters = []
    for k, d, shapes in blocks:
        name_suffix = where = ""
        if not config.cell_only:
            name_suffix = suffix(k, d)
            where = text["where.layer"].format(k=k) + (text["where.reverse"] if d else "")
        for name, shape in shapes.items():
            parameters.append(ParameterShape(name + name_suffix, shape, symbols[name] + where))
    return parameters


def _equations(config: LayerConfig, text: dict[str, Any]) -> list[str]:
    """The recurrence as torch documents it, without the b terms when bias=False."""

    def term(weight: str, x: str, bias: str) -> str:
        return f"W_{weight} {x}" + (f" + b_{bias}" if config.bias is True else "")

    def affine(i: str, h: str) -> str:
        return f"{term(i, 'x_t', i)} + {term(h, 'h_(t-1)', h)}"

    legend = text["legend.cell" if config.cell_only else "legend.layer"]
    if config.cell == "rnn":
        activation = config.nonlinearity or "tanh"
        return [f"h_t = {activation}({affine('ih', 'hh')})", legend]
    if config.cell == "lstm":
        output = "o_t ⊙ tanh(c_t)"
        return [
            f"i_t = σ({affine('ii', 'hi')})",
            f"f_t = σ({affine('if', 'hf')})",
            f"g_t = tanh({affine('ig', 'hg')})",
            f"o_t = σ({affine('io', 'ho')})",
            "c_t = f_t ⊙ c_(t-1) + i_t ⊙ g_t",
            f"h_t = W_hr ({output})" if config.proj_size else f"h_t = {output}",
            legend,
            text["gates.lstm"],
        ]
    return [
        f"r_t = σ({affine('ir', 'hr')})",
        f"z_t = σ({affine('iz', 'hz')})",
        f"n_t = tanh({term('in', 'x_t', 'in')} + r_t ⊙ ({term('hn', 'h_(t-1)', 'hn')}))",
        "h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_(t-1)",
        legend,
        text["gates.gru"],
    ]


def _notes(config: LayerConfig, batched: bool, text: dict[str, Any]) -> list[str]:
    """What the options change, for the options set."""
    notes = []
    if config.cell_only:
        notes.append(text["note.cell"])
    if config.cell == "lstm":
        final = "1" if config.cell_only else "n"
        notes.append(text["note.lstm_state"].format(
            layer=config.class_name, state_in="h_0, c_0", state_out=f"h_{final}, c_{final}"
        ))
    if config.proj_size:
        notes.append(text["note.proj"].format(p=config.proj_size, h=config.hidden_size))
    if config.dropout and config.num_layers > 1:
        notes.append(text["note.dropout"].format(
            p=config.dropout, n=config.num_layers - 1, num_layers=config.num_layers
        ))
    elif config.dropout:
        notes.append(text["note.dropout_unused"].format(p=config.dropout))
    if config.bidirectional:
        h = config.proj_size or config.hidden_size
        notes.append(text["note.bidirectional"].format(h=h, d=2 * h))
    if config.batch_first and batched:
        states = "h_0, c_0, h_n, c_n" if config.cell == "lstm" else "h_0, h_n"
        notes.append(text["note.batch_first"].format(states=states))
    if not batched:
        notes.append(text["note.unbatched"])
    return notes


# -- plain text ------------------------------------------------------------------


def _format_shape(sizes: Any) -> str:
    """``(3, 2, 5)``, ``(8,)``, ``(L, N, H_in)``."""
    items = [str(size) for size in sizes]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _width(s: str) -> int:
    """Columns ``s`` takes in a terminal: two for each wide (CJK) character."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _plain_table(rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows as aligned, two-space-indented lines; numbers right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    columns = max(len(row) for row in rows)
    widths = [max((_width(r[c]) for r in cells if c < len(r)), default=0) for c in range(columns)]
    numeric = [any(isinstance(row[c], int) for row in rows if c < len(row)) for c in range(columns)]
    lines = []
    for row in cells:
        padded = []
        for c, cell in enumerate(row):
            pad = " " * (widths[c] - _width(cell))
            last = c == len(row) - 1
            padded.append(pad + cell if numeric[c] else cell + ("" if last else pad))
        lines.append(("  " + "  ".join(padded)).rstrip())
    return lines


# -- the wording, in each language -----------------------------------------------------

_TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "title.shape": "{layer} with an input of shape {shape}",
        "title.symbolic": "{layer}; no input shape given, so {symbols} stay symbolic",
        "heading.arguments": "Arguments",
        "heading.recurrence": "Recurrence, at every step t of every layer",
        "heading.cell": "One step",
        "heading.shapes": "Shapes",
        "heading.expected": "Shapes the layer expects",
        "heading.axes": "Axes",
        "heading.parameters": "Parameters",
        "heading.notes": "Notes",
        "heading.problems": "Problems",
        "header.shapes": ("tensor", "shape", "axes", "meaning"),
        "header.parameters": ("name", "shape", "numel", "holds"),
        "total": "total",
        "any": "any",
        "where.layer": ", layer {k}",
        "where.reverse": ", reverse",
        "projection": "W_hr, the projection",
        "meaning": {
            "input_size": "features in each input step x_t: the last axis of the input",
            "hidden_size": "features in the hidden state h_t (and in an LSTM's cell state c_t)",
            "num_layers": "recurrent layers stacked on each other; layer k+1 reads "
                          "layer k's h_t as its input (default 1)",
            "nonlinearity": "the activation of the recurrence: 'tanh' (default) or 'relu'",
            "bias": "whether to add the biases b_ih and b_hh (default True)",
            "batch_first": "True lays input and output out as (batch, seq, feature) instead of "
                           "(seq, batch, feature); the states keep their layout (default False)",
            "dropout": "probability of zeroing each output element of every layer but the last, "
                       "in training mode only (default 0)",
            "bidirectional": "True also runs every layer from the last step to the first and "
                             "joins both directions' features (default False)",
            "proj_size": "if > 0, h_t is projected down to proj_size features by weight_hr; "
                         "c_t keeps hidden_size (default 0: no projection)",
        },
        "axis": {
            "L": "seq: the sequence length, or number of time steps",
            "N": "batch: how many sequences are processed side by side",
            "H_in": "feature: input features, = input_size",
            "H_out": "hidden features, = hidden_size",
            "H_out.proj": "hidden features after the projection, = proj_size",
            "H_cell": "cell-state features, = hidden_size",
            "D*num_layers": "one state per layer and direction (D = 2 if bidirectional, else 1)",
            "D*H_out": "output features: the last layer's h_t, both directions side by side if D = 2",
        },
        "tensor.layer": {
            "input": "the input sequence",
            "h_0": "initial hidden state of every layer and direction; zeros if omitted",
            "c_0": "initial cell state of every layer and direction; zeros if omitted",
            "output": "the last layer's h_t at every step",
            "h_n": "final hidden state of every layer and direction",
            "c_n": "final cell state of every layer and direction",
        },
        "tensor.cell": {
            "input": "the input x_t of one step",
            "h_0": "hidden state h_(t-1) before the step; zeros if omitted",
            "c_0": "cell state c_(t-1) before the step; zeros if omitted",
            "h_1": "hidden state h_t after the step (returned)",
            "c_1": "cell state c_t after the step (returned)",
        },
        "legend.layer": "x_t: the input at step t (in layer k > 0, the output of layer k-1); "
                        "h_(t-1): the previous hidden state, h_0 at t = 0",
        "legend.cell": "x_t: the input; h_(t-1): the state passed in; h_t: the state returned",
        "gates.lstm": "i, f, g, o: input gate, forget gate, cell candidate, output gate; "
                      "c_t: cell state; σ: sigmoid; ⊙: element-wise product",
        "gates.gru": "r, z, n: reset gate, update gate, new candidate state; "
                     "σ: sigmoid; ⊙: element-wise product",
        "note.cell": "a cell computes a single step: loop over time yourself and pass the "
                     "returned state back in",
        "note.lstm_state": "{layer} takes its state as a tuple ({state_in}) and returns ({state_out})",
        "note.proj": "proj_size={p}: h_t is projected from {h} to {p} features by weight_hr, so "
                     "h_0, h_n and output carry {p} features while c_0 and c_n keep {h}",
        "note.dropout": "dropout={p}: in training mode only, each output element of every layer "
                        "but the last ({n} of {num_layers}) is zeroed with probability {p} before "
                        "the next layer reads it; model.eval() turns it off",
        "note.dropout_unused": "dropout={p} has no effect with num_layers=1: dropout is only "
                               "applied between stacked layers (torch warns about this too)",
        "note.bidirectional": "bidirectional=True: D = 2. Every layer runs forward and backward; "
                              "output joins both directions ({h} + {h} = {d} features, forward "
                              "first); the final states come layer by layer, forward before "
                              "reverse; layers after the first read all {d} features",
        "note.batch_first": "batch_first=True puts N first in input and output only; {states} "
                            "stay (D*num_layers, N, ...)",
        "note.unbatched": "unbatched input: no shape has the N axis",
        "reason.cell": "a cell computes one step of one layer in one direction",
        "reason.nonlinearity": "only RNN and RNNCell choose their activation; {layer} always "
                               "uses sigmoid and tanh",
        "reason.proj_size": "only LSTM projects its hidden state",
        "problem.not_argument": "{name}={value!r} is not an argument of {layer}: {reason}",
        "problem.int": "{name} must be a Python int, got {value!r}",
        "problem.positive": "{name} is {value}, but it must be at least 1",
        "problem.bool": "{name} must be True or False, got {value!r}",
        "problem.dropout": "dropout is {value!r}, but it must be a probability between 0 and 1",
        "problem.nonlinearity": "nonlinearity is {value!r}, but it must be 'tanh' or 'relu'",
        "problem.proj_negative": "proj_size is {value}, but it must be 0 (no projection) or positive",
        "problem.proj_large": "proj_size is {value}, but it must be smaller than hidden_size = "
                              "{hidden}: the projection makes h_t smaller",
        "problem.shape_type": "input_shape must be a sequence of integers such as (3, 2, 5), "
                              "got {value!r}",
        "problem.ndim": "input_shape {shape} has {n} axes, but {layer} takes {batched} axes "
                        "{batched_axes}, or {unbatched} {unbatched_axes} without a batch",
        "problem.negative": "input_shape {shape} has a negative size; every size must be 0 or more",
        "problem.features": "input_shape[-1] is {got} but input_size is {want}: the last axis "
                            "holds the features of each step",
        "problem.empty": "the sequence length L = input_shape[{index}] is 0: a sequence needs "
                         "at least one step",
    },
    "zh": {
        "title.shape": "{layer}，輸入形狀 {shape}",
        "title.symbolic": "{layer}；未提供輸入形狀，{symbols} 以符號表示",
        "heading.arguments": "引數",
        "heading.recurrence": "遞迴式（每一層的每個時間步 t）",
        "heading.cell": "單步計算",
        "heading.shapes": "形狀",
        "heading.expected": "此層預期的形狀",
        "heading.axes": "維度符號",
        "heading.parameters": "可訓練參數",
        "heading.notes": "附註",
        "heading.problems": "問題",
        "header.shapes": ("張量", "形狀", "維度", "說明"),
        "header.parameters": ("名稱", "形狀", "元素數", "內容"),
        "total": "參數總數",
        "any": "任意",
        "where.layer": "，第 {k} 層",
        "where.reverse": "，反向",
        "projection": "W_hr，投影矩陣",
        "meaning": {
            "input_size": "輸入 x_t 每個時間步的特徵維度，即輸入的最後一個維度",
            "hidden_size": "隱藏狀態 h_t 的特徵數（LSTM 的細胞狀態 c_t 也是這個大小）",
            "num_layers": "堆疊的循環層數，預設 1；第 k+1 層以第 k 層的 h_t 作為輸入",
            "nonlinearity": "遞迴使用的非線性函數：'tanh'（預設）或 'relu'",
            "bias": "是否加上偏置項 b_ih 與 b_hh，預設 True",
            "batch_first": "True 時輸入與輸出的維度順序為 (batch, seq, feature)，而非預設的 "
                           "(seq, batch, feature)；狀態張量的順序不變",
            "dropout": "0 到 1 之間的機率：除最後一層外，每層輸出的每個元素以此機率歸零，"
                       "僅在訓練模式生效，預設 0",
            "bidirectional": "True 時為雙向：每一層另從最後一個時間步往回跑一次，"
                             "並串接兩個方向的特徵，預設 False",
            "proj_size": "大於 0 時，h_t 經 weight_hr 投影為 proj_size 個特徵，c_t 仍為 "
                         "hidden_size 個；預設 0（不投影）",
        },
        "axis": {
            "L": "seq：序列長度，即時間步數",
            "N": "batch：批量大小，即同時處理的序列數",
            "H_in": "feature：輸入特徵數，= input_size",
            "H_out": "隱藏特徵數，= hidden_size",
            "H_out.proj": "投影後的隱藏特徵數，= proj_size",
            "H_cell": "細胞狀態的特徵數，= hidden_size",
            "D*num_layers": "每一層的每個方向各一個狀態（雙向時 D = 2，否則 D = 1）",
            "D*H_out": "輸出特徵數：最後一層的 h_t，D = 2 時兩個方向並排串接",
        },
        "tensor.layer": {
            "input": "輸入序列",
            "h_0": "每一層、每個方向的初始隱藏狀態；省略時為全零",
            "c_0": "每一層、每個方向的初始細胞狀態；省略時為全零",
            "output": "最後一層在每個時間步的 h_t",
            "h_n": "每一層、每個方向最後的隱藏狀態",
            "c_n": "每一層、每個方向最後的細胞狀態",
        },
        "tensor.cell": {
            "input": "單一時間步的輸入 x_t",
            "h_0": "這一步之前的隱藏狀態 h_(t-1)；省略時為全零",
            "c_0": "這一步之前的細胞狀態 c_(t-1)；省略時為全零",
            "h_1": "這一步之後的隱藏狀態 h_t（回傳值）",
            "c_1": "這一步之後的細胞狀態 c_t（回傳值）",
        },
        "legend.layer": "x_t：時間步 t 的輸入（第 k > 0 層則是第 k-1 層的輸出）；"
                        "h_(t-1)：上一步的隱藏狀態，t = 0 時為 h_0",
        "legend.cell": "x_t：輸入；h_(t-1)：傳入的狀態；h_t：回傳的狀態",
        "gates.lstm": "i、f、g、o：輸入門、遺忘門、候選細胞狀態、輸出門；c_t：細胞狀態；"
                      "σ：sigmoid；⊙：逐元素相乘",
        "gates.gru": "r、z、n：重置門、更新門、新的候選狀態；σ：sigmoid；⊙：逐元素相乘",
        "note.cell": "cell 只計算一個時間步：需自行對時間做迴圈，並把回傳的狀態傳入下一步",
        "note.lstm_state": "{layer} 的狀態以 tuple 傳入 ({state_in})，並回傳 ({state_out})",
        "note.proj": "proj_size={p}：h_t 經 weight_hr 從 {h} 個特徵投影為 {p} 個，因此 h_0、"
                     "h_n 與 output 為 {p} 個特徵，c_0 與 c_n 仍為 {h} 個",
        "note.dropout": "dropout={p}：僅在訓練模式下，除最後一層外（{num_layers} 層中的 {n} 層）"
                        "每層輸出的每個元素以機率 {p} 歸零後再交給下一層；model.eval() 後不套用",
        "note.dropout_unused": "num_layers=1 時 dropout={p} 沒有作用：dropout 只套用在堆疊的層"
                               "與層之間（torch 也會對此發出警告）",
        "note.bidirectional": "bidirectional=True：D = 2。每一層都正向、反向各跑一次；output "
                              "串接兩個方向（{h} + {h} = {d} 個特徵，正向在前）；最後的狀態依層"
                              "排列，每層正向在前、反向在後；第一層之後的各層讀入全部 {d} 個特徵",
        "note.batch_first": "batch_first=True 只讓 input 與 output 的 N 排在最前面；{states} "
                            "仍為 (D*num_layers, N, ...)",
        "note.unbatched": "無批量的輸入：所有形狀都沒有 N 這個維度",
        "reason.cell": "cell 只計算單一層、單一方向的一個時間步",
        "reason.nonlinearity": "只有 RNN 與 RNNCell 可以選擇非線性函數；{layer} 固定使用 "
                               "sigmoid 與 tanh",
        "reason.proj_size": "只有 LSTM 會投影隱藏狀態",
        "problem.not_argument": "{name}={value!r} 不是 {layer} 的引數：{reason}",
        "problem.int": "{name} 必須是整數，卻收到 {value!r}",
        "problem.positive": "{name} 是 {value}，但必須至少為 1",
        "problem.bool": "{name} 必須是 True 或 False，卻收到 {value!r}",
        "problem.dropout": "dropout 是 {value!r}，但必須是 0 到 1 之間的機率",
        "problem.nonlinearity": "nonlinearity 是 {value!r}，但只能是 'tanh' 或 'relu'",
        "problem.proj_negative": "proj_size 是 {value}，但必須為 0（不投影）或正整數",
        "problem.proj_large": "proj_size 是 {value}，但必須小於 hidden_size = {hidden}："
                              "投影是把 h_t 變小",
        "problem.shape_type": "input_shape 必須是整數序列，例如 (3, 2, 5)，卻收到 {value!r}",
        "problem.ndim": "input_shape {shape} 有 {n} 個維度，但 {layer} 的輸入須為 {batched} 維 "
                        "{batched_axes}，或無批量時的 {unbatched} 維 {unbatched_axes}",
        "problem.negative": "input_shape {shape} 含有負的大小；每個維度都必須 ≥ 0",
        "problem.features": "input_shape[-1] 是 {got}，但 input_size 是 {want}：最後一個維度是"
                            "每個時間步的特徵數，兩者必須相等",
        "problem.empty": "序列長度 L = input_shape[{index}] 為 0：序列至少需要一個時間步",
    },
}
