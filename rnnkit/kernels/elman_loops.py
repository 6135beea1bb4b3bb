"""The sequential part of the Elman RNN, forward and back-propagation through time, in numba.

Both loops work on one direction of one layer, for the batch rows
``n0 <= n < n1`` (so that directions and chunks of the batch can run on
different threads), inside arrays shared by all directions:

* ``out (T, N, D*H)``, C-contiguous; this direction owns columns
  ``col:col + H``. The input projection ``W_ih x_t + b_ih + b_hh`` of every
  step (both biases folded in) is computed before the loop; the forward loop
  adds ``W_hh h_{t-1}`` to it and overwrites the sum with ``h_t``, in place,
  so the loop needs no buffer of its own.
* ``lengths (N,)`` int64, ``<= T``: steps ``t >= lengths[n]`` output zeros and
  leave row ``n``'s state as it is; a ``reverse`` pass runs from ``T - 1``
  down, so its first real step is ``lengths[n] - 1``.
* ``relu`` picks ``h' = relu(z)`` over ``h' = tanh(z)``, ``z`` being the
  pre-activation ``W_ih x + b_ih + b_hh + W_hh h``.

The products with all steps at once (the weight gradients, the input's
gradient) are left to the caller, who does them with BLAS after the loop.

:func:`elman_step` is one step on its own, without autograd, for a call too
small to pay for the layer's set-up (streaming, decoding).
"""

from __future__ import annotations

import numpy as np

from rnnkit.kernels.numba_ops import copy, dot, jit, keep_alive, product, product_add, rows_at, tanh, unowned


@jit
def elman_forward(out, col, w_hh_t, h, lengths, reverse, relu, n0, n1, gemm):
    """Run the recurrence ``h_t = act(xp_t + W_hh h_{t-1})`` in place.

    Args:
        out: ``(T, N, D*H)``; columns ``col:col+H`` hold ``xp_t`` on entry and
            ``h_t`` (zeros past each row's length) on return.
        w_hh_t: ``W_hh^T``, as :func:`~rnnkit.kernels.numba_ops.product` takes it.
        h: ``(N, H)`` C-contiguous: ``h_0`` on entry, ``h_n`` on return.
        gemm: how the per-step product runs (see :func:`~rnnkit.kernels.numba_ops.product`).
    """
    steps = out.shape[0]
    out, h, lengths = unowned(out), unowned(h), unowned(lengths)
    w_hh_t = unowned(w_hh_t)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        # z_t = xp_t + W_hh h_{t-1}, in place, before h is overwritten
        product_add(h, 0, w_hh_t, out[t, n0:n1, col:], n0, n1, h.shape[1], gemm)
        # the rows in a loop nest for each activation, a constant in it:
        # LLVM merges the two loops of a branch read at run time into one
        # slower loop (see lstm_loops.lstm_forward_step)
        if relu:
            _activate_rows(out, col, h, lengths, t, n0, n1, True)
        else:
            _activate_rows(out, col, h, lengths, t, n0, n1, False)


@jit(inline="always")
def _activate_rows(out, col, h, lengths, t, n0, n1, relu):
    """``h_t = act(z_t)`` of step ``t`` for rows ``n0 <= n < n1``, ``z_t`` in ``out``."""
    hidden = h.shape[1]
    zero = h.dtype.type(0)  # typed constants keep float32 arithmetic in float32
    for n in range(n0, n1):
        # Views indexed from 0: with ``col + i`` numba would check for a
        # negative index on every element, and the loop would not vectorise.
        o, hn = out[t, n, col : col + hidden], h[n]
        if t >= lengths[n]:
            o[:] = zero
        elif relu:
            for i in range(hidden):
                hn[i] = o[i] = max(o[i], zero)
        else:
            for i in range(hidden):
                hn[i] = o[i] = tanh(o[i])


@jit
def elman_backward(out, grad_out, dz, col, w_hh, dh, lengths, reverse, relu, n0, n1, gemm):
    """Back-propagate through the steps of :func:`elman_forward`, last step first.

    Args:
        out: ``(T, N, D*H)``, the forward output ``h_t``.
        grad_out: ``(T, N, D*H)``, the loss's gradient with respect to ``out``.
        dz: ``(T, N, D*H)``; columns ``col:col+H`` receive ``dL/dz_t``, the
            gradient of each step's pre-activation (zero past each length).
        w_hh: ``W_hh``, as :func:`~rnnkit.kernels.numba_ops.product` takes it.
        dh: ``(N, H)``: ``dL/dh_n`` on entry, ``dL/dh_0`` on return.
        gemm: as in :func:`elman_forward`.
    """
    steps = out.shape[0]
    hidden = dh.shape[1]
    zero, one = dh.dtype.type(0), dh.dtype.type(1)
    scratch = np.empty((n1 - n0, w_hh.shape[1]), dtype=dh.dtype)
    g = unowned(scratch)
    out, grad_out, dz, dh = unowned(out), unowned(grad_out), unowned(dz), unowned(dh)
    lengths = unowned(lengths)
    w_hh = unowned(w_hh)
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        for n in range(n0, n1):
            y, gy = out[t, n, col : col + hidden], grad_out[t, n, col : col + hidden]
            d, dhn = dz[t, n, col : col + hidden], dh[n]
            if t >= lengths[n]:
                d[:] = zero
            elif relu:
                for i in range(hidden):
                    d[i] = dhn[i] + gy[i] if y[i] > zero else zero
            else:
                for i in range(hidden):
                    d[i] = (dhn[i] + gy[i]) * (one - y[i] * y[i])
        product(dz[t], col, w_hh, g, n0, n1, gemm)  # dL/dh_{t-1} = dz_t W_hh
        for n in range(n0, n1):
            if t < lengths[n]:
                copy(dh[n], g[n - n0])
    keep_alive(scratch)


@jit
def elman_step(at, rows, inputs, hidden, width, col, relu, zero):
    """One step, ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, over tensors by
    address (:func:`~rnnkit.kernels.numba_ops.rows_at`), the weights as torch
    holds them: a row per unit, each product a dot of rows.

    Args:
        at: the addresses of ``x (N, H_in)``, ``h (N, H)``, ``w_ih (H, H_in)``,
            ``w_hh (H, H)``, ``b_ih (H,)``, ``b_hh (H,)`` (0 for ``bias=False``),
            ``out (N, width)`` (``h'`` in columns ``col:col+H``) and ``h_n (N,
            H)`` (``h'`` again; the address of ``out`` is allowed), each
            C-contiguous and of ``zero``'s dtype.
        rows, inputs, hidden: ``N``, ``H_in``, ``H``.
    """
    x, h = rows_at(at[0], rows, inputs, zero), rows_at(at[1], rows, hidden, zero)
    w_ih, w_hh = rows_at(at[2], hidden, inputs, zero), rows_at(at[3], hidden, hidden, zero)
    b_ih, b_hh = rows_at(at[4], 1, hidden, zero)[0], rows_at(at[5], 1, hidden, zero)[0]
    out, h_n = rows_at(at[6], rows, width, zero), rows_at(at[7], rows, hidden, zero)
    for n in range(rows):
        for j in range(hidden):
            z = dot(w_ih[j], x[n]) + b_ih[j] + dot(w_hh[j], h[n]) + b_hh[j]
            value = max(z, zero) if relu else tanh(z)
            out[n, col + j] = value
            h_n[n, j] = value
