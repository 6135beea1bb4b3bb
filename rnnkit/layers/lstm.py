"""Long short-term memory: ``LSTM`` (a whole sequence) and ``LSTMCell`` (one step)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rnnkit.kinds import CELLS
from rnnkit.layers.base import RecurrentCell, RecurrentLayer

_CELL = CELLS["lstm"]
_ONEDNN_BUILT = torch.backends.mkldnn.is_available()
"""Whether torch has oneDNN (asked once: torch.compile does not trace the question)."""


class LSTM(RecurrentLayer):
    r"""A multi-layer LSTM; a drop-in for :class:`torch.nn.LSTM`.

    For each element of the input sequence each layer computes

    .. math::
        \begin{array}{ll}
        i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t = o_t \odot \tanh(c_t)
        \end{array}

    and, with ``proj_size > 0``, ``h_t = W_{hr} (o_t \odot \tanh(c_t))``.

    Args:
        input_size: features in each input step, ``H_in``.
        hidden_size: features in the cell state ``c``, ``H_cell``.
        num_layers: stacked layers; layer ``k + 1`` reads layer ``k``'s output. Default 1.
        bias: whether the layers have ``b_ih`` and ``b_hh``. Default ``True``.
        batch_first: take and return ``(N, L, H)`` instead of ``(L, N, H)``. Default ``False``.
        dropout: probability of zeroing each output of every layer but the
            last, in training mode only. Default 0.
        bidirectional: also run each layer backwards and concatenate. Default ``False``.
        proj_size: if ``> 0``, project ``h`` down to ``proj_size`` features. Default 0.

    Inputs: ``input, (h_0, c_0)``
        * **input**: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first``,
          ``(L, H_in)`` unbatched, or a ``PackedSequence``.
        * **h_0**: ``(D * num_layers, N, H_out)`` (``(D * num_layers, H_out)``
          unbatched), ``H_out = proj_size`` if set, else ``hidden_size``.
        * **c_0**: ``(D * num_layers, N, H_cell)``. Both zeros if omitted.

    Keyword inputs ``lengths`` and ``return_states``: as :class:`rnnkit.RNN`.

    Outputs: ``output, (h_n, c_n)`` (``output, (h_n, c_n), (h_states, c_states)``
    with ``return_states``)
        * **output**: ``(L, N, D * H_out)`` (batch first or unbatched like the
          input; packed if the input is): the last layer's ``h_t``.
        * **h_n**, **c_n**: like ``h_0`` and ``c_0``, final states layer by
          layer, forward before backward.
        * **h_states**, **c_states**: every step's ``h_t`` and ``c_t`` of every
          layer and direction, ``(D * num_layers, L, N, H_out)`` and
          ``(D * num_layers, L, N, H_cell)``, laid out as :class:`rnnkit.RNN`'s ``states``.

    Attributes:
        weight_ih_l[k]: ``(4*H_cell, H_in)`` for ``k = 0``, else ``(4*H_cell, D*H_out)``;
        rows are the gates ``i, f, g, o``.
        weight_hh_l[k]: ``(4*H_cell, H_out)``; bias_ih_l[k], bias_hh_l[k]: ``(4*H_cell,)``;
        weight_hr_l[k]: ``(proj_size, H_cell)``, only with ``proj_size > 0``.
        ``_reverse`` for the backward direction. All from U(-1/sqrt(H_cell), 1/sqrt(H_cell)).

    Example::

        >>> lstm = LSTM(10, 20, num_layers=2)
        >>> output, (h_n, c_n) = lstm(torch.randn(5, 3, 10))
        >>> output.shape, h_n.shape, c_n.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]), torch.Size([2, 3, 20]))
    """

    torch_class = nn.LSTM
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
        proj_size: int = 0,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__(
            _CELL.kind().key, input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, proj_size, device=device, dtype=dtype,
            layer_norm=layer_norm, recurrent_dropout=recurrent_dropout, zoneout=zoneout,
        )

    def _autocast_result_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        # Without a projection, torch.nn.LSTM runs a float32 input on the CPU
        # as one oneDNN operator (when oneDNN is on), which autocast runs wholly
        # in its lower precision: output, h_n and c_n come back in it. Step by
        # step, as here, c (and with it h) stays float32.
        if (
            self.proj_size or x.device.type != "cpu" or x.dtype != torch.float32
            or not torch.is_autocast_enabled("cpu")
            or not (_ONEDNN_BUILT and torch.backends.mkldnn.enabled)
        ):
            return None
        return torch.get_autocast_dtype("cpu")


class LSTMCell(RecurrentCell):
    r"""An LSTM cell; a drop-in for :class:`torch.nn.LSTMCell`.

    .. math::
        \begin{array}{ll}
        i = \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi}) \\
        f = \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf}) \\
        g = \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}) \\
        o = \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho}) \\
        c' = f \odot c + i \odot g \\
        h' = o \odot \tanh(c')
        \end{array}

    Inputs: ``input, (h_0, c_0)``: input ``(N, H_in)`` or ``(H_in)``; ``h_0``
    and ``c_0`` ``(N, H)`` or ``(H)``, zeros if omitted.

    Outputs: ``(h_1, c_1)``, each ``(N, H)`` or ``(H)``.

    Attributes:
        weight_ih ``(4*H, H_in)``, weight_hh ``(4*H, H)``, bias_ih and bias_hh
        ``(4*H,)``, gates in the order ``i, f, g, o``.

    Example::

        >>> cell = LSTMCell(10, 20)
        >>> h, c = torch.zeros(3, 20), torch.zeros(3, 20)
        >>> for x_t in torch.randn(6, 3, 10):
        ...     h, c = cell(x_t, (h, c))
    """

    torch_class = nn.LSTMCell
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
