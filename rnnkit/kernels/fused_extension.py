"""The fused Elman, LSTM and GRU layers with rnnkit's options beyond torch.nn:
layer norm, recurrent dropout and zoneout (an LSTM's projection too),
forward and backward.

Forward, for a layer with ``D`` directions over ``(T, N, H_in)``:

1. torch computes every step's input projection, ``W_ih x_t + b_ih + b_hh``,
   or ``W_ih x_t`` alone with layer norm (:func:`_input_side`, the product
   through :func:`rnnkit.kernels.dense.matmul` forward and back), so that
   autograd carries its gradient back to ``x``, ``W_ih`` and the biases (the
   GRU adds ``b_hh`` in the loop instead, where ``r`` scales its ``n``
   block);
2. the kind's forward loop in :mod:`rnnkit.kernels.extension_loops` runs the
   recurrence per direction and batch chunk, on the threads
   :func:`~rnnkit.kernels.fused_common.run_pieces` plans, with layer norm
   normalising both products of each step (``LN_ih`` and ``LN_hh``) and
   adding the input side's biases there, and writing what the backward loop
   needs (activations, ``c_t``, each step's masked ``h_(t-1)`` and, with
   layer norm, the normalised products and their statistics): into tensors
   kept for it where a backward pass may follow, else into scratch memory
   reused from call to call. (Measured on an Intel Xeon against torch's
   layer norm of the input side, a pass of its own over all steps forward
   and back: the layer-normalised LSTM's training step 1.12-1.14x faster at
   ``T=200 N=32 H=64``, level at batch 1, and at batch 4, where the loops
   normalise a piece's inputs apart from the step loop
   (:data:`~rnnkit.kernels.extension_loops.NORM_INSIDE_ROWS`), 1.02-1.08x.)

Backward: the kind's backward loop walks the steps back; the sums over all
steps (``dL/dW_hh``, the gains' and the input bias's gradients) are matrix
products and reductions done here. ``dL/d xp``, which goes on into torch's
graph of the input side, comes from :func:`~rnnkit.kernels.fused_common.pooled_tensor`;
the loop's other gradients are scratch of the call. A backward pass
that must itself be differentiable (``create_graph=True``) is refused by
autograd (the loops are not differentiable twice).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.kernels import fused_common as common
from rnnkit.kernels import dense, parallel
from rnnkit.kernels.blas import StepGemm
from rnnkit.kernels.extension_loops import (
    extended_elman_backward,
    extended_elman_forward,
    extended_gru_backward,
    extended_gru_forward,
    extended_lstm_backward,
    extended_lstm_forward,
)
from rnnkit.kernels.reference import DirectionWeights, State

_FIELDS = 7  # per direction: w_hh, ln_hh_weight, ln_c_weight, ln_c_bias, w_hr, ln_ih_weight, input bias


class _ExtendedLSTM(torch.autograd.Function):
    """``(keep, return_cells, lengths, recurrent_mask, zoneout_mask, xp, h0, c0, *weights)
    -> (output, h_n, c_n)``, and ``cells (T, N, D*H)`` after them with
    ``return_cells``; ``weights`` are :data:`_FIELDS` tensors per direction
    (the gains ``None`` without layer norm, ``w_hr`` without a projection;
    the input bias, ``b_ih + b_hh``, the loops' with layer norm only, else
    ``None`` and part of ``xp``),
    the masks ``(D, N, P)`` and ``(D, T, N, P)`` or ``None``. ``keep``:
    whether a backward pass may follow
    (:func:`~rnnkit.kernels.fused_common.backward_may_follow`), so that the
    loop's activations are kept (else they go to scratch memory)."""

    @staticmethod
    @common.reuses_call_memory
    def forward(ctx, keep, return_cells, lengths, rmask, zmask, xp, h0, c0, *flat):  # type: ignore[override]
        steps, batch, _ = xp.shape
        directions, _, hidden = c0.shape
        width = h0.shape[2]
        weights = _per_direction(flat, _FIELDS)
        norm, project = flat[1] is not None, flat[4] is not None
        per_cell, per_out = (steps, batch, directions * hidden), (steps, batch, directions * width)
        nothing = (0, 0, 0)
        statistics = (steps, batch, directions) if norm else nothing
        kept, a = _loop_buffers(keep, xp.dtype, dict(
            gates=xp.shape, cells=per_cell, mkeep=per_cell if project else nothing, hprev=per_out,
            xhat=xp.shape if norm else nothing, zhat=xp.shape if norm else nothing,
            chat=per_cell if norm else nothing, rstd_x=statistics, rstd_z=statistics, rstd_c=statistics,
        ))
        out = xp.new_empty(per_out)
        h_n = h0.detach().clone(memory_format=torch.contiguous_format)
        c_n = c0.detach().clone(memory_format=torch.contiguous_format)
        w_hh_t = common.step_weights([w[0].t() for w in weights], xp.dtype)
        w_hr_t = common.step_weights([None if w[4] is None else w[4].t() for w in weights], xp.dtype)
        g_hh, g_c, b_c, g_ih = (common.as_arrays([w[j] for w in weights], (0,), xp.dtype) for j in (1, 2, 3, 5))
        b_in = _input_biases(weights, 6, 4 * hidden if norm else 0, xp.dtype)
        rm, zm = _masks(rmask, zmask, directions, xp.dtype)
        xp_a, out_a, h_a, c_a = (common.as_array(t) for t in (xp, out, h_n, c_n))
        lengths_a = lengths.numpy()

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            extended_lstm_forward(
                xp_a, d * 4 * hidden, d * hidden, d * width, d, w_hh_t[d], w_hr_t[d], g_ih[d], b_in[d], g_hh[d],
                g_c[d], b_c[d], rm[d], zm[d], norm, a["gates"], a["cells"], a["mkeep"], out_a, a["hprev"],
                a["xhat"], a["rstd_x"], a["zhat"], a["rstd_z"], a["chat"], a["rstd_c"], h_a[d], c_a[d], lengths_a,
                d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, _sizing(weights, w_hr_field=4), batch, steps)
        if keep:
            common.make_room_for_step(out)
            ctx.save_for_backward(c0, *flat)
            ctx.kept = (lengths, rmask, zmask, kept, norm, width)
        if return_cells:  # a copy: the backward pass reads its own, whatever the caller does with this one
            return out, h_n, c_n, torch.from_numpy(a["cells"]).clone()
        return out, h_n, c_n

    @staticmethod
    @once_differentiable
    @common.reuses_call_memory
    def backward(ctx, grad_out, grad_h_n, grad_c_n, *grad_cells):  # type: ignore[override]
        c0, *flat = ctx.saved_tensors
        lengths, rmask, zmask, kept, norm, width = ctx.kept
        gates, cells, mkeep, hprev, xhat, rstd_x, zhat, rstd_z, chat, rstd_c = (
            kept[name]
            for name in ("gates", "cells", "mkeep", "hprev", "xhat", "rstd_x", "zhat", "rstd_z", "chat", "rstd_c")
        )
        steps, batch, _ = gates.shape
        directions, _, hidden = c0.shape
        weights = _per_direction(flat, _FIELDS)
        project = weights[0][4] is not None
        # dL/d xp goes back into torch's graph of the input side, from memory
        # used before; the rest is scratch of this call
        dxp = common.pooled_tensor(gates.shape, gates.dtype)
        dz = common.scratch_tensor(gates.shape, gates.dtype) if norm else dxp
        dhs = common.scratch_tensor((steps, batch, directions * width) if project else (0, 0, 0), cells.dtype)
        dh = grad_h_n.clone(memory_format=torch.contiguous_format)
        dc = grad_c_n.clone(memory_format=torch.contiguous_format)
        rows = batch if norm else 0  # each batch row's share of the gains', the biases' and the shift's gradients
        dg_ih, db_in, dg_hh, dg_c, db_c = (
            gates.new_zeros(directions, rows, size) for size in (4 * hidden, 4 * hidden, 4 * hidden, hidden, hidden)
        )
        w_hh = common.step_weights([w[0] for w in weights], gates.dtype)
        w_hr = common.step_weights([w[4] for w in weights], gates.dtype)
        g_hh, g_c, b_c, g_ih = (common.as_arrays([w[j] for w in weights], (0,), gates.dtype) for j in (1, 2, 3, 5))
        rm, zm = _masks(rmask, zmask, directions, gates.dtype)
        cells_grad = grad_cells[0] if grad_cells else cells.new_empty(0, batch, directions * hidden)
        arrays = [
            common.as_array(t)
            for t in (gates, cells, mkeep, c0, xhat, rstd_x, zhat, rstd_z, chat, rstd_c, grad_out, cells_grad, dxp,
                      dz, dhs, dh, dc, dg_ih, db_in, dg_hh, dg_c, db_c)
        ]
        (gates_a, cells_a, mkeep_a, c0_a, xhat_a, rstd_x_a, zhat_a, rstd_z_a, chat_a, rstd_c_a, grad_out_a,
         cells_grad_a, dxp_a, dz_a, dhs_a, dh_a, dc_a, dg_ih_a, db_in_a, dg_hh_a, dg_c_a, db_c_a) = arrays
        lengths_a = lengths.numpy()

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            extended_lstm_backward(
                gates_a, d * 4 * hidden, d * hidden, d * width, d, cells_a, mkeep_a, c0_a[d], w_hh[d], w_hr[d],
                g_ih[d], g_hh[d], g_c[d], b_c[d], rm[d], zm[d], norm, xhat_a, rstd_x_a, zhat_a, rstd_z_a, chat_a,
                rstd_c_a, grad_out_a, cells_grad_a, dxp_a, dz_a, dhs_a, dh_a[d], dc_a[d], dg_ih_a[d], db_in_a[d],
                dg_hh_a[d], dg_c_a[d], db_c_a[d], lengths_a, d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, _sizing(weights, w_hr_field=4), batch, steps)
        pairs = steps * batch
        grads: list[Tensor | None] = []
        for d, w in enumerate(weights):
            gates_d, cells_d = slice(d * 4 * hidden, (d + 1) * 4 * hidden), slice(d * hidden, (d + 1) * hidden)
            outs_d = slice(d * width, (d + 1) * width)
            dz_d = dz[:, :, gates_d].reshape(pairs, 4 * hidden)
            grads.append(dense.matmul(dz_d.t(), hprev[:, :, outs_d].reshape(pairs, width)))
            if norm:
                grads += [dg_hh[d].sum(0), dg_c[d].sum(0), db_c[d].sum(0)]
            else:
                grads += [None, None, None]
            grads.append(
                dense.matmul(dhs[:, :, outs_d].reshape(pairs, width).t(), mkeep[:, :, cells_d].reshape(pairs, hidden))
                if project else None
            )
            grads += _input_norm_grads(norm, dg_ih[d], db_in[d], w[6])
        return None, None, None, None, None, dxp, dh, dc, *grads


def _loop_buffers(
    keep: bool, dtype: torch.dtype, shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, Tensor], dict[str, np.ndarray]]:
    """What a forward loop writes for the backward one, by name: tensors to
    keep on ``ctx`` (:func:`~rnnkit.kernels.fused_common.pooled_tensor`) and
    their arrays where a backward pass may follow (``keep``); else no
    tensors, and arrays of this call's scratch memory
    (:func:`~rnnkit.kernels.fused_common.scratch`). Either way memory used
    before, not fresh memory that faults in page by page at every call."""
    if keep:
        tensors = {name: common.pooled_tensor(shape, dtype) for name, shape in shapes.items()}
        return tensors, {name: common.as_array(t) for name, t in tensors.items()}
    return {}, {name: common.scratch(shape, dtype) for name, shape in shapes.items()}


def _per_direction(flat: tuple[Tensor | None, ...], fields: int) -> list[tuple[Tensor | None, ...]]:
    """A Function's flat weights cut into each direction's ``fields`` tensors."""
    return [flat[k : k + fields] for k in range(0, len(flat), fields)]


def _sizing(weights: list[tuple[Tensor | None, ...]], w_hr_field: int | None = None) -> list[DirectionWeights]:
    """What :func:`~rnnkit.kernels.fused_common.run_pieces` plans the threads
    from: each direction's ``W_hh`` (the first of its tensors) and, for the
    LSTM, ``W_hr`` (at ``w_hr_field``; ``None`` without a projection)."""
    return [DirectionWeights(w[0], w[0], w_hr=None if w_hr_field is None else w[w_hr_field]) for w in weights]


def _input_biases(
    weights: list[tuple[Tensor | None, ...]], field: int, size: int, dtype: torch.dtype
) -> list[np.ndarray]:
    """Each direction's input bias for the loops to add (at ``field``): ``(size,)``,
    zeros where there is none (``bias=False``), no elements without layer norm."""
    return common.as_arrays([w[field] if size else None for w in weights], (size,), dtype)


def _input_norm_grads(norm: bool, dg_ih: Tensor, db_in: Tensor, bias: Tensor | None) -> list[Tensor | None]:
    """The gradients of a direction's ``ln_ih_weight`` and input bias from the
    rows' shares ``(N, G*H)`` the backward loop left (``None`` where the layer has none)."""
    if not norm:
        return [None, None]
    return [dg_ih.sum(0), None if bias is None else db_in.sum(0)]


def _masks(rmask: Tensor | None, zmask: Tensor | None, directions: int, dtype: torch.dtype):
    """Each direction's recurrent-dropout and zoneout masks as arrays (empty for none)."""
    return (
        common.as_arrays([None if rmask is None else rmask[d] for d in range(directions)], (0, 0), dtype),
        common.as_arrays([None if zmask is None else zmask[d] for d in range(directions)], (0, 0, 0), dtype),
    )


class _ExtendedGRU(torch.autograd.Function):
    """``(keep, lengths, recurrent_mask, zoneout_mask, xp, h0, *weights) -> (output, h_n)``;
    ``weights`` are ``w_hh``, ``b_hh``, ``ln_hh_weight``, ``ln_ih_weight`` and
    the loops' ``b_ih`` (with layer norm) per direction (``None`` where absent),
    the rest as in :class:`_ExtendedLSTM`."""

    @staticmethod
    @common.reuses_call_memory
    def forward(ctx, keep, lengths, rmask, zmask, xp, h0, *flat):  # type: ignore[override]
        steps, batch, _ = xp.shape
        directions, _, hidden = h0.shape
        norm = flat[2] is not None
        per_unit, nothing = (steps, batch, directions * hidden), (0, 0, 0)
        statistics = (steps, batch, directions) if norm else nothing
        kept, a = _loop_buffers(keep, xp.dtype, dict(
            gates=xp.shape, bn=per_unit, hold=per_unit, hprev=per_unit, xhat=xp.shape if norm else nothing,
            zhat=xp.shape if norm else nothing, rstd_x=statistics, rstd_z=statistics,
        ))
        out = xp.new_empty(per_unit)
        h_n = h0.detach().clone(memory_format=torch.contiguous_format)
        weights = _per_direction(flat, 5)
        w_hh_t = common.step_weights([w[0].t() for w in weights], xp.dtype)
        b_hh, g_hh, g_ih = (common.as_arrays([w[j] for w in weights], (0,), xp.dtype) for j in (1, 2, 3))
        b_in = _input_biases(weights, 4, 3 * hidden if norm else 0, xp.dtype)
        rm, zm = _masks(rmask, zmask, directions, xp.dtype)
        xp_a, out_a, h_a = (common.as_array(t) for t in (xp, out, h_n))
        lengths_a = lengths.numpy()

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            extended_gru_forward(
                xp_a, d * 3 * hidden, d * hidden, d, w_hh_t[d], g_ih[d], b_in[d], b_hh[d], g_hh[d], rm[d], zm[d],
                norm, a["gates"], a["bn"], out_a, a["hold"], a["hprev"], a["xhat"], a["rstd_x"], a["zhat"],
                a["rstd_z"], h_a[d], lengths_a, d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, _sizing(weights), batch, steps)
        if keep:
            common.make_room_for_step(out)
            ctx.save_for_backward(*flat)
            ctx.kept = (lengths, rmask, zmask, kept, norm)
        return out, h_n

    @staticmethod
    @once_differentiable
    @common.reuses_call_memory
    def backward(ctx, grad_out, grad_h_n):  # type: ignore[override]
        flat = ctx.saved_tensors
        lengths, rmask, zmask, kept, norm = ctx.kept
        gates, bn, hold, hprev, xhat, rstd_x, zhat, rstd_z = (
            kept[name] for name in ("gates", "bn", "hold", "hprev", "xhat", "rstd_x", "zhat", "rstd_z")
        )
        steps, batch, _ = gates.shape
        directions, _, hidden = grad_h_n.shape
        weights = _per_direction(flat, 5)
        # dL/d xp goes back into torch's graph of the input side, from memory
        # used before; the rest is scratch of this call
        dxp = common.pooled_tensor(gates.shape, gates.dtype)
        dz = common.scratch_tensor(gates.shape, gates.dtype)
        dh = grad_h_n.clone(memory_format=torch.contiguous_format)
        # each batch row's share of dL/db_hh and, with layer norm, of the gains' and b_ih's gradients
        db_hh = gates.new_zeros(directions, batch, 3 * hidden)
        dg_ih, db_in, dg_hh = (gates.new_zeros(directions, batch if norm else 0, 3 * hidden) for _ in range(3))
        w_hh = common.step_weights([w[0] for w in weights], gates.dtype)
        g_hh, g_ih = (common.as_arrays([w[j] for w in weights], (0,), gates.dtype) for j in (2, 3))
        rm, zm = _masks(rmask, zmask, directions, gates.dtype)
        arrays = [
            common.as_array(t)
            for t in (gates, bn, hold, xhat, rstd_x, zhat, rstd_z, grad_out, dxp, dz, dh, db_hh, dg_ih, db_in, dg_hh)
        ]
        (gates_a, bn_a, hold_a, xhat_a, rstd_x_a, zhat_a, rstd_z_a, grad_out_a, dxp_a, dz_a, dh_a, db_hh_a, dg_ih_a,
         db_in_a, dg_hh_a) = arrays
        lengths_a = lengths.numpy()

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            extended_gru_backward(
                gates_a, d * 3 * hidden, d * hidden, d, bn_a, hold_a, w_hh[d], g_ih[d], g_hh[d], rm[d], zm[d],
                norm, xhat_a, rstd_x_a, zhat_a, rstd_z_a, grad_out_a, dxp_a, dz_a, dh_a[d], db_hh_a[d], dg_ih_a[d],
                db_in_a[d], dg_hh_a[d], lengths_a, d == 1, piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, _sizing(weights), batch, steps)
        pairs = steps * batch
        grads: list[Tensor | None] = []
        for d, w in enumerate(weights):
            gates_d, cols = slice(d * 3 * hidden, (d + 1) * 3 * hidden), slice(d * hidden, (d + 1) * hidden)
            grads.append(dense.matmul(
                dz[:, :, gates_d].reshape(pairs, 3 * hidden).t(), hprev[:, :, cols].reshape(pairs, hidden)
            ))
            grads.append(None if w[1] is None else db_hh[d].sum(0))
            grads.append(dg_hh[d].sum(0) if norm else None)
            grads += _input_norm_grads(norm, dg_ih[d], db_in[d], w[4])
        return None, None, None, None, dxp, dh, *grads


class _ExtendedElman(torch.autograd.Function):
    """``(keep, relu, lengths, recurrent_mask, zoneout_mask, xp, h0, *weights) -> (output, h_n)``;
    ``weights`` are ``w_hh``, ``ln_hh_weight``, ``ln_ih_weight`` and the loops'
    input bias per direction (the last three ``None`` without layer norm),
    the rest as in :class:`_ExtendedLSTM`."""

    @staticmethod
    @common.reuses_call_memory
    def forward(ctx, keep, relu, lengths, rmask, zmask, xp, h0, *flat):  # type: ignore[override]
        steps, batch, _ = xp.shape
        directions, _, hidden = h0.shape
        norm = flat[1] is not None
        nothing = (0, 0, 0)
        statistics = (steps, batch, directions) if norm else nothing
        kept, a = _loop_buffers(keep, xp.dtype, dict(
            act=xp.shape, hprev=xp.shape, xhat=xp.shape if norm else nothing, zhat=xp.shape if norm else nothing,
            rstd_x=statistics, rstd_z=statistics,
        ))
        out = xp.new_empty(xp.shape)
        h_n = h0.detach().clone(memory_format=torch.contiguous_format)
        weights = _per_direction(flat, 4)
        w_hh_t = common.step_weights([w[0].t() for w in weights], xp.dtype)
        g_hh, g_ih = (common.as_arrays([w[j] for w in weights], (0,), xp.dtype) for j in (1, 2))
        b_in = _input_biases(weights, 3, hidden if norm else 0, xp.dtype)
        rm, zm = _masks(rmask, zmask, directions, xp.dtype)
        xp_a, out_a, h_a = (common.as_array(t) for t in (xp, out, h_n))
        lengths_a = lengths.numpy()

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            extended_elman_forward(
                xp_a, d * hidden, d, w_hh_t[d], g_ih[d], b_in[d], g_hh[d], rm[d], zm[d], norm, relu, a["act"], out_a,
                a["hprev"], a["xhat"], a["rstd_x"], a["zhat"], a["rstd_z"], h_a[d], lengths_a, d == 1, piece.n0,
                piece.n1, gemm,
            )

        common.run_pieces(work, _sizing(weights), batch, steps)
        if keep:
            common.make_room_for_step(out)
            ctx.save_for_backward(*flat)
            ctx.kept = (relu, lengths, rmask, zmask, kept, norm)
        return out, h_n

    @staticmethod
    @once_differentiable
    @common.reuses_call_memory
    def backward(ctx, grad_out, grad_h_n):  # type: ignore[override]
        flat = ctx.saved_tensors
        relu, lengths, rmask, zmask, kept, norm = ctx.kept
        act, hprev, xhat, rstd_x, zhat, rstd_z = (
            kept[name] for name in ("act", "hprev", "xhat", "rstd_x", "zhat", "rstd_z")
        )
        steps, batch, _ = act.shape
        directions, _, hidden = grad_h_n.shape
        weights = _per_direction(flat, 4)
        dxp = common.pooled_tensor(act.shape, act.dtype)  # as in _ExtendedLSTM.backward
        dz = common.scratch_tensor(act.shape, act.dtype) if norm else dxp
        dh = grad_h_n.clone(memory_format=torch.contiguous_format)
        # each batch row's share of the gains' and the input bias's gradients
        dg_ih, db_in, dg_hh = (act.new_zeros(directions, batch if norm else 0, hidden) for _ in range(3))
        w_hh = common.step_weights([w[0] for w in weights], act.dtype)
        g_hh, g_ih = (common.as_arrays([w[j] for w in weights], (0,), act.dtype) for j in (1, 2))
        rm, zm = _masks(rmask, zmask, directions, act.dtype)
        act_a, xhat_a, rstd_x_a, zhat_a, rstd_z_a, grad_out_a, dxp_a, dz_a, dh_a, dg_ih_a, db_in_a, dg_hh_a = (
            common.as_array(t) for t in (act, xhat, rstd_x, zhat, rstd_z, grad_out, dxp, dz, dh, dg_ih, db_in, dg_hh)
        )
        lengths_a = lengths.numpy()

        def work(piece: parallel.Piece, gemm: StepGemm) -> None:
            d = piece.d
            extended_elman_backward(
                act_a, d * hidden, d, w_hh[d], g_ih[d], g_hh[d], rm[d], zm[d], norm, relu, xhat_a, rstd_x_a, zhat_a,
                rstd_z_a, grad_out_a, dxp_a, dz_a, dh_a[d], dg_ih_a[d], db_in_a[d], dg_hh_a[d], lengths_a, d == 1,
                piece.n0, piece.n1, gemm,
            )

        common.run_pieces(work, _sizing(weights), batch, steps)
        pairs = steps * batch
        grads: list[Tensor | None] = []
        for d, w in enumerate(weights):
            cols = slice(d * hidden, (d + 1) * hidden)
            grads.append(dense.matmul(dz[:, :, cols].reshape(pairs, hidden).t(), hprev[:, :, cols].reshape(pairs, hidden)))
            grads.append(dg_hh[d].sum(0) if norm else None)
            grads += _input_norm_grads(norm, dg_ih[d], db_in[d], w[3])
        return None, None, None, None, None, dxp, dh, *grads


class _Linear(torch.autograd.Function):
    """``x W^T + b`` over all steps, ``(M, F) -> (M, G*H)`` (``b`` may be
    ``None``), and its backward, by
    :func:`~rnnkit.kernels.dense.matmul` (oneDNN where it runs faster than
    torch's matmul: measured, 2 threads, ``(4000, 64) @ (64, 256)`` 0.29 ms
    against ``F.linear``'s 0.63, the weight's gradient 0.48 against 0.76)."""

    @staticmethod
    def forward(ctx, x, w, b):  # type: ignore[override]
        ctx.save_for_backward(x, w)
        return dense.matmul(x, w.t(), b)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x, w = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = dense.matmul(grad, w) if ctx.needs_input_grad[0] else None
        grad_w = dense.matmul(grad.t(), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``F.linear(x, w, b)`` for ``x (T, N, F)``, by :class:`_Linear`."""
    steps, batch, features = x.shape
    return _Linear.apply(x.reshape(steps * batch, features), w, b).view(steps, batch, w.shape[0])


def _input_bias(w: DirectionWeights, fold_b_hh: bool) -> Tensor | None:
    """``b_ih`` (``+ b_hh`` with ``fold_b_hh``), or ``None`` without biases."""
    if w.b_ih is None or not fold_b_hh or w.b_hh is None:
        return w.b_ih
    return w.b_ih + w.b_hh


def _input_side(x: Tensor, weights: list[DirectionWeights], fold_b_hh: bool) -> tuple[Tensor, list[Tensor | None]]:
    """Every direction's input projection side by side, ``(T, N, D*G*H)``, and
    the biases the loops add: ``W_ih x_t`` plus :func:`_input_bias`, and no
    biases for the loops; with layer norm, which the loops apply, ``W_ih x_t``
    alone and each direction's bias."""
    norm = weights[0].ln_ih_weight is not None
    biases = [_input_bias(w, fold_b_hh) for w in weights]
    parts = [_linear(x, w.w_ih, None if norm else b) for w, b in zip(weights, biases)]
    xp = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)).contiguous()
    return xp, biases if norm else [None] * len(weights)


def run_layer(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
    return_cells: bool = False,
) -> tuple[Tensor, State] | tuple[Tensor, State, Tensor]:
    """One Elman, LSTM or GRU layer with layer norm, recurrent
    dropout or zoneout; the interface of :func:`rnnkit.kernels.reference.run_layer`."""
    steps, batch = x.shape[0], x.shape[1]
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.int64)
    if zoneout_mask is not None:
        zoneout_mask = zoneout_mask.contiguous()  # in eval mode an expanded constant
    if kind in ("rnn_tanh", "rnn_relu"):
        xp, biases = _input_side(x, weights, fold_b_hh=True)
        flat = [t for w, b in zip(weights, biases) for t in (w.w_hh, w.ln_hh_weight, w.ln_ih_weight, b)]
        keep = common.backward_may_follow(xp, *state, *flat)
        output, h_n = _ExtendedElman.apply(
            keep, kind == "rnn_relu", lengths, recurrent_mask, zoneout_mask, xp, state[0], *flat
        )
        return output, (h_n,)
    if kind == "gru":
        xp, biases = _input_side(x, weights, fold_b_hh=False)
        flat = [t for w, b in zip(weights, biases) for t in (w.w_hh, w.b_hh, w.ln_hh_weight, w.ln_ih_weight, b)]
        keep = common.backward_may_follow(xp, *state, *flat)
        output, h_n = _ExtendedGRU.apply(keep, lengths, recurrent_mask, zoneout_mask, xp, state[0], *flat)
        return output, (h_n,)
    h0, c0 = state
    xp, biases = _input_side(x, weights, fold_b_hh=True)
    flat = [
        t for w, b in zip(weights, biases)
        for t in (w.w_hh, w.ln_hh_weight, w.ln_c_weight, w.ln_c_bias, w.w_hr, w.ln_ih_weight, b)
    ]
    keep = common.backward_may_follow(xp, h0, c0, *flat)
    output, h_n, c_n, *cells = _ExtendedLSTM.apply(
        keep, return_cells, lengths, recurrent_mask, zoneout_mask, xp, h0, c0, *flat
    )
    return (output, (h_n, c_n), *cells)
