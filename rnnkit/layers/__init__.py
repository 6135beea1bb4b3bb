"""The ``torch.nn``-compatible recurrent modules.

The classes load on first use (they import torch), so that the command line
and :mod:`rnnkit.explain` can use the torch-free parts of this package
(:mod:`rnnkit.layers.checks`, :data:`SEQUENCE_LAYERS`) without waiting for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnkit.layers.gru import GRU, GRUCell
    from rnnkit.layers.lstm import LSTM, LSTMCell
    from rnnkit.layers.rnn import RNN, RNNCell

SEQUENCE_LAYERS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
"""The sequence layer class of each cell name (``--cell``); its cell is the
same name with ``Cell``."""

_MODULES = {"RNN": "rnn", "RNNCell": "rnn", "LSTM": "lstm", "LSTMCell": "lstm", "GRU": "gru", "GRUCell": "gru"}

__all__ = ["RNN", "RNNCell", "LSTM", "LSTMCell", "GRU", "GRUCell", "SEQUENCE_LAYERS"]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(f"rnnkit.layers.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULES))
