"""One step without autograd, for calls too small to pay for a fused layer's set-up.

Streaming and decoding call a cell, or a layer on a one-step sequence, once
per token with no autograd. Such a call is a few thousand multiply-adds;
what it costs is per call: torch.nn runs it as one C++ operator, the
reference as a dozen tensor ops, and :class:`~rnnkit.kernels.fused_common.FusedLayer`
as an autograd Function with its threads' plan and packed weights. Here it
is one compiled loop per direction (``elman_step``, ``lstm_step``,
``gru_step`` in the cells' loop modules) over the weights as torch holds
them, row by row, and every tensor is passed by address: a numpy view
costs about 0.6 us a tensor, a ``data_ptr()`` 0.07.

:func:`plan` says when a call is not for these loops: autograd records it,
it is too large (:data:`MAX_ROWS`, :data:`MAX_WORK`), it uses the options
beyond torch.nn, ``lengths`` or every step's cell state, or the fused backend
would refuse it (device, dtype, autocast, torch.func).
"""

from __future__ import annotations

import importlib
import weakref
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels.fused_common import machinery_active
from rnnkit.kernels.reference import DirectionWeights, State
from rnnkit.kinds import KINDS

MAX_ROWS, MAX_WORK = 8, 1 << 18
"""The largest call these loops take: ``N`` rows, ``N G*H (H_in + H_out)``
multiply-adds. Each row reads the weights again (a dot of rows per unit),
where BLAS reads them once for all rows. Measured on a 2-core CPU, no
autograd, against the reference, a cell's call (a one-step layer's gains
more, from the reference's stacking): at N = 1 the LSTM and GRU cells ran
1.5-1.75x faster up to H = 256, the Elman cell 0.96-1.2x; at N = 8, H = 64
1.0-1.2x, at H = 128 0.87x (Elman) to 1.23x (LSTM); at N = 32 from H = 64
on, 0.4-0.7x."""


class _Weights(NamedTuple):
    """One direction's weights as the loops take them: the addresses of
    ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh`` and ``w_hr`` (0 for one it does not
    have), the sizes, and the dtype's zero."""

    anchor: weakref.ref  # w_hh, for the identity check (an id can be reused)
    key: tuple
    dtype: torch.dtype
    at: tuple[int, ...]
    inputs: int
    hidden: int
    projected: int  # P, or 0 without a projection
    row_work: int  # multiply-adds per row: G*H (H_in + H_out)
    zero: np.floating


STEPS = {key: importlib.import_module(f"rnnkit.kernels.{kind.fused}").step for key, kind in KINDS.items() if kind.fused}
"""Each kind's one-step loop, by kernel key: ``step(kind, x, state, w, out,
width, col, new, rows)`` reads ``x (N, H_in)`` and the ``state`` parts ``(N,
·)`` at their addresses, ``w`` a :class:`_Weights`, and writes ``h'`` into
columns ``col:col+H_out`` of ``out (N, width)`` and the new state's parts
into ``new``, all by address (C-contiguous, the weights' dtype)."""

_KEPT: dict[int, _Weights] = {}
_KEPT_MAX = 64
"""At most this many directions' weights are kept; the oldest go first."""

_ZEROS = {torch.float32: np.float32(0), torch.float64: np.float64(0)}


def _key(w: DirectionWeights) -> tuple:
    """What must not have changed for a kept entry to serve: each tensor's
    address and shape (a ``.data`` swap or ``.to()`` changes them; an
    in-place change is read through the address)."""
    return tuple([None if t is None else (t.data_ptr(), t.shape) for t in w[:5]])


def _weights(w: DirectionWeights) -> _Weights | None:
    """``w`` as the loops take it, kept while its tensors are the same
    objects over the same memory; ``None`` when a weight is not a
    contiguous CPU tensor of one float dtype."""
    entry = _KEPT.get(id(w))
    key = _key(w)
    if entry is not None and entry.anchor() is w.w_hh and entry.key == key:
        return entry
    dtype = w.w_ih.dtype
    present = [t for t in w[:5] if t is not None]
    if dtype not in _ZEROS or any(not t.is_cpu or t.dtype != dtype or not t.is_contiguous() for t in present):
        return None
    hidden = w.w_hh.shape[1] if w.w_hr is None else w.w_hr.shape[1]
    entry = _Weights(
        weakref.ref(w.w_hh), key, dtype, tuple(0 if t is None else t.data_ptr() for t in w[:5]),
        w.w_ih.shape[1], hidden, 0 if w.w_hr is None else w.w_hr.shape[0],
        w.w_hh.shape[0] * (w.w_ih.shape[1] + w.w_hh.shape[1]), _ZEROS[dtype],
    )
    if len(_KEPT) >= _KEPT_MAX:
        del _KEPT[next(iter(_KEPT))]
    _KEPT[id(w)] = entry
    return entry


def plan(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None = None,
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> list[_Weights] | str:
    """The weights as these loops take them, one entry per direction, when
    they can run this call; else why not. ``x`` is ``(T, N, H_in)`` (a
    layer's) or ``(N, H_in)`` (a cell's), ``state`` the state as the layer
    or the cell gives it to its backend."""
    if torch.is_grad_enabled() and (  # a weight first: the common case, and the cheapest to see
        weights[0].w_hh.requires_grad or x.requires_grad or any(s.requires_grad for s in state)
        or any(t is not None and t.requires_grad for w in weights for t in w)
    ):
        return "autograd records the call"
    if x.dim() == 3 and x.shape[0] != 1:
        return f"it runs one step, got {x.shape[0]}"
    if lengths is not None or return_cells:
        return "lengths and every step's cell state go through the layer's loops"
    if weights[0].ln_hh_weight is not None or recurrent_mask is not None or zoneout_mask is not None:
        return "the options beyond torch.nn go through the layer's loops"
    if not x.is_cpu or x.dtype not in _ZEROS:
        return f"it runs float32 and float64 on the CPU, got {x.dtype} on {x.device}"
    if machinery_active():
        return "autocast or a torch.func transform is on"
    kept = [_weights(w) for w in weights]
    if any(k is None or k.dtype != x.dtype for k in kept):
        return f"a weight is not a contiguous {x.dtype} CPU tensor"
    rows = x.shape[-2]
    if rows > MAX_ROWS or rows * kept[0].row_work > MAX_WORK:
        return f"{rows} rows and {rows * kept[0].row_work} multiply-adds: more than {MAX_ROWS} or {MAX_WORK}"
    return kept


def run_cell(kind: str, x: Tensor, state: State, w: _Weights) -> State:
    """One step of a cell, ``x (N, H_in)`` and ``state`` as
    :data:`~rnnkit.kernels.reference.STEPS` take them, ``w`` from :func:`plan`."""
    state = tuple(s.contiguous() for s in state)
    new = tuple(map(torch.empty_like, state))
    at = tuple(n.data_ptr() for n in new)
    STEPS[kind](
        kind, x.contiguous().data_ptr(), tuple(s.data_ptr() for s in state), w,
        at[0], new[0].shape[1], 0, at, x.shape[0],
    )
    return new


def run_layer(kind: str, x: Tensor, state: State, weights: list[_Weights]) -> tuple[Tensor, State]:
    """One layer on one step, ``x (1, N, H_in)``, ``state`` and the result as
    :func:`rnnkit.kernels.reference.run_layer` has them; ``weights`` from :func:`plan`."""
    batch, width = x.shape[1], state[0].shape[2]
    state = tuple(s.contiguous() for s in state)
    output = torch.empty((1, batch, len(weights) * width), dtype=x.dtype)
    new = tuple(map(torch.empty_like, state))
    x_at, out_at = x.contiguous().data_ptr(), output.data_ptr()
    strides = [s.stride(0) * s.element_size() for s in state]  # one direction's part, in bytes
    state_at, new_at = [s.data_ptr() for s in state], [n.data_ptr() for n in new]
    for d, w in enumerate(weights):
        STEPS[kind](
            kind, x_at, tuple(a + d * b for a, b in zip(state_at, strides)), w, out_at, output.shape[2], d * width,
            tuple(a + d * b for a, b in zip(new_at, strides)), batch,
        )
    return output, new
