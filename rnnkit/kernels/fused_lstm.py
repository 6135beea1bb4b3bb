"""The fused LSTM layer, with or without a projection: a ``torch.autograd.Function``.

Forward, for a layer with ``D`` directions over ``(T, N, H_in)``, hidden size
``H`` and output size ``P`` (``proj_size``, else ``H``):

1. one matrix product gives every step's input projection for all
   directions, ``W_ih x_t + b_ih``, into a gates buffer ``(T, N, D*4H)``;
2. :func:`~rnnkit.kernels.lstm_loops.lstm_forward` runs the recurrence,
   turning the gates buffer into the gates' activations in place and, when
   a backward pass may follow, keeping every ``c_t`` in ``(T, N, D*H)``.

Backward, from ``dL/d output``, ``dL/d h_n`` and ``dL/d c_n``:

1. :func:`~rnnkit.kernels.lstm_loops.lstm_backward` walks the steps back and
   turns the activations into the gradients of the gate pre-activations, in
   place, and leaves ``dL/dh_0``, ``dL/dc_0``;
2. :func:`~rnnkit.kernels.fused_common.weight_grads` does the products over
   all steps: ``dL/dx``, ``dL/dW_ih``, ``dL/dW_hh`` and the biases; with a
   projection, ``dL/dW_hr`` is one more.

What is kept for the backward pass is what torch's own fused kernels keep:
the gates' activations and ``c_t`` per step, and the output ``h_t`` itself.
Nothing is kept when no backward pass can follow. A second backward pass
through the same graph (``retain_graph=True``), since the first overwrote
the activations, or one after the caller changed the output in place runs
the forward loop again; one that must itself be differentiable
(``create_graph=True``) goes through the reference recurrence.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels import fused_common as common
from rnnkit.kernels import parallel
from rnnkit.kernels.lstm_loops import lstm_backward, lstm_forward
from rnnkit.kernels.reference import DirectionWeights, State

FIELDS = 5
"""Tensors per direction in the flat argument list: ``w_ih, w_hh, b_ih, b_hh, w_hr``."""


def _forward(
    x: Tensor, h0: Tensor, c0: Tensor, weights: list[DirectionWeights], lengths: np.ndarray, keep: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward pass: ``(gates, cells, out, h_n, c_n)``, ``gates`` holding
    the activations and ``cells`` every ``c_t`` when ``keep`` (else one
    step's worth of scratch). ``keep`` is also how the caller asks for the
    cells themselves."""
    steps, batch, _ = x.shape
    directions, _, width = h0.shape
    hidden = c0.shape[2]
    gates = common.project_inputs(x, weights)  # (T, N, D*4H)
    out = x.new_empty(steps, batch, directions * width)
    cells = x.new_empty(steps if keep else 1, batch, directions * hidden)
    h_n = h0.detach().clone(memory_format=torch.contiguous_format)
    c_n = c0.detach().clone(memory_format=torch.contiguous_format)
    w_hh = [common.as_array(w.w_hh) for w in weights]
    b_hh = common.as_arrays([w.b_hh for w in weights], (4 * hidden,), x.dtype)
    w_hr = common.as_arrays([w.w_hr for w in weights], (0, hidden), x.dtype)
    gates_a, out_a, cells_a, h_a, c_a = (common.as_array(t) for t in (gates, out, cells, h_n, c_n))

    def work(piece: parallel.Piece, gemm: int) -> None:
        d = piece.d
        lstm_forward(
            gates_a, d * 4 * hidden, w_hh[d], b_hh[d], w_hr[d], out_a, d * width,
            cells_a, d * hidden, h_a[d], c_a[d], lengths, d == 1, piece.n0, piece.n1, gemm,
        )

    common.run_pieces(work, weights, batch, steps)
    return gates, cells, out, h_n, c_n


class LSTMFunction(torch.autograd.Function):
    """``(keep, return_cells, lengths, x, h0, c0, *flat_weights) -> (output, h_n, c_n[, cells])``.

    ``keep`` says whether a backward pass may follow (then what it needs is
    kept); ``return_cells`` adds ``cells (T, N, D*H)``, every step's ``c_t``
    (zeros past each length), differentiable. Shapes: ``lengths (N,)`` int64 in ``[0, T]`` (``None``: all ``T``),
    ``x (T, N, H_in)``, ``h0 (D, N, P)``, ``c0 (D, N, H)``; ``flat_weights`` is
    ``w_ih, w_hh, b_ih, b_hh, w_hr`` per direction (biases ``None`` without
    bias, ``w_hr`` ``None`` without projection). Returns ``output (T, N, D*P)``,
    ``h_n (D, N, P)`` and ``c_n (D, N, H)``.
    """

    @staticmethod
    def forward(
        ctx, keep: bool, return_cells: bool, lengths: Tensor | None, x: Tensor, h0: Tensor, c0: Tensor,
        *flat: Tensor | None,
    ):
        lengths_a = common.lengths_array(lengths, x.shape[1], x.shape[0])
        weights = common.unflatten(flat, FIELDS)
        gates, cells, out, h_n, c_n = _forward(x, h0, c0, weights, lengths_a, keep or return_cells)
        ctx.return_cells = return_cells
        if keep:
            ctx.save_for_backward(x, h0, c0, gates, cells, *flat)
            ctx.lengths, ctx.lengths_a = lengths, lengths_a
            common.keep_output(ctx, out, single_use=True)
        return (out, h_n, c_n, cells) if return_cells else (out, h_n, c_n)

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_h_n: Tensor, grad_c_n: Tensor, *grad_cells: Tensor):
        x, h0, c0, gates, cells, *flat = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            grads = common.reference_backward(
                "lstm", ctx.lengths, x, (h0, c0), flat, (grad_out, grad_h_n, grad_c_n, *grad_cells)
            )
            return None, None, None, *grads
        weights = common.unflatten(flat, FIELDS)
        lengths_a = ctx.lengths_a
        out = common.kept_output(ctx)
        steps, batch, _ = x.shape
        directions, _, width = h0.shape
        hidden = c0.shape[2]
        project = weights[0].w_hr is not None
        if out is None:
            gates, cells, out, _, _ = _forward(x, h0, c0, weights, lengths_a, keep=True)
        elif project and ctx.return_cells:
            cells = cells.clone()  # the loop below overwrites it, and the caller holds it as an output
        cells_grad = grad_cells[0] if grad_cells else x.new_empty(0, batch, directions * hidden)

        grad_h0 = grad_h_n.clone(memory_format=torch.contiguous_format)
        grad_c0 = grad_c_n.clone(memory_format=torch.contiguous_format)
        dhs = x.new_empty(steps if project else 0, batch, directions * width)  # dL/dh_t
        w_hh_t = [common.as_array(w.w_hh.t()) for w in weights]
        w_hr_t = common.as_arrays(
            [None if w.w_hr is None else w.w_hr.t() for w in weights], (0, width), x.dtype
        )
        c0_a = common.as_array(c0)
        arrays = [common.as_array(t) for t in (gates, cells, grad_out, cells_grad, grad_h0, grad_c0, dhs)]
        gates_a, cells_a, grad_out_a, cells_grad_a, dh_a, dc_a, dhs_a = arrays

        def work(piece: parallel.Piece, gemm: int) -> None:
            d = piece.d
            lstm_backward(
                gates_a, d * 4 * hidden, cells_a, d * hidden, c0_a[d], w_hh_t[d], w_hr_t[d],
                grad_out_a, cells_grad_a, d * width, dh_a[d], dc_a[d], dhs_a, lengths_a, d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, weights, batch, steps)
        needs = ctx.needs_input_grad
        # gates now holds dL/d(gate pre-activations); with a projection, cells o * tanh(c_t)
        need_weights = any(needs[6:])
        grad_x, grads = common.weight_grads(gates, x, h0, out, weights, lengths_a, needs[3], need_weights)
        flat_grads: list[Tensor | None] = []
        for d in range(directions):
            grad_w_hr = None
            if project and need_weights:
                pairs = dhs.shape[0] * dhs.shape[1]
                dh_d = dhs[:, :, d * width : (d + 1) * width].reshape(pairs, width)
                grad_w_hr = dh_d.t() @ cells[:, :, d * hidden : (d + 1) * hidden].reshape(pairs, hidden)
            flat_grads += [*grads[4 * d : 4 * d + 4], grad_w_hr]
        return (
            None, None, None, grad_x, grad_h0 if needs[4] else None, grad_c0 if needs[5] else None,
            *flat_grads,
        )


def run_layer(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
    return_cells: bool = False,
) -> tuple[Tensor, State] | tuple[Tensor, State, Tensor]:
    """One LSTM layer; the interface of :func:`rnnkit.kernels.reference.run_layer`:
    ``(output, (h_n, c_n))``, and ``cells (T, N, D*H)`` after them with
    ``return_cells``."""
    flat = common.flatten(weights, FIELDS)
    h0, c0 = state
    output, h_n, c_n, *cells = LSTMFunction.apply(
        common.backward_may_follow(x, *state, *flat), return_cells, lengths,
        x, h0, c0, *flat,
    )
    return (output, (h_n, c_n), *cells)
