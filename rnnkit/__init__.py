"""rnnkit: drop-in ``torch.nn`` recurrent layers with fused CPU kernels.

>>> import torch, rnnkit
>>> rnn = rnnkit.RNN(input_size=5, hidden_size=8, num_layers=2)
>>> output, h_n = rnn(torch.randn(3, 2, 5))
>>> output.shape, h_n.shape
(torch.Size([3, 2, 8]), torch.Size([2, 2, 8]))
"""

from rnnkit.explain import explain
from rnnkit.layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"
__all__ = ["RNN", "RNNCell", "LSTM", "LSTMCell", "GRU", "GRUCell", "explain", "__version__"]
