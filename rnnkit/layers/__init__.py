"""The ``torch.nn``-compatible recurrent modules."""

from rnnkit.layers.gru import GRU, GRUCell
from rnnkit.layers.lstm import LSTM, LSTMCell
from rnnkit.layers.rnn import RNN, RNNCell

__all__ = ["RNN", "RNNCell", "LSTM", "LSTMCell", "GRU", "GRUCell"]
