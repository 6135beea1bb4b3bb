"""Gated recurrent units: ``GRU`` (a whole sequence) and ``GRUCell`` (one step)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rnnkit.kinds import CELLS
from rnnkit.layers.base import RecurrentCell, RecurrentLayer

_CELL = CELLS["gru"]


class GRU(RecurrentLayer):
    r"""A multi-layer GRU; a drop-in for :class:`torch.nn.GRU`.

    For each element of the input sequence each layer computes

    .. math::
        \begin{array}{ll}
        r_t = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{array}

    The reset gate scales ``W_hn h + b_hn`` (bias included), as in torch.

    Args:
        input_size: features in each input step, ``H_in``.
        hidden_size: features in the hidden state, ``H_out``.
        num_layers: stacked layers. Default 1.
        bias: whether the layers have ``b_ih`` and ``b_hh``. Default ``True``.
        batch_first: take and return ``(N, L, H)`` instead of ``(L, N, H)``. Default ``False``.
        dropout: probability of zeroing each output of every layer but the
            last, in training mode only. Default 0.
        bidirectional: also run each layer backwards and concatenate. Default ``False``.

    Inputs: ``input, h_0`` — as :class:`rnnkit.RNN`.
        * **input**: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first``,
          ``(L, H_in)`` unbatched, or a ``PackedSequence``.
        * **h_0**: ``(D * num_layers, N, H_out)`` or ``(D * num_layers, H_out)``; zeros if omitted.

    Keyword inputs ``lengths`` and ``return_states``: as :class:`rnnkit.RNN`.

    Outputs: ``output, h_n`` (``output, h_n, states`` with ``return_states``)
        * **output**: ``(L, N, D * H_out)`` (batch first, unbatched or packed like the input).
        * **h_n**: like ``h_0``.
        * **states**: as :class:`rnnkit.RNN`'s, ``(D * num_layers, L, N, H_out)``.

    Attributes:
        weight_ih_l[k]: ``(3*H_out, H_in)`` for ``k = 0``, else ``(3*H_out, D*H_out)``;
        rows are the gates ``r, z, n``. weight_hh_l[k]: ``(3*H_out, H_out)``;
        bias_ih_l[k], bias_hh_l[k]: ``(3*H_out,)``; ``_reverse`` for the backward direction.

    Example::

        >>> gru = GRU(10, 20, num_layers=2)
        >>> output, h_n = gru(torch.randn(5, 3, 10))
        >>> output.shape, h_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    torch_class = nn.GRU
    config_names = _CELL.layer_arguments

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__(
            _CELL.kind().key, input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, device=device, dtype=dtype,
            layer_norm=layer_norm, recurrent_dropout=recurrent_dropout, zoneout=zoneout,
        )


class GRUCell(RecurrentCell):
    r"""A GRU cell; a drop-in for :class:`torch.nn.GRUCell`.

    .. math::
        \begin{array}{ll}
        r = \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z = \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' = (1 - z) \odot n + z \odot h
        \end{array}

    Inputs: ``input, hx``: ``(N, H_in)`` or ``(H_in)``; ``(N, H)`` or ``(H)``, zeros if omitted.

    Output: ``h'``, ``(N, H)`` or ``(H)``.

    Attributes:
        weight_ih ``(3*H, H_in)``, weight_hh ``(3*H, H)``, bias_ih and bias_hh
        ``(3*H,)``, gates in the order ``r, z, n``.

    Example::

        >>> cell = GRUCell(10, 20)
        >>> h = torch.zeros(3, 20)
        >>> for x_t in torch.randn(6, 3, 10):
        ...     h = cell(x_t, h)
    """

    torch_class = nn.GRUCell
    config_names = _CELL.cell_arguments

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        layer_norm: bool = False,
    ) -> None:
        super().__init__(
            _CELL.kind().key, input_size, hidden_size, bias, device=device, dtype=dtype,
            layer_norm=layer_norm,
        )
