"""The fused LSTM layer with rnnkit's options beyond torch.nn: layer norm,
recurrent dropout and zoneout (without a projection), forward and backward.

Forward, for a layer with ``D`` directions over ``(T, N, H_in)``:

1. torch computes every step's input side, ``LN_ih(W_ih x_t) + b_ih + b_hh``
   (:func:`rnnkit.kernels.reference.input_projection`), so autograd carries
   its gradient back to ``x``, ``W_ih``, the gain and the biases;
2. :func:`~rnnkit.kernels.extension_loops.extended_lstm_forward` runs the
   recurrence per direction and batch chunk, on the threads
   :func:`~rnnkit.kernels.fused_common.run_pieces` plans, keeping what the
   backward loop needs (activations, ``c_t``, each step's masked ``h_(t-1)``
   and, with layer norm, the normalised products and their statistics).

Backward: :func:`~rnnkit.kernels.extension_loops.extended_lstm_backward`
walks the steps back; the sums over all steps (``dL/dW_hh`` and the gains'
gradients) are matrix products and reductions done here. A backward pass
that must itself be differentiable (``create_graph=True``) is refused by
autograd (the loops are not differentiable twice).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.kernels import fused_common as common
from rnnkit.kernels import parallel
from rnnkit.kernels.extension_loops import extended_lstm_backward, extended_lstm_forward
from rnnkit.kernels.reference import DirectionWeights, State, input_projection

_FIELDS = 4  # per direction: w_hh, ln_hh_weight, ln_c_weight, ln_c_bias


def _optional(tensors: list[Tensor | None], dtype: torch.dtype, *shape: int) -> list[np.ndarray]:
    """Each direction's array, or an empty one of ``shape`` (how the loops are told there is none)."""
    return common.as_arrays(tensors, shape, dtype)


class _ExtendedLSTM(torch.autograd.Function):
    """``(lengths, recurrent_mask, zoneout_mask, xp, h0, c0, *weights) -> (output, h_n, c_n)``;
    ``weights`` are :data:`_FIELDS` tensors per direction (the gains ``None``
    without layer norm), the masks ``(D, N, H)`` and ``(D, T, N, H)`` or ``None``."""

    @staticmethod
    def forward(ctx, lengths, rmask, zmask, xp, h0, c0, *flat):  # type: ignore[override]
        steps, batch, _ = xp.shape
        directions, _, hidden = c0.shape
        norm = flat[1] is not None
        new = xp.new_empty
        gates, cells = new(xp.shape), new(steps, batch, directions * hidden)
        out, hprev = new(cells.shape), new(cells.shape)
        empty = new(0, 0, 0)
        zhat = new(xp.shape) if norm else empty
        chat = new(cells.shape) if norm else empty
        rstd_z = new(steps, batch, directions) if norm else empty
        rstd_c = new(steps, batch, directions) if norm else empty
        h_n = h0.detach().clone(memory_format=torch.contiguous_format)
        c_n = c0.detach().clone(memory_format=torch.contiguous_format)
        weights = [flat[k : k + _FIELDS] for k in range(0, len(flat), _FIELDS)]
        w_hh = [common.as_array(w[0]) for w in weights]
        g_hh, g_c, b_c = (_optional([w[j] for w in weights], xp.dtype, 0) for j in (1, 2, 3))
        rm = _optional([None if rmask is None else rmask[d] for d in range(directions)], xp.dtype, 0, 0)
        zm = _optional([None if zmask is None else zmask[d] for d in range(directions)], xp.dtype, 0, 0, 0)
        arrays = [common.as_array(t) for t in (xp, gates, cells, out, hprev, zhat, rstd_z, chat, rstd_c, h_n, c_n)]
        xp_a, gates_a, cells_a, out_a, hprev_a, zhat_a, rstd_z_a, chat_a, rstd_c_a, h_a, c_a = arrays
        lengths_a = lengths.numpy()

        def work(piece: parallel.Piece, gemm: int) -> None:
            d = piece.d
            extended_lstm_forward(
                xp_a, d * 4 * hidden, d * hidden, d, w_hh[d], g_hh[d], g_c[d], b_c[d], rm[d], zm[d], norm,
                gates_a, cells_a, out_a, hprev_a, zhat_a, rstd_z_a, chat_a, rstd_c_a, h_a[d], c_a[d],
                lengths_a, d == 1, piece.n0, piece.n1, gemm,
            )

        sizing = [DirectionWeights(w[0], w[0]) for w in weights]
        common.run_pieces(work, sizing, batch, steps)
        ctx.save_for_backward(c0, *flat)
        ctx.kept = (lengths, rmask, zmask, gates, cells, hprev, zhat, rstd_z, chat, rstd_c, norm)
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h_n, grad_c_n):  # type: ignore[override]
        c0, *flat = ctx.saved_tensors
        lengths, rmask, zmask, gates, cells, hprev, zhat, rstd_z, chat, rstd_c, norm = ctx.kept
        steps, batch, _ = gates.shape
        directions, _, hidden = c0.shape
        weights = [flat[k : k + _FIELDS] for k in range(0, len(flat), _FIELDS)]
        dxp = gates.new_empty(gates.shape)
        dz = gates.new_empty(gates.shape) if norm else dxp
        dy = cells.new_empty(cells.shape) if norm else cells.new_empty(0, 0, 0)
        dh = grad_h_n.clone(memory_format=torch.contiguous_format)
        dc = grad_c_n.clone(memory_format=torch.contiguous_format)
        w_hh_t = [common.as_array(w[0].t()) for w in weights]
        g_hh, g_c, b_c = (_optional([w[j] for w in weights], gates.dtype, 0) for j in (1, 2, 3))
        rm = _optional([None if rmask is None else rmask[d] for d in range(directions)], gates.dtype, 0, 0)
        zm = _optional([None if zmask is None else zmask[d] for d in range(directions)], gates.dtype, 0, 0, 0)
        arrays = [common.as_array(t) for t in (gates, cells, c0, zhat, rstd_z, chat, rstd_c, grad_out, dxp, dz, dy, dh, dc)]
        gates_a, cells_a, c0_a, zhat_a, rstd_z_a, chat_a, rstd_c_a, grad_out_a, dxp_a, dz_a, dy_a, dh_a, dc_a = arrays
        lengths_a = lengths.numpy()

        def work(piece: parallel.Piece, gemm: int) -> None:
            d = piece.d
            extended_lstm_backward(
                gates_a, d * 4 * hidden, d * hidden, d, cells_a, c0_a[d], w_hh_t[d], g_hh[d], g_c[d], b_c[d],
                rm[d], zm[d], norm, zhat_a, rstd_z_a, chat_a, rstd_c_a, grad_out_a, dxp_a, dz_a, dy_a,
                dh_a[d], dc_a[d], lengths_a, d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, [DirectionWeights(w[0], w[0]) for w in weights], batch, steps)
        pairs = steps * batch
        grads: list[Tensor | None] = []
        for d, w in enumerate(weights):
            gates_d, cells_d = slice(d * 4 * hidden, (d + 1) * 4 * hidden), slice(d * hidden, (d + 1) * hidden)
            dz_d = dz[:, :, gates_d].reshape(pairs, 4 * hidden)
            grads.append(dz_d.t() @ hprev[:, :, cells_d].reshape(pairs, hidden))
            if norm:
                dy_d = dy[:, :, cells_d]
                grads += [
                    (dxp[:, :, gates_d] * zhat[:, :, gates_d]).sum((0, 1)),
                    (dy_d * chat[:, :, cells_d]).sum((0, 1)),
                    dy_d.sum((0, 1)),
                ]
            else:
                grads += [None, None, None]
        return None, None, None, dxp, dh, dc, *grads


def run_layer(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> tuple[Tensor, State]:
    """One LSTM layer with layer norm, recurrent dropout or zoneout (no projection);
    the interface of :func:`rnnkit.kernels.reference.run_layer`."""
    h0, c0 = state
    steps, batch = x.shape[0], x.shape[1]
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.int64)
    xp = torch.cat([
        input_projection(x, w) if w.b_hh is None else input_projection(x, w) + w.b_hh for w in weights
    ], dim=2).contiguous()
    flat = [t for w in weights for t in (w.w_hh, w.ln_hh_weight, w.ln_c_weight, w.ln_c_bias)]
    if zoneout_mask is not None:
        zoneout_mask = zoneout_mask.contiguous()  # in eval mode an expanded constant
    output, h_n, c_n = _ExtendedLSTM.apply(lengths, recurrent_mask, zoneout_mask, xp, h0, c0, *flat)
    return output, (h_n, c_n)
