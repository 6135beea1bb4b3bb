"""How :func:`~rnnkit.explain.explain` finds what it says: arithmetic on the
arguments and the table of kinds (:mod:`rnnkit.kinds`), without building or
running a layer; what the layer would reject comes from :mod:`rnnkit.explain.checks`.
"""

from __future__ import annotations

import re
from typing import Any

from rnnkit.explain import checks
from rnnkit.explain.config import DEFAULTS, LayerConfig, class_name, is_shape
from rnnkit.explain.result import Explanation, ParameterShape, Size, TensorShape, format_shape
from rnnkit.explain.wording import TEXT
from rnnkit.kinds import RECURRENT_DROPOUT_EQUATION, ZONEOUT_EQUATION
from rnnkit.layers.shapes import parameter_shapes, suffix

LANGS = tuple(TEXT)
"""The languages :func:`explain` speaks: ``en``, and ``zh`` (Traditional Chinese)."""


def meaning(argument: str, lang: str = "en") -> str:
    """What a constructor argument means, in one line: ``meaning('batch_first')``."""
    return TEXT[lang]["meaning"][argument]


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
    layer_norm: Any = False,
    recurrent_dropout: Any = 0.0,
    zoneout: Any = 0.0,
    cell: str = "rnn",
    cell_only: bool = False,
    input_shape: Any = None,
    lengths: Any = None,
    return_states: Any = False,
    lang: str = "en",
) -> Explanation:
    """Explain a recurrent layer: its arguments, shapes, recurrence and parameters.

    Args:
        input_size, hidden_size, num_layers, nonlinearity, bias, batch_first,
            dropout, bidirectional, proj_size: the layer's constructor
            arguments, as ``torch.nn`` takes them. ``nonlinearity`` belongs to
            RNN and RNNCell, ``proj_size`` to LSTM; cells take no
            ``num_layers``, ``batch_first``, ``dropout`` or ``bidirectional``.
        layer_norm, recurrent_dropout, zoneout: rnnkit's keyword-only options
            beyond torch.nn (cells take ``layer_norm`` only).
            Instead of the arguments, ``input_size`` may be a layer: an
            ``rnnkit`` or ``torch.nn`` RNN, LSTM, GRU, or one of their cells.
        cell: a key of :data:`rnnkit.kinds.CELLS`: ``'rnn'``, ``'lstm'`` or ``'gru'``.
        cell_only: explain the single-step cell (``RNNCell``, ...) instead of
            the sequence layer.
        input_shape: the shape of the input, e.g. ``(3, 2, 5)``: ``(L, N, H_in)``,
            ``(N, L, H_in)`` with ``batch_first``, or ``(L, H_in)`` unbatched;
            ``(N, H_in)`` or ``(H_in,)`` for a cell. Without it, the sequence
            length and batch size stay symbolic (``L``, ``N``).
        lengths: the forward's ``lengths=`` keyword (sequence layers): ``True``
            to say that it is given, or the lengths themselves, e.g. ``[3, 1]``,
            to check them against ``input_shape`` too.
        return_states: the forward's ``return_states=True`` (sequence layers):
            adds the ``states`` it returns (an LSTM's ``h_states`` and ``c_states``).
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
        dropout=dropout, bidirectional=bidirectional, proj_size=proj_size, layer_norm=layer_norm,
        recurrent_dropout=recurrent_dropout, zoneout=zoneout, cell=cell, cell_only=cell_only,
    )
    if hidden_size is None or class_name(input_size) is not None:
        if hidden_size is not None or any(v != DEFAULTS[k] for k, v in given.items()):
            raise TypeError("explain() takes either a module or layer arguments, not both")
        config = LayerConfig.from_module(input_size)
    else:
        config = LayerConfig(input_size, hidden_size, **given)

    text = TEXT[lang]
    problems = checks.argument_problems(config, text)
    problems += checks.keyword_problems(config, lengths, return_states, text)
    batched, sizes, shape_problems = checks.read_input_shape(config, input_shape, text)
    usable = not problems
    if not shape_problems and usable:
        shape_problems = checks.lengths_problems(lengths, batched, sizes, input_shape, text)
    problems += shape_problems
    keywords = dict(lengths=lengths is not None and batched, return_states=return_states is True)
    tensors = _tensors(config, batched, sizes, text, **keywords) if usable else []
    used = [symbol for symbol in _AXIS_ORDER if any(symbol in t.axes for t in tensors)]

    if input_shape is not None:
        shape = format_shape(input_shape) if is_shape(input_shape) else repr(input_shape)
        title = text["title.shape"].format(layer=config.signature(), shape=shape)
    else:
        symbols = ", ".join(s for s in ("L", "N") if s in used) or "L, N"
        title = text["title.symbolic"].format(layer=config.signature(), symbols=symbols)
    return Explanation(
        config=config,
        input_shape=tuple(input_shape) if is_shape(input_shape) else input_shape,
        lengths=list(lengths) if is_shape(lengths) else lengths,
        return_states=return_states,
        lang=lang,
        title=title,
        arguments=tuple(
            (name, value, meaning(name, lang)) for name, value in config.arguments().items()
        ),
        equations=tuple(_equations(config, text)) if usable else (),
        tensors=tuple(tensors),
        axes=tuple((s, sizes[s], _axis_meaning(s, config, text)) for s in used),
        parameters=tuple(_parameters(config, text)) if usable else (),
        notes=tuple(_notes(config, batched, text, **keywords)) if usable else (),
        problems=tuple(problems),
    )


# -- what the layer does -------------------------------------------------------------

_AXIS_ORDER = ("L", "N", "H_in", "H_out", "H_cell", "D*num_layers", "D*H_out")


def _tensors(
    config: LayerConfig,
    batched: bool,
    sizes: dict[str, Size],
    text: dict[str, Any],
    lengths: bool = False,
    return_states: bool = False,
) -> list[TensorShape]:
    """input (and its lengths), the initial state, output (sequence layers),
    the final state, and every step's states when the forward returns them."""
    state = ("N",) if config.cell_only else ("D*num_layers", "N")
    # h has H_out features (the projection's, if any); every other part, such as c, H_cell.
    states = {part: (*state, "H_out" if part == "h" else "H_cell") for part in config.entry.state}
    final = "1" if config.cell_only else "n"
    axes = {"input": checks.input_axes(config, True)}
    if lengths:
        axes["lengths"] = ("N",)
    axes |= {f"{s}_0": a for s, a in states.items()}
    if not config.cell_only:
        axes["output"] = (*axes["input"][:-1], "D*H_out")
    axes |= {f"{s}_{final}": a for s, a in states.items()}
    if return_states:
        steps = ("N", "L") if config.batch_first is True else ("L", "N")
        for name, part in _states_names(config).items():
            axes[name] = ("D*num_layers", *steps, states[part][-1])

    meanings = text["tensor.cell" if config.cell_only else "tensor.layer"]
    shapes = []
    for name, named in axes.items():
        named = named if batched else tuple(a for a in named if a != "N")
        shapes.append(TensorShape(name, named, tuple(sizes[a] for a in named), meanings[name]))
    return shapes


def _states_names(config: LayerConfig) -> dict[str, str]:
    """What ``return_states=True`` returns, by name -> the state part it holds:
    ``states`` for a one-part state, ``h_states``, ``c_states`` for an LSTM's."""
    parts = config.entry.state
    return {"states": parts[0]} if len(parts) == 1 else {f"{p}_states": p for p in parts}


def _axis_meaning(symbol: str, config: LayerConfig, text: dict[str, Any]) -> str:
    if symbol == "H_out" and config.proj_size:
        return text["axis"]["H_out.proj"]
    return text["axis"][symbol]


def _parameters(config: LayerConfig, text: dict[str, Any]) -> list[ParameterShape]:
    """Every parameter in ``torch.nn``'s order, with the matrices it stacks."""
    gates = config.entry.gates

    def stacked(kind: str, part: str) -> str:
        """``W_ih`` for an RNN (whose one block is ``h``); ``W_ii|W_if|W_ig|W_io`` for an LSTM."""
        return "|".join(f"{kind}_{part}{gate}" for gate in gates)

    symbols = {
        "weight_ih": stacked("W", "i"), "weight_hh": stacked("W", "h"),
        "bias_ih": stacked("b", "i"), "bias_hh": stacked("b", "h"), "weight_hr": text["projection"],
        **text["layer_norm_parameters"],
    }
    norm = {"layer_norm": config.layer_norm is True, "cell_norm": config.entry.cell_norm}
    if config.cell_only:  # one step: the first layer's forward parameters, without a suffix
        blocks = parameter_shapes(len(gates), config.input_size, config.hidden_size, bias=config.bias, **norm)
    else:
        blocks = parameter_shapes(
            len(gates), config.input_size, config.hidden_size, config.num_layers, config.bias,
            config.bidirectional, config.proj_size, **norm,
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


_BIAS_TERM = re.compile(r" \+ b_\w+")


def _equations(config: LayerConfig, text: dict[str, Any]) -> list[str]:
    """The recurrence as torch documents it (:attr:`rnnkit.kinds.Cell.equations`,
    or its :attr:`~rnnkit.kinds.Cell.layer_norm_equations` with layer_norm=True),
    without the b terms when bias=False and through ``W_hr`` with a projection;
    what recurrent dropout and zoneout change; then the legend of the symbols."""
    arguments = config.arguments()
    lines = config.entry.layer_norm_equations if config.layer_norm is True else config.entry.equations
    equations = [line.format(nonlinearity=arguments.get("nonlinearity")) for line in lines]
    if config.bias is not True:
        equations = [_BIAS_TERM.sub("", line) for line in equations]
    if config.proj_size:
        equations[-1] = equations[-1].replace("h_t = ", "h_t = W_hr (", 1) + ")"
    legend = [text["legend.cell" if config.cell_only else "legend.layer"]]
    if config.zoneout:  # the cell's new state becomes the candidate that zoneout mixes in
        equations[-1] = equations[-1].replace("h_t = ", "h~_t = ", 1)
    if config.recurrent_dropout:
        equations.append(RECURRENT_DROPOUT_EQUATION.replace("p)", f"{config.recurrent_dropout})"))
    if config.zoneout:
        equations.append(ZONEOUT_EQUATION.replace("(p)", f"({config.zoneout})"))
    gates = text.get(f"gates.{config.cell}")
    extra = [text["legend.layer_norm"]] if config.layer_norm is True else []
    return equations + legend + ([gates] if gates else []) + extra


def _notes(
    config: LayerConfig,
    batched: bool,
    text: dict[str, Any],
    lengths: bool = False,
    return_states: bool = False,
) -> list[str]:
    """What the options change, for the options set."""
    notes = []
    parts = config.entry.state
    finals = ", ".join(f"{p}_n" for p in parts)
    finals = f"({finals})" if len(parts) > 1 else finals
    if config.cell_only:
        notes.append(text["note.cell"])
    if len(parts) > 1:
        final = "1" if config.cell_only else "n"
        notes.append(text["note.state_tuple"].format(
            layer=config.class_name,
            state_in=", ".join(f"{p}_0" for p in parts),
            state_out=", ".join(f"{p}_{final}" for p in parts),
        ))
    if config.proj_size:
        notes.append(text["note.proj"].format(p=config.proj_size, h=config.hidden_size))
    if config.dropout and config.num_layers > 1:
        notes.append(text["note.dropout"].format(
            p=config.dropout, n=config.num_layers - 1, num_layers=config.num_layers
        ))
    elif config.dropout:
        notes.append(text["note.dropout_unused"].format(p=config.dropout))
    if config.layer_norm is True:
        notes.append(text["note.layer_norm"])
    if config.recurrent_dropout:
        notes.append(text["note.recurrent_dropout"].format(p=config.recurrent_dropout))
    if config.zoneout:
        notes.append(text["note.zoneout"].format(p=config.zoneout))
    if config.bidirectional:
        h = config.proj_size or config.hidden_size
        notes.append(text["note.bidirectional"].format(h=h, d=2 * h))
    if config.batch_first and batched:
        states = ", ".join(f"{p}_{end}" for end in "0n" for p in parts)
        notes.append(text["note.batch_first"].format(states=states))
    if not batched:
        notes.append(text["note.unbatched"])
    if lengths:
        notes.append(text["note.lengths"].format(final=finals))
    if return_states:
        names = list(_states_names(config))
        states = f"({', '.join(names)})" if len(names) > 1 else names[0]
        notes.append(text["note.return_states"].format(final=finals, states=states))
    return notes
