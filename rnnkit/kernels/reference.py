"""The reference recurrence, in plain tensor ops; autograd gives its backward pass.

Every cell kind (:data:`rnnkit.kinds.KINDS`) is one pure step function ``step(xp_t, state, weights) -> state``:

* ``xp_t`` is the input projection of one time step, ``W_ih x_t + b_ih``, of
  shape ``(N, G*H)`` with ``G`` gates (1 for RNN). The driver computes it for
  all steps at once, since it does not depend on the recurrence.
* ``state`` is a tuple: ``(h,)`` for RNN and GRU, ``(h, c)`` for LSTM, with
  ``h`` of shape ``(N, H_out)`` and ``c`` of shape ``(N, H)``; ``H_out = H``
  except for an LSTM with a projection.
* ``weights`` is the :class:`DirectionWeights` of one layer and direction.
* ``mask`` (optional) is the recurrent-dropout mask ``(N, H_out)``: the step
  reads ``W_hh (mask * h)``; the state itself is not masked.

With layer-norm gains in ``weights`` (a layer built with ``layer_norm=True``)
the products are normalised (:func:`recurrent_projection`, :func:`input_projection`,
and an LSTM's cell state before its ``tanh``). Zoneout acts between steps, in
:func:`run_direction`.

:func:`run_direction` runs one step function over a sequence, forwards or
backwards, freezing each sequence's state after its own last step. The fused
kernels in this package are tested against these functions.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.kinds import KINDS

State = tuple[Tensor, ...]


class DirectionWeights(NamedTuple):
    """Parameters of one direction of one layer (or of a cell).

    Shapes, with ``G`` gates, hidden size ``H`` and layer input size ``H_in``:
    ``w_ih (G*H, H_in)``, ``w_hh (G*H, H_out)``, ``b_ih (G*H,)``, ``b_hh (G*H,)``;
    the biases are ``None`` when the layer has ``bias=False``. ``w_hr
    (H_out, H)`` is an LSTM's projection, ``None`` elsewhere (then ``H_out = H``).
    With ``layer_norm=True``: the gains ``ln_ih_weight`` and ``ln_hh_weight``
    ``(G*H,)`` and, for an LSTM, ``ln_c_weight`` and ``ln_c_bias`` ``(H,)``;
    all ``None`` without layer norm.
    """

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None = None
    b_hh: Tensor | None = None
    w_hr: Tensor | None = None
    ln_ih_weight: Tensor | None = None
    ln_hh_weight: Tensor | None = None
    ln_c_weight: Tensor | None = None
    ln_c_bias: Tensor | None = None


LAYER_NORM_EPS = 1e-5
"""The layer norms' epsilon, added to the biased variance (as ``torch.nn.LayerNorm``)."""


def _normalised(v: Tensor, gain: Tensor | None, shift: Tensor | None = None) -> Tensor:
    """Layer norm over the last axis (one mean, one biased variance) with a gain
    and an optional shift; ``v`` unchanged when ``gain`` is ``None``."""
    if gain is None:
        return v
    return F.layer_norm(v, (v.shape[-1],), gain, shift, LAYER_NORM_EPS)


def recurrent_projection(h: Tensor, w: DirectionWeights, mask: Tensor | None = None) -> Tensor:
    """``LN_hh(W_hh (mask * h)) + b_hh``, ``(N, H_out) -> (N, G*H)``; no layer
    norm without its gain, no mask when ``mask`` is ``None``."""
    if mask is not None:
        h = h * mask
    if w.ln_hh_weight is None:
        return F.linear(h, w.w_hh, w.b_hh)
    return _normalised(F.linear(h, w.w_hh), w.ln_hh_weight, w.b_hh)  # b_hh as the norm's shift


def rnn_tanh_step(xp: Tensor, state: State, w: DirectionWeights, mask: Tensor | None = None) -> State:
    """Elman step with tanh: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``."""
    (h,) = state
    # In place on the product, a tensor of the step's own: saves allocations.
    return (recurrent_projection(h, w, mask).add_(xp).tanh_(),)


def rnn_relu_step(xp: Tensor, state: State, w: DirectionWeights, mask: Tensor | None = None) -> State:
    """Elman step with ReLU: ``h' = relu(W_ih x + b_ih + W_hh h + b_hh)``."""
    (h,) = state
    return (recurrent_projection(h, w, mask).add_(xp).relu_(),)


def lstm_step(xp: Tensor, state: State, w: DirectionWeights, mask: Tensor | None = None) -> State:
    """LSTM step, gates in torch's order (input, forget, cell, output)::

        i, f, g, o = σ(.), σ(.), tanh(.), σ(.) of  W_ih x + b_ih + W_hh h + b_hh
        c' = f * c + i * g
        h' = W_hr (o * tanh(c'))      (without W_hr when there is no projection)

    With layer norm, ``tanh(LN_c(c'))`` in place of ``tanh(c')``.
    """
    h, c = state
    hidden = c.shape[1]
    gates = recurrent_projection(h, w, mask).add_(xp)
    # One sigmoid over all four gates (g's is not used) and a tanh over g:
    # fewer, larger ops, since a step's cost is mostly per op.
    i, f, _, o = torch.sigmoid(gates).unsafe_chunk(4, dim=1)
    g = torch.tanh(gates[:, 2 * hidden : 3 * hidden])
    c = torch.addcmul(f * c, i, g)
    h = o * torch.tanh(_normalised(c, w.ln_c_weight, w.ln_c_bias))
    if w.w_hr is not None:
        h = F.linear(h, w.w_hr)
    return (h, c)


def gru_step(xp: Tensor, state: State, w: DirectionWeights, mask: Tensor | None = None) -> State:
    """GRU step, gates in torch's order (reset, update, new)::

        r = σ(W_ir x + b_ir + W_hr h + b_hr)
        z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h,  computed as n + z * (h - n) (torch.lerp)
    """
    (h,) = state
    hidden = h.shape[1]
    hh = recurrent_projection(h, w, mask)  # (N, 3*H): W_hr h + b_hr, W_hz h + b_hz, W_hn h + b_hn
    # One sigmoid over all three gates' sums (n's is not used): a step's cost is mostly per op.
    r, z, _ = (xp + hh).sigmoid_().unsafe_chunk(3, dim=1)
    n = torch.addcmul(xp[:, 2 * hidden :], r, hh[:, 2 * hidden :]).tanh_()
    if h.dtype != n.dtype:  # under autocast; torch.lerp takes one dtype only
        return (torch.addcmul(n, z, h - n),)
    return (torch.lerp(n, h, z),)


StepFunction = Callable[[Tensor, State, DirectionWeights, "Tensor | None"], State]

STEPS: dict[str, StepFunction] = {key: globals()[kind.step] for key, kind in KINDS.items()}
"""The step function of each kind (its :attr:`~rnnkit.kinds.Kind.step`), by kernel key."""


def input_projection(
    x: Tensor, w: DirectionWeights, linear: Callable[[Tensor, Tensor, Tensor | None], Tensor] = F.linear
) -> Tensor:
    """``W_ih x_t + b_ih`` (``LN_ih(W_ih x_t) + b_ih`` with layer norm) for every
    step at once: ``(T, N, H_in) -> (T, N, G*H)``; ``linear(x, W, b)`` is
    ``x W^T + b`` (``F.linear``'s contract), the fused layers passing their own."""
    if w.ln_ih_weight is None:
        return linear(x, w.w_ih, w.b_ih)
    return _normalised(linear(x, w.w_ih, None), w.ln_ih_weight, w.b_ih)  # b_ih as the norm's shift


def run_direction(
    kind: str,
    x: Tensor,
    state: State,
    w: DirectionWeights,
    lengths: Tensor | None,
    reverse: bool,
    every_part: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> tuple[State, State]:
    """Run one direction of one layer over a whole sequence.

    Args:
        kind: the cell kind, a key of :data:`STEPS`.
        x: input ``(T, N, H_in)``.
        state: initial state, ``(h_0,)`` or ``(h_0, c_0)``, each ``(N, ·)``.
        w: the direction's weights.
        lengths: ``(N,)`` int64 valid lengths, or ``None`` when every sequence
            has all ``T`` steps. Steps at ``t >= lengths[n]`` leave sequence
            ``n``'s state unchanged and output zeros, so a forward pass ends
            on each sequence's last valid step and a reverse pass starts there.
        reverse: run from ``t = T-1`` down to ``0``.
        every_part: return every part of the state after each step, not only ``h``.
        recurrent_mask: ``(N, H_out)``, the recurrent-dropout mask every step's
            ``W_hh (mask * h)`` reads, or ``None``.
        zoneout_mask: ``(T, N, H_out)``, or ``None``: after step ``t`` the new
            ``h`` is ``m_t * h_(t-1) + (1 - m_t) * h~_t`` (an LSTM's ``c`` as it
            comes): Bernoulli draws in training, the probability itself in eval.

    Returns:
        ``(steps, state_n)``: ``steps`` is ``(output,)``, or with
        ``every_part`` one tensor per part of the state, each ``(T, N, ·)``
        holding that part after each step (zeros past each length);
        ``state_n`` is the final state, shaped like ``state``.
    """
    step = STEPS[kind]
    xp = input_projection(x, w)
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    valid = None if lengths is None else (
        torch.arange(x.shape[0]).unsqueeze(1) < lengths.unsqueeze(0)
    ).to(x.device)  # (T, N)
    kept = len(state) if every_part else 1
    history: list[list[Tensor]] = [[x.new_empty(0)] * x.shape[0] for _ in range(kept)]
    for t in steps:
        new_state = step(xp[t], state, w, recurrent_mask)
        if zoneout_mask is not None:
            kept_h = zoneout_mask[t]
            new_state = (kept_h * state[0] + (1 - kept_h) * new_state[0], *new_state[1:])
        if valid is None:
            state = new_state
            for part in range(kept):
                history[part][t] = state[part]
        else:
            keep = valid[t].unsqueeze(1)  # (N, 1)
            state = tuple(torch.where(keep, new, old) for new, old in zip(new_state, state))
            for part in range(kept):
                history[part][t] = torch.where(keep, state[part], torch.zeros_like(state[part]))
    return tuple(torch.stack(h) for h in history), state


def run_layer(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> tuple[Tensor, State] | tuple[Tensor, State, Tensor]:
    """Run every direction of one layer; the backend interface of this package.

    Args:
        kind: the cell kind, a key of :data:`STEPS`.
        x: ``(T, N, H_in)``.
        state: tuple of ``(D, N, ·)`` tensors (``h``, and ``c`` for LSTM),
            direction ``d`` at index ``d``.
        weights: one :class:`DirectionWeights` per direction (``D`` = 1 or 2).
        lengths: ``(N,)`` int64 valid lengths, or ``None``.
        return_cells: also return every step's cell state (a two-part state only).
        recurrent_mask: ``(D, N, H_out)`` recurrent-dropout masks, or ``None``.
        zoneout_mask: ``(D, T, N, H_out)`` zoneout masks, or ``None`` (see
            :func:`run_direction`; the reverse direction's ``[1, t]`` acts at step ``t``).

    Returns:
        ``(output, state_n)``: output ``(T, N, D*H_out)``, forward features
        first; ``state_n`` shaped like ``state``. With ``return_cells``,
        ``(output, state_n, cells)``, ``cells (T, N, D*H)`` holding ``c_t``
        after each step, zeros past each length.
    """
    if return_cells and len(state) != 2:
        raise ValueError(f"return_cells needs a kind with a cell state, got {kind!r}")
    histories, finals = [], []
    for d, w in enumerate(weights):
        history, final = run_direction(
            kind, x, tuple(s[d] for s in state), w, lengths, reverse=d == 1, every_part=return_cells,
            recurrent_mask=None if recurrent_mask is None else recurrent_mask[d],
            zoneout_mask=None if zoneout_mask is None else zoneout_mask[d],
        )
        histories.append(history)
        finals.append(final)
    joined = [parts[0] if len(parts) == 1 else torch.cat(parts, dim=2) for parts in zip(*histories)]
    state_n = tuple(torch.stack(parts) for parts in zip(*finals))
    return (joined[0], state_n, joined[1]) if return_cells else (joined[0], state_n)
