"""Elman recurrent networks: ``RNN`` (a whole sequence) and ``RNNCell`` (one step)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rnnkit.kinds import CELLS
from rnnkit.layers.base import RecurrentCell, RecurrentLayer
from rnnkit.layers.checks import check_nonlinearity

_CELL = CELLS["rnn"]


class RNN(RecurrentLayer):
    r"""A multi-layer Elman RNN; a drop-in for :class:`torch.nn.RNN`.

    For each element of the input sequence each layer computes

    .. math::
        h_t = \tanh(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})

    (``relu`` instead of ``tanh`` with ``nonlinearity='relu'``), where ``x_t``
    is the input at time ``t`` (for layer ``k > 0``, layer ``k - 1``'s output,
    through dropout in training mode) and ``h_{t-1}`` the layer's previous
    hidden state (``h_0`` at ``t = 0``).

    Args:
        input_size: features in each input step, ``H_in``.
        hidden_size: features in the hidden state, ``H_out``.
        num_layers: stacked layers; layer ``k + 1`` reads layer ``k``'s output. Default 1.
        nonlinearity: ``'tanh'`` or ``'relu'``. Default ``'tanh'``.
        bias: whether the layers have ``b_ih`` and ``b_hh``. Default ``True``.
        batch_first: take and return ``(N, L, H)`` instead of ``(L, N, H)``;
            ``h_0`` and ``h_n`` are never batch first. Default ``False``.
        dropout: probability of zeroing each output of every layer but the
            last, in training mode only. Default 0.
        bidirectional: also run each layer from the end of the sequence to
            its start, and concatenate both directions' features. Default ``False``.

    Inputs: ``input, h_0, *, lengths=None, return_states=False``
        * **input**: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first``,
          ``(L, H_in)`` unbatched, or a
          :class:`~torch.nn.utils.rnn.PackedSequence` of variable lengths.
        * **h_0**: ``(D * num_layers, N, H_out)`` or ``(D * num_layers, H_out)``
          unbatched, ``D = 2`` if bidirectional else 1. Zeros if omitted.
        * **lengths**: for a padded batch, each sequence's valid length ``(N,)``
          (an integer tensor on any device, or a list of ints), each in
          ``1..L``. The result is that of packing the batch
          (``pack_padded_sequence(..., enforce_sorted=False)``) and unpacking
          the output to ``L`` steps, without the copies: zeros past each
          length, ``h_n`` at each sequence's own last step, the reverse
          direction starting there.
        * **return_states**: also return ``states``, every step's state of
          every layer and direction (not with a ``PackedSequence``: pass the
          padded batch with ``lengths``).

    Outputs: ``output, h_n`` (``output, h_n, states`` with ``return_states``)
        * **output**: ``(L, N, D * H_out)`` (``(N, L, D * H_out)`` with
          ``batch_first``, ``(L, D * H_out)`` unbatched): the last layer's
          ``h_t`` for every ``t``, forward then backward features; a
          ``PackedSequence`` when the input is one.
        * **h_n**: like ``h_0``: each layer's and direction's final state, layer
          by layer, forward before backward. With packed input the forward
          state is taken at each sequence's own last step.
        * **states**: ``(D * num_layers, L, N, H_out)`` (``(D * num_layers, N,
          L, H_out)`` with ``batch_first``, ``(D * num_layers, L, H_out)``
          unbatched): entry ``[k * D + d, t]`` is layer ``k``'s direction
          ``d`` state after it has read step ``t`` (the reverse direction
          reads ``L-1 ... t``), zeros past each length. The last layer's
          entries are the halves of ``output``; ``h_n[k * D + d]`` is the
          entry at each sequence's last step (step 0 in reverse).

    Attributes:
        weight_ih_l[k]: ``(H_out, H_in)`` for ``k = 0``, else ``(H_out, D * H_out)``.
        weight_hh_l[k]: ``(H_out, H_out)``.
        bias_ih_l[k], bias_hh_l[k]: ``(H_out,)``.
        The backward direction's carry the suffix ``_reverse``. All start
        from U(-1/sqrt(H_out), 1/sqrt(H_out)).

    Example::

        >>> rnn = RNN(input_size=5, hidden_size=8, num_layers=2)
        >>> output, h_n = rnn(torch.randn(3, 2, 5), torch.randn(2, 2, 8))
        >>> output.shape, h_n.shape
        (torch.Size([3, 2, 8]), torch.Size([2, 2, 8]))
        >>> output, h_n, states = rnn(torch.randn(3, 2, 5), lengths=[3, 1], return_states=True)
        >>> states.shape, bool(output[1:, 1].eq(0).all())
        (torch.Size([2, 3, 2, 8]), True)
    """

    torch_class = nn.RNN
    config_names = _CELL.layer_arguments

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
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
        self.nonlinearity = check_nonlinearity(nonlinearity)
        super().__init__(
            _CELL.kind(nonlinearity).key, input_size, hidden_size, num_layers, bias,
            batch_first, dropout, bidirectional, device=device, dtype=dtype,
            layer_norm=layer_norm, recurrent_dropout=recurrent_dropout, zoneout=zoneout,
        )

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class RNNCell(RecurrentCell):
    r"""An Elman RNN cell; a drop-in for :class:`torch.nn.RNNCell`.

    .. math::
        h' = \tanh(x W_{ih}^T + b_{ih} + h W_{hh}^T + b_{hh})

    (``relu`` instead of ``tanh`` with ``nonlinearity='relu'``). Where
    :class:`RNN` runs a whole sequence from a zero state by default, a cell
    takes one step and the caller carries the state from step to step.

    Args:
        input_size: features in the input, ``H_in``.
        hidden_size: features in the hidden state, ``H_out``.
        bias: whether the cell has ``bias_ih`` and ``bias_hh``. Default ``True``.
        nonlinearity: ``'tanh'`` or ``'relu'``. Default ``'tanh'``.

    Inputs: ``input, hx``
        * **input**: ``(N, H_in)`` or ``(H_in)``.
        * **hx**: ``(N, H_out)`` or ``(H_out)``; zeros if omitted.

    Output: ``h'``, ``(N, H_out)`` or ``(H_out)``.

    Attributes:
        weight_ih ``(H_out, H_in)``, weight_hh ``(H_out, H_out)``,
        bias_ih ``(H_out,)``, bias_hh ``(H_out,)``; all start from
        U(-1/sqrt(H_out), 1/sqrt(H_out)).

    Example::

        >>> cell = RNNCell(5, 8)
        >>> h = torch.zeros(2, 8)
        >>> for x_t in torch.randn(3, 2, 5):
        ...     h = cell(x_t, h)
        >>> h.shape
        torch.Size([2, 8])
    """

    torch_class = nn.RNNCell
    config_names = _CELL.cell_arguments

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        layer_norm: bool = False,
    ) -> None:
        self.nonlinearity = check_nonlinearity(nonlinearity)
        super().__init__(
            _CELL.kind(nonlinearity).key, input_size, hidden_size, bias, device=device, dtype=dtype,
            layer_norm=layer_norm,
        )

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s
