"""The fused LSTM layer, with or without a projection: its cell for
:class:`~rnnkit.kernels.fused_common.FusedLayer`.

Forward, for a layer with ``D`` directions over ``(T, N, H_in)``, hidden size
``H`` and output size ``P`` (``proj_size``, else ``H``):

1. every step's input projection for all directions, ``W_ih x_t + b_ih +
   b_hh``, goes into a gates buffer ``(T, N, D*4H)``
   (:func:`~rnnkit.kernels.fused_common.project_inputs`);
2. :func:`~rnnkit.kernels.lstm_loops.lstm_forward` runs the recurrence,
   turning the gates buffer into the gates' activations in place and, when
   a backward pass may follow, keeping every ``c_t`` in ``(T, N, D*H)``.

Asked for (``return_cells``), every ``c_t`` is an output too, differentiable.

Backward, from ``dL/d output``, ``dL/d h_n``, ``dL/d c_n`` (and ``dL/d cells``):

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
from rnnkit.kernels import dense, parallel
from rnnkit.kernels.blas import StepGemm
from rnnkit.kernels.fused_common import Wanted
from rnnkit.kernels.lstm_loops import lstm_backward, lstm_forward, lstm_step, lstm_step_backward
from rnnkit.kernels.reference import DirectionWeights, State


class LSTM:
    """The LSTM cell (:class:`~rnnkit.kernels.fused_common.Cell`): outputs
    ``output (T, N, D*P)``, ``h_n (D, N, P)``, ``c_n (D, N, H)`` and, with
    ``return_cells``, ``cells (T, N, D*H)``; keeps the gates' activations and
    every ``c_t``, which its backward loop overwrites."""

    kind, state_size, fields, single_use = "lstm", 2, 5, True  # w_ih, w_hh, b_ih, b_hh, w_hr

    def __init__(self, return_cells: bool):
        self.return_cells = return_cells

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...], weights: list[DirectionWeights], lengths: np.ndarray,
        keep: bool,
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, Tensor]]:
        """Keeps ``(gates, cells)``: the activations, and every ``c_t``; the
        cells are written whole where they are returned too (else one step's
        worth of scratch serves)."""
        h0, c0 = state
        steps, batch, _ = x.shape
        directions, _, width = h0.shape
        hidden = c0.shape[2]
        biases = None if weights[0].b_ih is None else [w.b_ih + w.b_hh for w in weights]
        gates, project = common.project_inputs(
            x, weights, biases, steady=not keep, allocate=common.pooled_tensor if keep else common.scratch_tensor
        )  # (T, N, D*4H)
        out = x.new_empty(steps, batch, directions * width)
        if keep and not self.return_cells:  # kept for the backward pass only
            cells = common.pooled_tensor((steps, batch, directions * hidden), x.dtype)
        else:  # an output too, or one step's scratch
            cells = x.new_empty(steps if self.return_cells else 1, batch, directions * hidden)
        h_n = h0.detach().clone(memory_format=torch.contiguous_format)
        c_n = c0.detach().clone(memory_format=torch.contiguous_format)
        w_hh_t = common.step_weights([w.w_hh.t() for w in weights], x.dtype, steady=not keep)
        w_hr_t = common.step_weights(
            [None if w.w_hr is None else w.w_hr.t() for w in weights], x.dtype, steady=not keep
        )
        gates_a, out_a, cells_a, h_a, c_a = (common.as_array(t) for t in (gates, out, cells, h_n, c_n))

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            lstm_forward(
                gates_a, d * 4 * hidden, w_hh_t[d], w_hr_t[d], out_a, d * width,
                cells_a, d * hidden, h_a[d], c_a[d], lengths, d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, weights, batch, steps, project)
        outputs = (out, h_n, c_n, cells) if self.return_cells else (out, h_n, c_n)
        return outputs, ((gates, cells) if keep else ())

    def backward(
        self, x: Tensor, state: tuple[Tensor, ...], weights: list[DirectionWeights], kept: tuple[Tensor, ...],
        out: Tensor, lengths: np.ndarray, grads: tuple[Tensor, ...], wanted: Wanted,
    ) -> tuple[Tensor | None, tuple[Tensor, Tensor], list[Tensor | None]]:
        (h0, c0), (gates, cells) = state, kept
        grad_out, grad_h_n, grad_c_n, *grad_cells = grads
        steps, batch, _ = x.shape
        directions, _, width = h0.shape
        hidden = c0.shape[2]
        project = weights[0].w_hr is not None
        if project and self.return_cells:
            cells = cells.clone()  # the loop below overwrites it, and the caller may hold it as an output
        cells_grad = grad_cells[0] if grad_cells else x.new_empty(0, batch, directions * hidden)

        grad_h0 = grad_h_n.clone(memory_format=torch.contiguous_format)
        grad_c0 = grad_c_n.clone(memory_format=torch.contiguous_format)
        dhs = x.new_empty(steps if project else 0, batch, directions * width)  # dL/dh_t
        w_hh = common.step_weights([w.w_hh for w in weights], x.dtype)
        w_hr = common.step_weights([w.w_hr for w in weights], x.dtype)
        c0_a = common.as_array(c0)
        arrays = [common.as_array(t) for t in (gates, cells, grad_out, cells_grad, grad_h0, grad_c0, dhs)]
        gates_a, cells_a, grad_out_a, cells_grad_a, dh_a, dc_a, dhs_a = arrays

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            lstm_backward(
                gates_a, d * 4 * hidden, cells_a, d * hidden, c0_a[d], w_hh[d], w_hr[d],
                grad_out_a, cells_grad_a, d * width, dh_a[d], dc_a[d], dhs_a, lengths, d == 1,
                piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, weights, batch, steps)
        # gates now holds dL/d(gate pre-activations); with a projection, cells o * tanh(c_t)
        grad_x, grads = common.weight_grads(gates, x, h0, out, weights, lengths, wanted.x, wanted.weights)
        flat_grads: list[Tensor | None] = []
        for d in range(directions):
            grad_w_hr = None
            if project and wanted.weights:
                pairs = dhs.shape[0] * dhs.shape[1]
                dh_d = dhs[:, :, d * width : (d + 1) * width].reshape(pairs, width)
                grad_w_hr = dense.matmul(dh_d.t(), cells[:, :, d * hidden : (d + 1) * hidden].reshape(pairs, hidden))
            flat_grads += [*grads[4 * d : 4 * d + 4], grad_w_hr]
        return grad_x, (grad_h0, grad_c0), flat_grads


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
    output, h_n, c_n, *cells = common.run_cell(LSTM(return_cells), x, state, weights, lengths)
    return (output, (h_n, c_n), *cells)


def step(kind: str, x: int, state: tuple[int, ...], w, out: int, width: int, col: int, new: tuple[int, ...],
         rows: int, keep: int = 0) -> None:
    """One step on its own by address (:data:`rnnkit.kernels.fused_step.STEPS`)."""
    lstm_step((x, *state, *w.at, out, *new, keep), rows, w.inputs, w.hidden, w.projected, width, col, w.zero)


STEP_KEPT = 5
"""What :func:`step` keeps for :func:`step_backward`, in units of ``H`` per
row: the gates i, f, g, o and c'."""


def step_backward(kind, x, state, w_ih, w_hh, acts, grads, needs, zero):
    """The gradients of one :func:`step` that kept ``acts``, no projection
    (:data:`rnnkit.kernels.fused_step.BACKWARDS`)."""
    (h, c), (dh_n, dc_n) = state, grads
    rows, hidden = c.shape
    dz = torch.empty((rows, 4 * hidden), dtype=x.dtype)
    wanted = [
        torch.empty_like(t, memory_format=torch.contiguous_format) if need else None
        for t, need in zip((x, h, c, w_ih, w_hh), needs)
    ]
    lstm_step_backward(
        tuple(0 if t is None else t.data_ptr() for t in (x, h, c, w_ih, w_hh, acts, dh_n, dc_n, dz, *wanted)),
        rows, x.shape[1], hidden, zero,
    )
    db = dz.sum(0) if needs[5] or needs[6] else None  # both biases' gradient, each its own tensor
    return *wanted, db if needs[5] else None, (db.clone() if needs[5] else db) if needs[6] else None
