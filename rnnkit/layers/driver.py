"""The sequence driver: stacked layers, directions, lengths and dropout for any cell kind."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit import kernels
from rnnkit.kernels.reference import DirectionWeights, State


def run_stack(
    kind: str,
    x: Tensor,
    state: State,
    layers: list[list[DirectionWeights]],
    lengths: Tensor | None,
    dropout: float,
    training: bool,
) -> tuple[Tensor, State]:
    """Run a stack of recurrent layers over a sequence.

    Layer ``k + 1`` reads layer ``k``'s output (both directions concatenated),
    through dropout when ``training`` and ``dropout > 0``.

    Args:
        kind: the cell kind (a layer's ``kind``), e.g. ``'rnn_tanh'``.
        x: input ``(T, N, H_in)``, time first.
        state: initial state, ordered layer by layer, forward direction
            before backward: ``(h,)`` with ``h (L*D, N, H_out)``, or an LSTM's
            ``(h, c)`` with ``c (L*D, N, H)`` (``H_out`` is ``proj_size`` when
            there is a projection, else ``H``).
        layers: ``L`` lists of ``D`` :class:`DirectionWeights`.
        lengths: ``(N,)`` int64 valid lengths, or ``None`` for full sequences.

    Returns:
        ``(output, state_n)``: the last layer's output ``(T, N, D*H_out)`` and
        the final state, shaped and ordered like ``state``.
    """
    if len(layers) == 1:
        return kernels.run_layer(kind, x, state, layers[0], lengths)
    directions = len(layers[0])
    finals: list[State] = []
    for k, weights in enumerate(layers):
        if k > 0 and dropout > 0 and training:
            x = F.dropout(x, dropout, training=True)
        layer_state = tuple(s[k * directions : (k + 1) * directions] for s in state)
        x, final = kernels.run_layer(kind, x, layer_state, weights, lengths)
        finals.append(final)
    return x, tuple(torch.cat(parts) for parts in zip(*finals))
