"""rnnkit: drop-in ``torch.nn`` recurrent layers with fused CPU kernels.

>>> import torch, rnnkit
>>> rnn = rnnkit.RNN(input_size=5, hidden_size=8, num_layers=2)
>>> output, h_n = rnn(torch.randn(3, 2, 5))
>>> output.shape, h_n.shape
(torch.Size([3, 2, 8]), torch.Size([2, 2, 8]))

The layers load torch on first use, not on ``import rnnkit``; so does
:mod:`rnnkit.onnx` (``rnnkit.onnx.export``), which needs the ``onnx`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rnnkit.explain import explain
from rnnkit.kinds import CLASSES as _CLASSES

if TYPE_CHECKING:
    from rnnkit.layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"
__all__ = [*_CLASSES, "explain", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        from rnnkit import layers

        return getattr(layers, name)
    if name == "onnx":
        import importlib

        return importlib.import_module("rnnkit.onnx")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_CLASSES))
