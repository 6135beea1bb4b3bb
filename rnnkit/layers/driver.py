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
    return_states: bool = False,
) -> tuple[Tensor, State] | tuple[Tensor, State, State]:
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
        return_states: also return every step's state of every layer and direction.

    Returns:
        ``(output, state_n)``: the last layer's output ``(T, N, D*H_out)`` and
        the final state, shaped and ordered like ``state``. With
        ``return_states``, ``(output, state_n, states)``: one tensor per part
        of the state, ``(L*D, T, N, ·)``, entry ``[k*D + d, t]`` the state of
        layer ``k``, direction ``d`` after it has read step ``t`` (zeros past
        each length). A layer's ``h`` states are its output; the other parts
        (an LSTM's ``c``) come from the backend (``return_cells``).
    """
    if len(layers) == 1 and not return_states:
        return kernels.run_layer(kind, x, state, layers[0], lengths)
    directions = len(layers[0])
    finals: list[State] = []
    history: list[list[Tensor]] = [[] for _ in state]  # per part, each layer's (T, N, D*·)
    for k, weights in enumerate(layers):
        if k > 0 and dropout > 0 and training:
            x = F.dropout(x, dropout, training=True)
        layer_state = tuple(s[k * directions : (k + 1) * directions] for s in state)
        if return_states and len(state) > 1:
            x, final, cells = kernels.run_layer(kind, x, layer_state, weights, lengths, return_cells=True)
            history[1].append(cells)
        else:
            x, final = kernels.run_layer(kind, x, layer_state, weights, lengths)
        if return_states:  # else each layer's output is freed once the next has read it
            history[0].append(x)
        finals.append(final)
    state_n = tuple(torch.cat(parts) for parts in zip(*finals))
    if not return_states:
        return x, state_n
    return x, state_n, tuple(_by_direction(part, directions) for part in history)


def _by_direction(layers: list[Tensor], directions: int) -> Tensor:
    """Each layer's ``(T, N, D*H)`` steps, directions side by side, as one ``(L*D, T, N, H)``."""
    steps, batch, width = layers[0].shape
    return torch.cat([
        s.reshape(steps, batch, directions, width // directions).permute(2, 0, 1, 3) for s in layers
    ])
