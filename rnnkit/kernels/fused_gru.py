"""The fused GRU layer: its cell for :class:`~rnnkit.kernels.fused_common.FusedLayer`.

Forward, for a layer with ``D`` directions over ``(T, N, H_in)`` and hidden
size ``H``:

1. every step's input projection for all directions, ``W_ih x_t + b_ih``,
   goes into a gates buffer ``(T, N, D*3H)``
   (:func:`~rnnkit.kernels.fused_common.project_inputs`),
   ``b_hr`` and ``b_hz`` added with it (``b_hn`` sits inside the reset
   product and stays in the loop);
2. :func:`~rnnkit.kernels.gru_loops.gru_forward` runs the recurrence,
   turning the gates buffer into the gates' activations in place and, when
   a backward pass may follow, keeping ``W_hn h_{t-1} + b_hn`` of every step
   in ``(T, N, D*H)``.

Backward, from ``dL/d output`` and ``dL/d h_n``:

1. :func:`~rnnkit.kernels.gru_loops.gru_backward` walks the steps back and
   turns, in place, the activations into the gradients of the input-side
   pre-activations, and ``W_hn h + b_hn`` into its own gradient (the one part
   of the hidden side whose gradient differs); it leaves ``dL/dh_0``;
2. :func:`~rnnkit.kernels.fused_common.weight_grads` does the products over
   all steps: ``dL/dx``, ``dL/dW_ih``, ``dL/dW_hh`` and the biases.

What is kept for the backward pass: the gates' activations and ``W_hn h +
b_hn`` per step, and the output ``h_t`` itself. Nothing is kept when no
backward pass can follow. A second backward pass through the same graph
(``retain_graph=True``), since the first overwrote the activations, or one
after the caller changed the output in place runs the forward loop again;
one that must itself be differentiable (``create_graph=True``) goes through
the reference recurrence.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.kernels import fused_common as common
from rnnkit.kernels import parallel
from rnnkit.kernels.blas import StepGemm
from rnnkit.kernels.fused_common import Wanted
from rnnkit.kernels.gru_loops import gru_backward, gru_forward, gru_step, gru_step_backward
from rnnkit.kernels.reference import DirectionWeights, State


class GRU:
    """The GRU cell (:class:`~rnnkit.kernels.fused_common.Cell`): outputs
    ``output (T, N, D*H)`` and ``h_n (D, N, H)``; keeps the gates'
    activations and every ``W_hn h_{t-1} + b_hn``, which its backward loop
    overwrites."""

    kind, state_size, fields, single_use = "gru", 1, 4, True  # w_ih, w_hh, b_ih, b_hh

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...], weights: list[DirectionWeights], lengths: np.ndarray,
        keep: bool,
    ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``hns`` keeps every ``W_hn h_{t-1} + b_hn`` when ``keep`` (else it
        is one step's worth of scratch)."""
        (h0,) = state
        steps, batch, _ = x.shape
        directions, _, hidden = h0.shape
        biases, b_hn = None, [torch.zeros(hidden, dtype=x.dtype).numpy()] * directions
        if weights[0].b_ih is not None:
            biases = [w.b_ih + torch.cat([w.b_hh[: 2 * hidden], w.b_hh.new_zeros(hidden)]) for w in weights]
            b_hn = [common.as_array(w.b_hh[2 * hidden :]) for w in weights]
        gates, project = common.project_inputs(
            x, weights, biases, steady=not keep, allocate=common.pooled_tensor if keep else common.scratch_tensor
        )  # (T, N, D*3H)
        out = x.new_empty(steps, batch, directions * hidden)
        if keep:
            hns = common.pooled_tensor((steps, batch, directions * hidden), x.dtype)
        else:  # one step's scratch
            hns = x.new_empty(1, batch, directions * hidden)
        h_n = h0.detach().clone(memory_format=torch.contiguous_format)
        w_hh_t = common.step_weights([w.w_hh.t() for w in weights], x.dtype, steady=not keep)
        gates_a, out_a, hns_a, h_a = (common.as_array(t) for t in (gates, out, hns, h_n))

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            gru_forward(
                gates_a, d * 3 * hidden, w_hh_t[d], b_hn[d], out_a, d * hidden, hns_a, h_a[d],
                lengths, d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, weights, batch, steps, project)
        return (out, h_n), ((gates, hns) if keep else ())

    def backward(
        self, x: Tensor, state: tuple[Tensor, ...], weights: list[DirectionWeights], kept: tuple[Tensor, ...],
        out: Tensor, lengths: np.ndarray, grads: tuple[Tensor, ...], wanted: Wanted,
    ) -> tuple[Tensor | None, tuple[Tensor], list[Tensor | None]]:
        (h0,), (gates, hns), (grad_out, grad_h_n) = state, kept, grads
        steps, batch, _ = x.shape
        hidden = h0.shape[2]
        grad_h0 = grad_h_n.clone(memory_format=torch.contiguous_format)
        w_hh = common.step_weights([w.w_hh for w in weights], x.dtype)
        h0_a = common.as_array(h0)
        gates_a, hns_a, out_a, grad_out_a, dh_a = (
            common.as_array(t) for t in (gates, hns, out, grad_out, grad_h0)
        )

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            gru_backward(
                gates_a, d * 3 * hidden, hns_a, out_a, d * hidden, h0_a[d], w_hh[d], grad_out_a,
                dh_a[d], lengths, d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, weights, batch, steps)
        # gates now holds the input side's gradients, hns the new gate's hidden side's
        grad_x, grads = common.weight_grads(
            gates, x, h0, out, weights, lengths, wanted.x, wanted.weights, last_gate_hidden=hns
        )
        return grad_x, (grad_h0,), grads


def run_layer(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
) -> tuple[Tensor, State]:
    """One GRU layer; the interface of :func:`rnnkit.kernels.reference.run_layer`."""
    output, h_n = common.run_cell(GRU(), x, state, weights, lengths)
    return output, (h_n,)


def step(kind: str, x: int, state: tuple[int, ...], w, out: int, width: int, col: int, new: tuple[int, ...],
         rows: int, keep: int = 0) -> None:
    """One step on its own by address (:data:`rnnkit.kernels.fused_step.STEPS`)."""
    gru_step((x, state[0], *w.at[:4], out, new[0], keep), rows, w.inputs, w.hidden, width, col, w.zero)


STEP_KEPT = 4
"""What :func:`step` keeps for :func:`step_backward`, in units of ``H`` per
row: the gates r, z, n and W_hn h + b_hn."""


def step_backward(kind, x, state, w_ih, w_hh, acts, grads, needs, zero):
    """The gradients of one :func:`step` that kept ``acts``
    (:data:`rnnkit.kernels.fused_step.BACKWARDS`)."""
    ((h,), (dh_n,)) = state, grads
    rows, hidden = h.shape
    dz_x, dz_h = torch.empty((rows, 3 * hidden), dtype=x.dtype), torch.empty((rows, 3 * hidden), dtype=x.dtype)
    wanted = [
        torch.empty_like(t, memory_format=torch.contiguous_format) if need else None
        for t, need in zip((x, h, w_ih, w_hh), needs)
    ]
    gru_step_backward(
        tuple(0 if t is None else t.data_ptr() for t in (x, h, w_ih, w_hh, acts, dh_n, dz_x, dz_h, *wanted)),
        rows, x.shape[1], hidden, zero,
    )
    return *wanted, dz_x.sum(0) if needs[4] else None, dz_h.sum(0) if needs[5] else None
