"""One step, for calls too small to pay for a fused layer's set-up.

Streaming and decoding call a cell, or a layer on a one-step sequence, once
per token. Such a call is a few thousand multiply-adds; what it costs is
per call: torch.nn runs it as one C++ operator, the reference as a dozen
tensor ops, and :class:`~rnnkit.kernels.fused_common.FusedLayer` as an
autograd Function with its threads' plan and packed weights. Here it is one
compiled loop per direction (``elman_step``, ``lstm_step``, ``gru_step`` in
the cells' loop modules) over the weights as torch holds them, row by row,
and every tensor is passed by address: a numpy view costs about 0.6 us a
tensor, a ``data_ptr()`` 0.07. Under autograd, :class:`_Step` wraps the
same loops, which then keep what the kind's backward loop
(:data:`BACKWARDS`) needs.

:func:`plan` says when a call is not for these loops: autograd records it
and its kind has no backward loop (or it has an LSTM projection), it is too
large (:data:`MAX_ROWS`, :data:`MAX_WORK`), it uses the options beyond
torch.nn, ``lengths`` or every step's cell state, or the fused backend would
refuse it (device, dtype, autocast, forward-mode AD, torch.func).
"""

from __future__ import annotations

import importlib
import threading
import weakref
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels import reference
from rnnkit.kernels.fused_common import backward_may_follow, machinery_active, reference_backward
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
on, 0.4-0.7x. Under autograd, forward and backward, the LSTM's and GRU's
cells and one-step layers ran 1.24-1.9x faster than the reference within
these limits (N = 1 and 8, H = 16 to 128)."""


class _Weights(NamedTuple):
    """One direction's weights as the loops take them: the addresses of
    ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh`` and ``w_hr`` (0 for one it does not
    have), the sizes, and the dtype's zero."""

    anchor: weakref.ref  # w_hh, for the identity check (an id can be reused)
    key: list
    dtype: torch.dtype
    at: tuple[int, ...]
    inputs: int
    hidden: int
    projected: int  # P, or 0 without a projection
    row_work: int  # multiply-adds per row: G*H (H_in + H_out), and P*H for a projection
    zero: np.floating


STEPS = {key: importlib.import_module(f"rnnkit.kernels.{kind.fused}").step for key, kind in KINDS.items() if kind.fused}
"""Each kind's one-step loop, by kernel key: ``step(kind, x, state, w, out,
width, col, new, rows, keep)`` reads ``x (N, H_in)`` and the ``state`` parts
``(N, ·)`` at their addresses, ``w`` a :class:`_Weights`, and writes ``h'``
into columns ``col:col+H_out`` of ``out (N, width)``, the new state's parts
into ``new`` and, where ``keep`` is not 0, what its backward loop needs
(:data:`KEPT_WIDTH`) there; all by address (C-contiguous, the weights' dtype)."""

_BACKWARD_MODULES = [
    (key, module)
    for key, kind in KINDS.items()
    if kind.fused and hasattr(module := importlib.import_module(f"rnnkit.kernels.{kind.fused}"), "step_backward")
]

BACKWARDS = {key: module.step_backward for key, module in _BACKWARD_MODULES}
"""Each kind's backward loop, for the calls autograd records
(:class:`_Step`): ``step_backward(kind, x, state, w_ih, w_hh, acts, grads,
needs, zero)`` gives the gradients of ``(x, *state, w_ih, w_hh, b_ih,
b_hh)`` of one direction (``None`` where ``needs`` says none is wanted),
``grads`` being those of its new state's parts (``None`` for one that got
none) and ``acts`` what the forward loop kept, all C-contiguous.

The Elman step has no backward loop: under autograd its cell and its
one-step layer go to the reference, whose four ops (torch's own cell is the
same four) cost less than an autograd Function does (measured, batch 1,
8 -> 16 features, forward and backward: the cell 0.75x of torch.nn's through
a Function against 0.93x through the reference, the layer 0.85x against 0.88x)."""

KEPT_WIDTH = {key: module.STEP_KEPT for key, module in _BACKWARD_MODULES}
"""What each kind's forward loop keeps for its backward loop, in units of
``H`` per row (its module's ``STEP_KEPT``)."""

_KEPT: dict[int, _Weights] = {}
_KEPT_MAX = 64
"""At most this many directions' weights are kept; the oldest go first."""
_KEPT_LOCK = threading.Lock()

_ZEROS = {torch.float32: np.float32(0), torch.float64: np.float64(0)}


def _key(w: DirectionWeights) -> list:
    """What must not have changed for a kept entry to serve: each tensor's
    address, shape and contiguity, which fix its layout (a ``.data`` swap or
    ``.to()`` changes them; an in-place change is read through the address)."""
    return [None if t is None else (t.data_ptr(), t.shape, t.is_contiguous()) for t in w[:5]]


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
    projected = 0 if w.w_hr is None else w.w_hr.shape[0]
    entry = _Weights(
        weakref.ref(w.w_hh), key, dtype, tuple(0 if t is None else t.data_ptr() for t in w[:5]),
        w.w_ih.shape[1], hidden, projected,
        w.w_hh.shape[0] * (w.w_ih.shape[1] + w.w_hh.shape[1]) + projected * hidden, _ZEROS[dtype],
    )
    with _KEPT_LOCK:  # another thread may be making room too
        while len(_KEPT) >= _KEPT_MAX:
            del _KEPT[next(iter(_KEPT))]
        _KEPT[id(w)] = entry
    return entry


class Plan(NamedTuple):
    """How the loops run a call :func:`plan` accepts."""

    weights: tuple[_Weights, ...]  # one per direction
    recorded: bool  # autograd records the call: through _Step


def plan(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None = None,
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
    *,
    checked: bool = False,
) -> Plan | str:
    """How these loops run this call, or why they cannot. ``x`` is ``(1, N,
    H_in)`` (a layer's) or ``(N, H_in)`` (a cell's), ``state`` the state as
    the layer (``(D, N, ·)`` parts) or the cell (``(N, ·)``) gives it to its
    backend; the arguments after ``weights`` are the layer backends'.
    ``checked``: the caller has checked the input's width and the state's
    shapes, dtypes and devices against the weights, as a cell's forward does."""
    if kind not in STEPS:
        return f"no one-step loop for cell kind {kind!r}"
    recorded = torch.is_grad_enabled() and backward_may_follow(x, *state, *(t for w in weights for t in w))
    if recorded and (kind not in BACKWARDS or weights[0].w_hr is not None):  # no loop for W_hr's backward
        return "autograd records the call"
    layer = x.dim() == 3
    if layer and x.shape[0] != 1:
        return f"it runs one step, got {x.shape[0]}"
    if lengths is not None or return_cells:
        return "lengths and every step's cell state go through the layer's loops"
    if weights[0].ln_hh_weight is not None or recurrent_mask is not None or zoneout_mask is not None:
        return "the options beyond torch.nn go through the layer's loops"
    if not x.is_cpu or x.dtype not in _ZEROS:
        return f"it runs float32 and float64 on the CPU, got {x.dtype} on {x.device}"
    if machinery_active():
        return "autocast, forward-mode AD or a torch.func transform is on"
    kept = tuple([_weights(w) for w in weights])
    for k in kept:
        if k is None or k.dtype != x.dtype:
            return f"a weight is not a contiguous {x.dtype} CPU tensor"
    rows, w = x.shape[-2], kept[0]
    if rows > MAX_ROWS or rows * w.row_work > MAX_WORK:
        return f"{rows} rows and {rows * w.row_work} multiply-adds: more than {MAX_ROWS} or {MAX_WORK}"
    if checked:
        return Plan(kept, recorded)
    # The extents the loops read and write, which the layers have checked already: checked
    # again here (the rnnkit::layer operator can be called directly), since a wrong one
    # would read or write past a tensor.
    if x.shape[-1] != w.inputs:
        return f"the input has {x.shape[-1]} features, the weights {w.inputs}"
    directions = len(kept) if layer else 1
    for part, size in zip(state, (w.projected or w.hidden, w.hidden)):
        if part.numel() != directions * rows * size or part.dtype != x.dtype or not part.is_cpu:
            return (
                f"a state part is {part.dtype} {tuple(part.shape)} on {part.device}, "
                f"not {x.dtype} of {rows} x {size}"
            )
    return Plan(kept, recorded)


def run_cell(kind: str, x: Tensor, state: State, w: DirectionWeights, planned: Plan) -> State:
    """One step of a cell, ``x (N, H_in)`` and ``state`` as
    :data:`~rnnkit.kernels.reference.STEPS` take them, ``planned`` what
    :func:`plan` gave for them and the weights ``w``."""
    # The loops read x and the state by address: contiguous copies, if any,
    # are held here for the call and given to autograd, which records them.
    x, state = x.contiguous(), tuple([s.contiguous() for s in state])
    if planned.recorded:
        return _Step.apply(kind, planned.weights, False, x, *state, *w[:4])
    return _run(kind, planned.weights, False, x, state, 0)


def run_layer(
    kind: str, x: Tensor, state: State, weights: list[DirectionWeights], planned: Plan
) -> tuple[Tensor, State]:
    """One layer on one step, ``x (1, N, H_in)``, ``state`` and the result as
    :func:`rnnkit.kernels.reference.run_layer` has them; ``planned`` what
    :func:`plan` gave for them and ``weights``."""
    x, state = x.contiguous(), tuple([s.contiguous() for s in state])  # as in run_cell
    if planned.recorded:
        output, *new = _Step.apply(kind, planned.weights, True, x, *state, *(t for w in weights for t in w[:4]))
        return output, tuple(new)
    output, *new = _run(kind, planned.weights, True, x, state, 0)
    return output, tuple(new)


def _run(kind: str, planned: tuple[_Weights, ...], layer: bool, x: Tensor, state: State, acts: int) -> tuple:
    """Each direction's loop: the new state's parts, after the output
    ``(1, N, D*H_out)`` for a ``layer`` (a cell's output is its new ``h``);
    ``x`` and ``state`` C-contiguous, ``acts`` the address of ``(D, N,
    KEPT_WIDTH*H)`` for what a backward pass needs, or 0."""
    new = tuple([torch.empty_like(s) for s in state])
    x_at, rows, width = x.data_ptr(), x.shape[-2], state[0].shape[-1]
    state_at, new_at = tuple([s.data_ptr() for s in state]), tuple([n.data_ptr() for n in new])
    if not layer:  # one direction, whose output is its new h
        STEPS[kind](kind, x_at, state_at, planned[0], new_at[0], width, 0, new_at, rows, acts)
        return new
    output = torch.empty(1, rows, len(planned) * width, dtype=x.dtype)
    sizes = [s.stride(0) * s.element_size() for s in state]  # one direction's part, in bytes
    kept = rows * KEPT_WIDTH[kind] * planned[0].hidden * x.element_size() if acts else 0
    for d, w in enumerate(planned):
        STEPS[kind](
            kind, x_at, tuple(a + d * b for a, b in zip(state_at, sizes)), w, output.data_ptr(), output.shape[2],
            d * width, tuple(a + d * b for a, b in zip(new_at, sizes)), rows, acts + d * kept if acts else 0,
        )
    return (output, *new)


class _Step(torch.autograd.Function):
    """``(kind, planned, layer, x, *state, *weights) -> outputs``: a call of
    :func:`run_cell` or :func:`run_layer` that autograd records, ``x`` and the
    state C-contiguous, ``weights`` each direction's ``w_ih, w_hh, b_ih,
    b_hh``. The forward loops keep what the backward loops
    (:data:`BACKWARDS`) need, so no output is kept (the caller may change
    them in place); a backward pass that must itself be differentiable
    (``create_graph=True``) goes through the reference, recorded by autograd."""

    LEADING = 3
    """Arguments before ``x``, which get no gradient."""

    @staticmethod
    def forward(ctx, kind, planned, layer, x, *tensors):  # type: ignore[override]
        parts = len(tensors) - 4 * len(planned)
        state = tensors[:parts]
        acts = torch.empty((len(planned), x.shape[-2], KEPT_WIDTH[kind] * planned[0].hidden), dtype=x.dtype)
        outputs = _run(kind, planned, layer, x, state, acts.data_ptr())
        ctx.save_for_backward(x, *tensors, acts)
        ctx.kind, ctx.parts, ctx.layer, ctx.zero = kind, parts, layer, planned[0].zero
        return outputs

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        x, *saved = ctx.saved_tensors
        parts, layer, step_backward = ctx.parts, ctx.layer, BACKWARDS[ctx.kind]
        state, flat, acts = saved[:parts], saved[parts:-1], saved[-1]
        skipped = (None,) * _Step.LEADING
        if torch.is_grad_enabled():  # create_graph=True
            if layer:
                return *skipped, *reference_backward(ctx.kind, None, x, state, flat, grads)
            return *skipped, *_reference_grads(ctx.kind, x, state, flat, grads)
        needs = ctx.needs_input_grad[_Step.LEADING :]
        if not layer:
            return *skipped, *step_backward(
                ctx.kind, x, state, flat[0], flat[1], acts[0], _contiguous(grads), needs, ctx.zero
            )
        width, directions = state[0].shape[-1], len(flat) // 4
        grad_x, grad_state, grad_flat = None, [[] for _ in state], []
        for d in range(directions):
            grad_d = [None if g is None else g[d] for g in grads[1:]]
            if grads[0] is not None:  # the output's columns of this direction join dL/dh'
                from_output = grads[0][0, :, d * width : (d + 1) * width]
                grad_d[0] = from_output if grad_d[0] is None else grad_d[0] + from_output
            found = step_backward(
                ctx.kind, x[0], tuple(s[d] for s in state), flat[4 * d], flat[4 * d + 1], acts[d],
                _contiguous(grad_d),
                (needs[0], *needs[1 : 1 + parts], *needs[1 + parts + 4 * d : 1 + parts + 4 * d + 4]), ctx.zero,
            )
            if found[0] is not None:
                grad_x = found[0] if grad_x is None else grad_x + found[0]
            for part, g in zip(grad_state, found[1 : 1 + parts]):
                part.append(g)
            grad_flat.extend(found[1 + parts :])
        grad_state = [None if g[0] is None else torch.stack(g) for g in grad_state]
        return *skipped, None if grad_x is None else grad_x.unsqueeze(0), *grad_state, *grad_flat


def _contiguous(grads) -> tuple:
    return tuple(None if g is None else g.contiguous() for g in grads)


def _reference_grads(kind: str, x: Tensor, state: State, weights: list, grads: tuple) -> list[Tensor | None]:
    """A cell step's gradients through the reference's step, recorded by autograd."""
    w = DirectionWeights(*weights)
    with torch.enable_grad():
        new = reference.STEPS[kind](reference.input_projection(x, w), state, w)
    inputs = [x, *state, *weights]
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    pairs = [(n, g) for n, g in zip(new, grads) if g is not None]
    found = iter(torch.autograd.grad(
        [n for n, _ in pairs], wanted, [g for _, g in pairs], create_graph=True, allow_unused=True
    ))
    return [next(found) if t is not None and t.requires_grad else None for t in inputs]
