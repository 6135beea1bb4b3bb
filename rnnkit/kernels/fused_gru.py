"""The fused GRU layer: a ``torch.autograd.Function``.

Forward, for a layer with ``D`` directions over ``(T, N, H_in)`` and hidden
size ``H``:

1. one matrix product gives every step's input projection for all
   directions, ``W_ih x_t + b_ih``, into a gates buffer ``(T, N, D*3H)``;
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
from rnnkit.kernels.gru_loops import gru_backward, gru_forward
from rnnkit.kernels.reference import DirectionWeights, State


FIELDS = 4
"""Tensors per direction in the flat argument list: ``w_ih, w_hh, b_ih, b_hh``."""


def _forward(
    x: Tensor, h0: Tensor, weights: list[DirectionWeights], lengths: np.ndarray, keep: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward pass: ``(gates, hns, out, h_n)``, ``gates`` holding the
    activations and ``hns`` every ``W_hn h_{t-1} + b_hn`` when ``keep`` (else
    one step's worth of scratch)."""
    steps, batch, _ = x.shape
    directions, _, hidden = h0.shape
    gates = common.project_inputs(x, weights)  # (T, N, D*3H)
    out = x.new_empty(steps, batch, directions * hidden)
    hns = x.new_empty(steps if keep else 1, batch, directions * hidden)
    h_n = h0.detach().clone(memory_format=torch.contiguous_format)
    w_hh = [common.as_array(w.w_hh) for w in weights]
    b_hh = common.as_arrays([w.b_hh for w in weights], (3 * hidden,), x.dtype)
    gates_a, out_a, hns_a, h_a = (common.as_array(t) for t in (gates, out, hns, h_n))

    def work(piece: parallel.Piece, gemm: int) -> None:
        d = piece.d
        gru_forward(
            gates_a, d * 3 * hidden, w_hh[d], b_hh[d], out_a, d * hidden, hns_a, h_a[d],
            lengths, d == 1, piece.n0, piece.n1, gemm,
        )

    common.run_pieces(work, weights, batch, steps)
    return gates, hns, out, h_n


class GRUFunction(torch.autograd.Function):
    """``(keep, lengths, x, h0, *flat_weights) -> (output, h_n)``.

    ``keep`` says whether a backward pass may follow (then what it needs is
    kept). Shapes: ``lengths (N,)`` int64 in ``[0, T]`` (``None``: all ``T``),
    ``x (T, N, H_in)``, ``h0 (D, N, H)``; ``flat_weights`` is ``w_ih, w_hh,
    b_ih, b_hh`` per direction (biases ``None`` without bias). Returns
    ``output (T, N, D*H)`` and ``h_n (D, N, H)``.
    """

    @staticmethod
    def forward(ctx, keep: bool, lengths: Tensor | None, x: Tensor, h0: Tensor, *flat: Tensor | None):
        lengths_a = common.lengths_array(lengths, x.shape[1], x.shape[0])
        gates, hns, out, h_n = _forward(x, h0, common.unflatten(flat, FIELDS), lengths_a, keep)
        if keep:
            ctx.save_for_backward(x, h0, gates, hns, *flat)
            ctx.lengths, ctx.lengths_a = lengths, lengths_a
            common.keep_output(ctx, out, single_use=True)
        return out, h_n

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_h_n: Tensor):
        x, h0, gates, hns, *flat = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            grads = common.reference_backward("gru", ctx.lengths, x, (h0,), flat, (grad_out, grad_h_n))
            return None, None, *grads
        weights = common.unflatten(flat, FIELDS)
        lengths_a = ctx.lengths_a
        out = common.kept_output(ctx)
        if out is None:
            gates, hns, out, _ = _forward(x, h0, weights, lengths_a, keep=True)
        steps, batch, _ = x.shape
        directions, _, hidden = h0.shape

        grad_h0 = grad_h_n.clone(memory_format=torch.contiguous_format)
        w_hh_t = [common.as_array(w.w_hh.t()) for w in weights]
        h0_a = common.as_array(h0)
        gates_a, hns_a, out_a, grad_out_a, dh_a = (
            common.as_array(t) for t in (gates, hns, out, grad_out, grad_h0)
        )

        def work(piece: parallel.Piece, gemm: int) -> None:
            d = piece.d
            gru_backward(
                gates_a, d * 3 * hidden, hns_a, out_a, d * hidden, h0_a[d], w_hh_t[d], grad_out_a,
                dh_a[d], lengths_a, d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, weights, batch, steps)
        needs = ctx.needs_input_grad
        # gates now holds the input side's gradients, hns the new gate's hidden side's
        grad_x, grads = common.weight_grads(
            gates, x, h0, out, weights, lengths_a, needs[2], any(needs[4:]), last_gate_hidden=hns
        )
        return None, None, grad_x, grad_h0 if needs[3] else None, *grads


def run_layer(
    mode: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
) -> tuple[Tensor, State]:
    """One GRU layer; the interface of :func:`rnnkit.kernels.reference.run_layer`."""
    flat = common.flatten(weights, FIELDS)
    output, h_n = GRUFunction.apply(
        common.backward_may_follow(x, *state, *flat), lengths,
        x, state[0], *flat,
    )
    return output, (h_n,)
