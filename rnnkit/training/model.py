"""The sequence classifier: an rnnkit recurrent layer, a readout over time, a linear layer.

This is the classic PyTorch tutorial's model (an RNN reads an image row by
row, a linear layer on the last step's output picks the digit), generalised
to any cell type, readout and variable-length sequences.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import rnnkit
from rnnkit.kinds import CELLS
from rnnkit.training.config import ModelConfig


class SequenceClassifier(nn.Module):
    """Class scores for sequences of feature vectors.

    ``features = readout(recurrent(x))``, ``logits = linear(features)``.

    With ``config.layer_norm`` the recurrent layer reads one more feature per
    step, a constant 1: ``x_t -> [x_t, 1]``. Layer norm's ``LN_ih(W_ih x_t)``
    removes the scale of each step's projection, and with few features that
    removes most of what a step says (one feature leaves only its sign); the
    constant's column of ``W_ih`` is a bias inside ``LN_ih`` that keeps it.

    Args:
        config: the layer options and readout.
        input_size: ``F``, the features per step.
        num_classes: ``C``.

    Inputs: ``x, lengths``
        * **x**: ``(N, T, F)``, batch first.
        * **lengths**: ``(N,)`` int64 valid steps per sequence, or ``None`` when
          all ``T`` are valid. Steps past a sequence's length never reach the
          recurrence: the layer takes them as ``lengths=``, which gives the
          packed result without packing the batch.

    Output: logits ``(N, C)``.

    Example::

        >>> model = SequenceClassifier(ModelConfig(hidden_size=16), input_size=8, num_classes=10)
        >>> model(torch.randn(4, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(self, config: ModelConfig, input_size: int, num_classes: int) -> None:
        super().__init__()
        self.readout = config.readout
        self.constant_feature = config.layer_norm
        cell = CELLS[config.cell]
        extra = {"nonlinearity": config.nonlinearity} if "nonlinearity" in cell.layer_arguments else {}
        self.recurrent = getattr(rnnkit, cell.layer)(
            input_size + (1 if self.constant_feature else 0),
            config.hidden_size,
            num_layers=config.num_layers,
            bias=config.bias,
            batch_first=True,
            dropout=config.dropout,
            bidirectional=config.bidirectional,
            **extra,
            layer_norm=config.layer_norm,
            recurrent_dropout=config.recurrent_dropout,
            zoneout=config.zoneout,
        )
        self.directions = 2 if config.bidirectional else 1
        self.classifier = nn.Linear(self.directions * config.hidden_size, num_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        n, t, _ = x.shape
        if self.constant_feature:  # (N, T, F) -> (N, T, F + 1)
            x = torch.cat([x, torch.ones_like(x[..., :1])], dim=2)
        output, h_n = self.recurrent(x, lengths=lengths)
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
            h_n = h_n[0]

        if self.readout == "last":
            # h_n: (L*D, N, H); the last layer's directions, joined: (N, D*H).
            return self.classifier(h_n[-self.directions :].transpose(0, 1).reshape(n, -1))
        valid = None  # (N, T, 1): steps within each length
        if lengths is not None:
            valid = (torch.arange(t, device=x.device) < lengths.to(x.device)[:, None]).unsqueeze(2)
        # output: (N, T, D*H), zeros past each length -> features: (N, D*H)
        if self.readout == "mean":
            features = output.mean(1) if valid is None else (output * valid).sum(1) / valid.sum(1)
        else:
            features = output.amax(1) if valid is None else output.masked_fill(~valid, float("-inf")).amax(1)
        return self.classifier(features)
