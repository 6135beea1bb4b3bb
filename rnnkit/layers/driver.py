"""The sequence driver: stacked layers, directions, lengths and dropout for any cell kind.

It also draws the masks of recurrent dropout and zoneout (:func:`draw_masks`),
all of them before the first layer runs, from torch's default generator, so
that ``torch.manual_seed`` reproduces a run whichever backend runs it.
"""

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
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
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
        recurrent_dropout, zoneout: probabilities, masks drawn by :func:`draw_masks`.

    Returns:
        ``(output, state_n)``: the last layer's output ``(T, N, D*H_out)`` and
        the final state, shaped and ordered like ``state``. With
        ``return_states``, ``(output, state_n, states)``: one tensor per part
        of the state, ``(L*D, T, N, ·)``, entry ``[k*D + d, t]`` the state of
        layer ``k``, direction ``d`` after it has read step ``t`` (zeros past
        each length). A layer's ``h`` states are its output; the other parts
        (an LSTM's ``c``) come from the backend (``return_cells``).
    """
    directions = len(layers[0])
    recurrent_masks, zoneout_masks = draw_masks(
        x, len(layers), directions, state[0].shape[-1], training, recurrent_dropout, zoneout
    )
    if len(layers) == 1 and not return_states:
        return kernels.run_layer(
            kind, x, state, layers[0], lengths,
            recurrent_mask=recurrent_masks[0], zoneout_mask=zoneout_masks[0],
        )
    finals: list[State] = []
    history: list[list[Tensor]] = [[] for _ in state]  # per part, each layer's (T, N, D*·)
    for k, weights in enumerate(layers):
        if k > 0 and dropout > 0 and training:
            x = F.dropout(x, dropout, training=True)
        layer_state = tuple(s[k * directions : (k + 1) * directions] for s in state)
        masks = {"recurrent_mask": recurrent_masks[k], "zoneout_mask": zoneout_masks[k]}
        if return_states and len(state) > 1:
            x, final, cells = kernels.run_layer(
                kind, x, layer_state, weights, lengths, return_cells=True, **masks
            )
            history[1].append(cells)
        else:
            x, final = kernels.run_layer(kind, x, layer_state, weights, lengths, **masks)
        if return_states:  # else each layer's output is freed once the next has read it
            history[0].append(x)
        finals.append(final)
    state_n = tuple(torch.cat(parts) for parts in zip(*finals))
    if not return_states:
        return x, state_n
    return x, state_n, tuple(_by_direction(part, directions) for part in history)


def draw_masks(
    x: Tensor, layers: int, directions: int, width: int, training: bool,
    recurrent_dropout: float, zoneout: float,
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """Each layer's recurrent-dropout and zoneout masks, or ``None`` where the option is off.

    In training mode, in this order: one draw of every recurrent-dropout mask,
    ``(L, D, N, H_out)`` with entries ``Bernoulli(1 - p) / (1 - p)`` (zeros
    when ``p = 1``), one per layer, direction and sequence for the whole call;
    then one draw of every zoneout mask, ``(L, D, T, N, H_out)`` with entries
    ``Bernoulli(p)`` (1: the unit keeps its previous value at that step).
    In eval mode there is no recurrent dropout, and the zoneout "mask" is
    ``p`` itself everywhere (the expected update), drawing nothing.
    Layer ``k``'s masks are entry ``k``: ``(D, N, H_out)`` and ``(D, T, N, H_out)``.
    """
    steps, batch = x.shape[0], x.shape[1]
    recurrent: Tensor | None = None
    if training and recurrent_dropout > 0:
        keep = 1.0 - recurrent_dropout
        recurrent = _bernoulli(x, (layers, directions, batch, width), keep)
        recurrent = recurrent / keep if keep > 0 else recurrent
    zoned: Tensor | None = None
    if zoneout > 0:
        shape = (layers, directions, steps, batch, width)
        zoned = _bernoulli(x, shape, zoneout) if training else x.new_full((), zoneout).expand(shape)
    return (
        [None if recurrent is None else recurrent[k] for k in range(layers)],
        [None if zoned is None else zoned[k] for k in range(layers)],
    )


def _bernoulli(like: Tensor, shape: tuple[int, ...], p: float) -> Tensor:
    """``Bernoulli(p)`` entries (1 with probability ``p``, else 0) of ``like``'s
    dtype and device, from torch's default generator: on the CPU by
    :func:`rnnkit.kernels.ops.bernoulli` (a zoneout mask is ``(T, N, H)`` per
    layer and direction, and torch's own CPU draw took 9% of a training
    step), elsewhere as ``U[0, 1) < p``."""
    if like.device.type != "cpu":
        return like.new_empty(shape).uniform_().lt_(p)
    return kernels.ops.bernoulli(shape, p, like.dtype)


def _by_direction(layers: list[Tensor], directions: int) -> Tensor:
    """Each layer's ``(T, N, D*H)`` steps, directions side by side, as one ``(L*D, T, N, H)``."""
    steps, batch, width = layers[0].shape
    return torch.cat([
        s.reshape(steps, batch, directions, width // directions).permute(2, 0, 1, 3) for s in layers
    ])
