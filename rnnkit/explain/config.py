"""What :func:`~rnnkit.explain.explain` is asked about: :class:`LayerConfig`,
the constructor arguments of one ``torch.nn`` recurrent layer or cell."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any

from rnnkit.kinds import CELL_EXTENSIONS, CELLS, CLASSES, LAYER_EXTENSIONS, Cell


@dataclass(frozen=True)
class LayerConfig:
    """The constructor arguments of one ``torch.nn`` recurrent layer or cell.

    ``cell`` (a key of :data:`rnnkit.kinds.CELLS`: ``'rnn'``, ``'lstm'``,
    ``'gru'``) and ``cell_only`` pick the class: ``LayerConfig(5, 8,
    cell='gru', cell_only=True)`` is ``GRUCell(5, 8)``. Fields the class does
    not take must keep their defaults. ``layer_norm``, ``recurrent_dropout`` and
    ``zoneout`` are rnnkit's keyword-only options (:data:`rnnkit.kinds.LAYER_EXTENSIONS`;
    a cell takes ``layer_norm`` only). ``nonlinearity`` is ``None`` unless
    given, which a cell that takes it reads as its default kind's.
    Values are not checked here: :func:`~rnnkit.explain.explain` reports what
    is wrong with them.
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
    layer_norm: Any = False
    recurrent_dropout: Any = 0.0
    zoneout: Any = 0.0
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
        name = class_name(module)
        if name is None:
            raise TypeError(
                "explain() takes input_size and hidden_size, or in their place a recurrent "
                f"module ({', '.join(CLASSES)}), got {type(module).__name__}"
            )
        cell, cell_only = CLASSES[name]
        arguments = cell.cell_arguments if cell_only else cell.layer_arguments
        values = {arg: getattr(module, arg) for arg in arguments}
        for arg in CELL_EXTENSIONS if cell_only else LAYER_EXTENSIONS:  # a torch.nn module has none
            values[arg] = getattr(module, arg, DEFAULTS[arg])
        return cls(**values, cell=cell.name, cell_only=cell_only)

    @property
    def entry(self) -> Cell:
        """The :data:`rnnkit.kinds.CELLS` entry of ``cell``."""
        return CELLS[self.cell]

    @property
    def class_name(self) -> str:
        """``'RNN'``, ``'LSTMCell'``, ...: the ``torch.nn`` class configured."""
        return self.entry.cell_class if self.cell_only else self.entry.layer

    @property
    def taken(self) -> tuple[str, ...]:
        """The class's constructor arguments, in torch's order, then rnnkit's keyword-only ones."""
        if self.cell_only:
            return self.entry.cell_arguments + CELL_EXTENSIONS
        return self.entry.layer_arguments + LAYER_EXTENSIONS

    def arguments(self) -> dict[str, Any]:
        """The class's constructor arguments with their values (``nonlinearity``'s default
        filled in); rnnkit's own options only where they are set."""
        extensions = CELL_EXTENSIONS if self.cell_only else LAYER_EXTENSIONS
        values = {
            name: getattr(self, name) for name in self.taken
            if name not in extensions or getattr(self, name) != DEFAULTS[name]
        }
        if values.get("nonlinearity", "") is None:
            values["nonlinearity"] = self.entry.kind().nonlinearity
        return values

    def signature(self) -> str:
        """The constructor call, e.g. ``RNN(input_size=5, hidden_size=8, num_layers=2)``."""
        defaults = DEFAULTS | {"nonlinearity": self.entry.kind().nonlinearity}
        shown = [
            f"{name}={value!r}" for name, value in self.arguments().items()
            if name in ("input_size", "hidden_size") or value != defaults[name]
        ]
        return f"{self.class_name}({', '.join(shown)})"


DEFAULTS = {f.name: f.default for f in fields(LayerConfig)}
"""Each field's default: what an argument the class does not take must keep."""


def class_name(module: Any) -> str | None:
    """``'LSTM'`` for an rnnkit or torch.nn LSTM (or a subclass), ...; ``None`` for anything else."""
    return next((k.__name__ for k in type(module).__mro__ if k.__name__ in CLASSES), None)


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_shape(value: Any) -> bool:
    """A tuple or list of integers."""
    return isinstance(value, (tuple, list)) and all(is_int(size) for size in value)
