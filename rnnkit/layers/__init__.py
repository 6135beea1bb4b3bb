"""The ``torch.nn``-compatible recurrent modules."""

from rnnkit.layers.rnn import RNN, RNNCell

__all__ = ["RNN", "RNNCell"]
