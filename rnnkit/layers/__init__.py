"""The ``torch.nn``-compatible recurrent modules.

The classes load on first use (they import torch), so that the command line
and :mod:`rnnkit.explain` can use the torch-free parts of this package
(:mod:`rnnkit.layers.checks`, :mod:`rnnkit.layers.shapes`) without waiting
for it. Which module defines which class comes from :data:`rnnkit.kinds.CELLS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rnnkit.kinds import CLASSES

if TYPE_CHECKING:
    from rnnkit.layers.gru import GRU, GRUCell
    from rnnkit.layers.lstm import LSTM, LSTMCell
    from rnnkit.layers.rnn import RNN, RNNCell

__all__ = list(CLASSES)


def __getattr__(name: str) -> Any:
    if name in CLASSES:
        return getattr(importlib.import_module(CLASSES[name][0].module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(CLASSES))
