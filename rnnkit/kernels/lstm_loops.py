"""The sequential part of the LSTM, forward and back-propagation through time, in numba.

Both loops work on one direction of one layer, for the batch rows
``n0 <= n < n1``, inside arrays shared by all directions (``D`` of them),
with hidden size ``H`` and output size ``P`` (``P = H`` without a projection):

* ``gates (T, N, D*4H)``, C-contiguous; this direction owns columns
  ``gcol:gcol + 4H``, the gates ``i, f, g, o`` in that order. It holds the
  input projection ``W_ih x_t + b_ih + b_hh`` of every step (both biases), computed before the
  loop; the forward loop overwrites it in place with
  the gates' activations, which is what the backward loop needs.
* ``out (T, N, D*P)``: columns ``ocol:ocol + P`` receive ``h_t``.
* ``cells (T, N, D*H)``: columns ``ccol:ccol + H`` receive ``c_t`` (zeros past
  each length), which the backward pass needs (and the caller may ask for);
  when neither will, an array of one step serves as scratch.
* ``lengths (N,)`` int64, ``<= T``: steps ``t >= lengths[n]`` output zeros and
  leave row ``n``'s state (``h`` and ``c``) as it is; a ``reverse`` pass runs
  from ``T - 1`` down, so its first real step is ``lengths[n] - 1``.
* ``W_hr (P, H)``: the projection ``h_t = W_hr (o * tanh(c_t))``, given as
  the per-step product takes it (``W_hr^T`` forward, ``W_hr`` back); an
  empty array means none.

The backward loop overwrites ``gates`` (and, with a projection, ``cells``)
with gradients as it goes: what it reads of a step is dead once the step is
done, and the gradients need that much room. A second backward pass through
the same forward pass must therefore run the forward loop again first.

Each direction of a step is a step function (:func:`lstm_forward_step`,
:func:`lstm_backward_step`: everything but the product with ``W_hh``); the
sequence loops (:func:`lstm_forward`, :func:`lstm_backward`) alternate it with
that product, done by :func:`~rnnkit.kernels.numba_ops.product` (numba's own
register tiles or a BLAS GEMM called from the compiled loop; a Python loop
over the steps calling BLAS measured no faster: the loops' threads share the
batch for the whole sequence, without meeting at every step). The products over all
steps (the weight gradients, the input's gradient) are left to the caller, who
does them with BLAS after the loop.
"""

from __future__ import annotations

import numpy as np

from rnnkit.kernels.numba_ops import copy, jit, product, sigmoid, tanh


@jit
def lstm_forward(
    gates, gcol, w_hh_t, w_hr_t, out, ocol, cells, ccol, h, c, lengths, reverse, n0, n1, gemm
):
    """Run the recurrence in place (see the module docstring for the arrays).

    Args:
        w_hh_t: ``W_hh^T``, ``w_hr_t``: ``W_hr^T`` (empty without a projection),
            as :func:`~rnnkit.kernels.numba_ops.product` takes them.
        h: ``(N, P)`` C-contiguous: ``h_0`` on entry, ``h_n`` on return.
        c: ``(N, H)`` C-contiguous: ``c_0`` on entry, ``c_n`` on return.
        gemm: how the per-step products run (see :func:`~rnnkit.kernels.numba_ops.product`).
    """
    steps = gates.shape[0]
    z = np.empty((n1 - n0, w_hh_t.shape[1]), dtype=c.dtype)  # W_hh h_{t-1}
    m, projected = forward_scratch(n1 - n0, c.shape[1], w_hr_t.shape[1], c.dtype)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        product(h, 0, w_hh_t, z, n0, n1, gemm)
        lstm_forward_step(
            gates, gcol, z, w_hr_t, out, ocol, cells, ccol, h, c, m, projected, lengths, t, n0, n1, gemm
        )


@jit
def forward_scratch(rows, hidden, width, dtype):
    """The working rows :func:`lstm_forward_step` needs: ``o * tanh(c_t)``
    ``(rows, H)`` and its projection ``(rows, width)``, ``P`` padded as
    ``W_hr^T``'s columns are."""
    return np.zeros((rows, hidden), dtype=dtype), np.zeros((rows, width), dtype=dtype)


@jit(inline="always")
def lstm_forward_step(
    gates, gcol, z, w_hr_t, out, ocol, cells, ccol, h, c, m, projected, lengths, t, n0, n1, gemm
):
    """Step ``t`` of the recurrence for rows ``n0 <= n < n1``, given
    ``z (n1 - n0, 4H) = W_hh h_{t-1}`` of those rows; ``m`` and ``projected``
    are :func:`forward_scratch`'s."""
    steps = gates.shape[0]
    hidden, width = c.shape[1], h.shape[1]
    zero = c.dtype.type(0)
    keep, project = cells.shape[0] == steps, w_hr_t.size > 0
    for n in range(n0, n1):
        if t >= lengths[n]:
            if keep:
                cells[t, n, ccol : ccol + hidden] = zero
            continue
        # Views indexed from 0, so that the loop vectorises (see elman_loops).
        a = gates[t, n, gcol : gcol + 4 * hidden]
        ai, af, ag, ao = a[:hidden], a[hidden : 2 * hidden], a[2 * hidden : 3 * hidden], a[3 * hidden :]
        zn = z[n - n0]
        zi, zf, zg, zo = zn[:hidden], zn[hidden : 2 * hidden], zn[2 * hidden : 3 * hidden], zn[3 * hidden :]
        cn, mn, kept = c[n], m[n - n0], cells[t if keep else 0, n, ccol : ccol + hidden]
        for k in range(hidden):
            i = sigmoid(ai[k] + zi[k])
            f = sigmoid(af[k] + zf[k])
            g = tanh(ag[k] + zg[k])
            o = sigmoid(ao[k] + zo[k])
            ai[k], af[k], ag[k], ao[k] = i, f, g, o
            cn[k] = kept[k] = f * cn[k] + i * g
            mn[k] = o * tanh(cn[k])
    if project:
        product(m, 0, w_hr_t, projected, 0, n1 - n0, gemm)
    result = projected if project else m
    for n in range(n0, n1):
        o_row = out[t, n, ocol : ocol + width]
        if t >= lengths[n]:
            o_row[:] = zero
        else:
            hn, new = h[n], result[n - n0]
            for k in range(width):
                o_row[k] = hn[k] = new[k]


@jit
def lstm_backward(
    gates, gcol, cells, ccol, c0, w_hh, w_hr, grad_out, grad_cells, ocol, dh, dc, dhs, lengths, reverse,
    n0, n1, gemm,
):
    """Back-propagate through the steps of :func:`lstm_forward`, last step first,
    turning the saved activations into gradients in place.

    Args:
        gates: ``(T, N, D*4H)``: the activations the forward loop left on
            entry; on return, the gradient of each step's gate pre-activations
            (zero past each length).
        cells: ``(T, N, D*H)``, ``c_t``; ``c0``: ``(N, H)``, this direction's
            ``c_0``. With a projection, each step's ``o * tanh(c_t)`` replaces
            its ``c_t`` once no later step needs it (zeros past each length).
        w_hh: ``W_hh``, ``w_hr``: ``W_hr`` (empty without a projection), as
            :func:`~rnnkit.kernels.numba_ops.product` takes them.
        grad_out: ``(T, N, D*P)``, the loss's gradient with respect to the output.
        grad_cells: ``(T, N, D*H)``, the loss's gradient with respect to every
            ``c_t``, where the caller took them as an output; no steps if not.
        dh: ``(N, P)``: ``dL/dh_n`` on entry, ``dL/dh_0`` on return.
        dc: ``(N, H)``: ``dL/dc_n`` on entry, ``dL/dc_0`` on return.
        dhs: ``(T, N, D*P)``; with a projection it receives ``dL/dh_t`` (zeros
            past each length), whose product with ``o * tanh(c_t)`` over all
            steps is ``dL/dW_hr``; unused without one.
        gemm: as in :func:`lstm_forward`.
    """
    steps = gates.shape[0]
    rows, width = n1 - n0, dh.shape[1]
    gh, dm, m = backward_scratch(rows, dc.shape[1], max(w_hr.shape[1], dc.shape[1]), width, dc.dtype)
    back = np.empty((rows, w_hh.shape[1]), dtype=dc.dtype)  # (dL/d gates_t) W_hh
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        lstm_backward_step(
            gates, gcol, cells, ccol, c0, w_hr, grad_out, grad_cells, ocol, dh, dc, dhs, gh, dm, m,
            lengths, t, reverse, n0, n1, gemm,
        )
        product(gates[t], gcol, w_hh, back, n0, n1, gemm)
        for n in range(n0, n1):  # rows past their length have zero gradients: add nothing
            d, b = dh[n], back[n - n0]
            for k in range(width):
                d[k] += b[k]


@jit
def backward_scratch(rows, hidden, padded, width, dtype):
    """The working rows :func:`lstm_backward_step` needs: ``dL/dh_t``
    ``(rows, P)``, ``dL/d(o * tanh(c_t))`` ``(rows, >= H)`` (``padded``, as
    ``W_hr``'s columns are) and one ``(H,)``."""
    return (
        np.zeros((rows, width), dtype=dtype),
        np.zeros((rows, padded), dtype=dtype),
        np.zeros(hidden, dtype=dtype),
    )


@jit(inline="always")
def lstm_backward_step(
    gates, gcol, cells, ccol, c0, w_hr, grad_out, grad_cells, ocol, dh, dc, dhs, gh, dm, m,
    lengths, t, reverse, n0, n1, gemm,
):
    """Step ``t`` of :func:`lstm_backward` for rows ``n0 <= n < n1``, all but
    the product with ``W_hh``: it consumes ``dh`` (rows still running are set
    to zero) and leaves the gate gradients in ``gates[t]``, so that adding
    ``W_hh^T gates[t]`` of the rows to ``dh`` completes the step. ``gh``,
    ``dm`` and ``m`` are :func:`backward_scratch`'s."""
    hidden, width = dc.shape[1], dh.shape[1]
    zero, one = dc.dtype.type(0), dc.dtype.type(1)
    project, cells_wanted = w_hr.size > 0, grad_cells.shape[0] > 0
    for n in range(n0, n1):
        g = gh[n - n0]
        if t < lengths[n]:
            d, gy = dh[n], grad_out[t, n, ocol : ocol + width]
            for k in range(width):
                g[k] = d[k] + gy[k]
                d[k] = zero
        else:
            g[:] = zero
        if project:
            copy(dhs[t, n, ocol : ocol + width], g)
    if project:
        product(gh, 0, w_hr, dm, 0, n1 - n0, gemm)
    dm_all = dm if project else gh
    for n in range(n0, n1):
        a, c_t = gates[t, n, gcol : gcol + 4 * hidden], cells[t, n, ccol : ccol + hidden]
        if t >= lengths[n]:
            a[:] = zero
            if project:
                c_t[:] = zero
            continue
        first = t == lengths[n] - 1 if reverse else t == 0
        c_prev = c0[n] if first else cells[t + 1 if reverse else t - 1, n, ccol : ccol + hidden]
        ai, af, ag, ao = a[:hidden], a[hidden : 2 * hidden], a[2 * hidden : 3 * hidden], a[3 * hidden :]
        dmn, dcn = dm_all[n - n0], dc[n]
        if cells_wanted:  # c_t as an output of its own: its gradient joins dL/dc_t
            gc = grad_cells[t, n, ccol : ccol + hidden]
            for k in range(hidden):
                dcn[k] += gc[k]
        for k in range(hidden):
            i, f, g, o = ai[k], af[k], ag[k], ao[k]
            tc = tanh(c_t[k])
            dct = dcn[k] + dmn[k] * o * (one - tc * tc)  # dL/dc_t, all paths
            ai[k] = dct * g * (i * (one - i))
            af[k] = dct * c_prev[k] * (f * (one - f))
            ag[k] = dct * i * (one - g * g)
            ao[k] = dmn[k] * tc * (o * (one - o))
            dcn[k] = dct * f
            m[k] = o * tc
        if project:
            copy(c_t, m)  # no step still to come reads this c_t
