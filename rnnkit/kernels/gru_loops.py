"""The sequential part of the GRU, forward and back-propagation through time, in numba.

Both loops work on one direction of one layer, for the batch rows
``n0 <= n < n1``, inside arrays shared by all directions (``D`` of them),
with hidden size ``H``:

* ``gates (T, N, D*3H)``, C-contiguous; this direction owns columns
  ``gcol:gcol + 3H``, the gates ``r, z, n`` in that order. It holds the input
  projection ``W_ih x_t + b_ih`` of every step, with ``b_hr`` and ``b_hz``
  folded in (``b_hn`` cannot be: the reset gate scales it), computed before the loop;
  the forward loop overwrites it in place with the gates'
  activations, which is what the backward loop needs.
* ``out (T, N, D*H)``: columns ``ocol:ocol + H`` receive ``h_t``.
* ``hns (T, N, D*H)``: columns ``ocol:ocol + H`` receive ``W_hn h_{t-1} + b_hn``,
  the part of the new gate that the reset gate scales, which the backward
  pass needs; when none will follow, an array of one step serves as scratch.
* ``lengths (N,)`` int64, ``<= T``: steps ``t >= lengths[n]`` output zeros and
  leave row ``n``'s state as it is; a ``reverse`` pass runs from ``T - 1``
  down, so its first real step is ``lengths[n] - 1``.

Unlike the Elman and LSTM cells, the GRU's hidden-side and input-side
pre-activations get different gradients: ``b_hn`` sits inside the reset
product, so ``dL/d(W_hn h + b_hn) = r * dL/d(W_in x + b_in)``. The backward loop
leaves both (see :func:`gru_backward`), in place of the activations it reads:
what it reads of a step is dead once the step is done, and the gradients need
that much room. A second backward pass through the same forward pass must
therefore run the forward loop again first.

Each direction of a step is a step function (:func:`gru_forward_step`,
:func:`gru_backward_step`: everything but the product with ``W_hh``); the
sequence loops (:func:`gru_forward`, :func:`gru_backward`) alternate it with
that product, done by :func:`~rnnkit.kernels.numba_ops.product` (numba's own
register tiles or a BLAS GEMM called from the compiled loop; a Python loop
over the steps calling BLAS measured no faster: the loops' threads share the
batch for the whole sequence, without meeting at every step). The products over all
steps (the weight gradients, the input's gradient) are left to the caller, who
does them with BLAS after the loop.
"""

from __future__ import annotations

import numpy as np

from rnnkit.kernels.numba_ops import (
    add_column_products, add_row_products, dot, jit, keep_alive, product, product_add, rows_at, sigmoid, tanh,
    unowned,
)


@jit
def gru_forward(gates, gcol, w_hh_t, b_hn, out, ocol, hns, h, lengths, reverse, n0, n1, gemm):
    """Run the recurrence in place (see the module docstring for the arrays)::

        r = σ((x_r + b_hr) + W_hr h),  z = σ((x_z + b_hz) + W_hz h)
        n = tanh(x_n + r * (W_hn h + b_hn)),  h' = n + z * (h - n)

    Args:
        w_hh_t: ``W_hh^T``, as :func:`~rnnkit.kernels.numba_ops.product` takes it;
            ``b_hn`` ``(H,)`` (zeros without bias).
        h: ``(N, H)`` C-contiguous: ``h_0`` on entry, ``h_n`` on return.
        gemm: how the per-step product runs (see :func:`~rnnkit.kernels.numba_ops.product`).
    """
    steps = gates.shape[0]
    scratch = np.empty((n1 - n0, w_hh_t.shape[1]), dtype=h.dtype)  # W_hh h_{t-1}
    z = unowned(scratch)
    gates, b_hn, out, hns, h = unowned(gates), unowned(b_hn), unowned(out), unowned(hns), unowned(h)
    lengths = unowned(lengths)
    w_hh_t = unowned(w_hh_t)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        product(h, 0, w_hh_t, z, n0, n1, gemm)
        gru_forward_step(gates, gcol, z, b_hn, out, ocol, hns, h, lengths, t, n0, n1)
    keep_alive(scratch)


@jit(inline="always")
def gru_forward_step(gates, gcol, z, b_hn, out, ocol, hns, h, lengths, t, n0, n1):
    """Step ``t`` of the recurrence for rows ``n0 <= n < n1``, given
    ``z (n1 - n0, 3H) = W_hh h_{t-1}`` of those rows."""
    steps = gates.shape[0]
    hidden = h.shape[1]
    zero = h.dtype.type(0)
    keep = hns.shape[0] == steps
    for n in range(n0, n1):
        o = out[t, n, ocol : ocol + hidden]
        if t >= lengths[n]:
            o[:] = zero
            continue
        # Views indexed from 0, so that the loop vectorises (see elman_loops).
        a = gates[t, n, gcol : gcol + 3 * hidden]
        ar, az, an = a[:hidden], a[hidden : 2 * hidden], a[2 * hidden :]
        zn = z[n - n0]
        zr, zz, zh = zn[:hidden], zn[hidden : 2 * hidden], zn[2 * hidden :]
        # (writing W_hn h + b_hn back into z instead would stop the loop from
        # vectorising: measured three times slower)
        hn, kept = h[n], hns[t if keep else 0, n, ocol : ocol + hidden]
        for k in range(hidden):
            r = sigmoid(ar[k] + zr[k])
            u = sigmoid(az[k] + zz[k])
            kept[k] = zh[k] + b_hn[k]
            new = tanh(an[k] + r * kept[k])
            ar[k], az[k], an[k] = r, u, new
            hn[k] = o[k] = new + u * (hn[k] - new)


@jit
def gru_backward(gates, gcol, hns, out, ocol, h0, w_hh, grad_out, dh, lengths, reverse, n0, n1, gemm):
    """Back-propagate through the steps of :func:`gru_forward`, last step first,
    turning the saved activations into gradients in place.

    Args:
        gates: ``(T, N, D*3H)``: the activations ``r, z, n`` the forward loop
            left on entry; on return, the gradients of the input-side
            pre-activations ``W_ih x_t + b_ih`` (zero past each length).
        hns: ``(T, N, D*H)``: ``W_hn h_{t-1} + b_hn`` of every step on entry;
            on return, its gradient. The hidden side's ``r`` and ``z`` parts
            have the input side's gradients.
        out: ``(T, N, D*H)``, the forward output ``h_t``; ``h0``: ``(N, H)``,
            this direction's ``h_0`` (the ``h_{t-1}`` of each row's first step).
        w_hh: ``W_hh``, as :func:`~rnnkit.kernels.numba_ops.product` takes it.
        grad_out: ``(T, N, D*H)``, the loss's gradient with respect to the output.
        dh: ``(N, H)``: ``dL/dh_n`` on entry, ``dL/dh_0`` on return.
        gemm: as in :func:`gru_forward`.
    """
    steps = gates.shape[0]
    rows, hidden = n1 - n0, dh.shape[1]
    scratch = np.zeros((rows, w_hh.shape[0]), dtype=dh.dtype)  # dL/d(W_hh h_{t-1} + b_hh)
    hid = unowned(scratch)
    gates, hns, out, h0, grad_out = unowned(gates), unowned(hns), unowned(out), unowned(h0), unowned(grad_out)
    dh, lengths = unowned(dh), unowned(lengths)
    w_hh = unowned(w_hh)
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        gru_backward_step(gates, gcol, hns, out, ocol, h0, grad_out, dh, hid, lengths, t, reverse, n0, n1)
        # rows past their length have zero gradients: their dh stays as it is
        product_add(hid, 0, w_hh, dh[n0:n1], 0, rows, hidden, gemm)
    keep_alive(scratch)


@jit(inline="always")
def gru_backward_step(gates, gcol, hns, out, ocol, h0, grad_out, dh, hid, lengths, t, reverse, n0, n1):
    """Step ``t`` of :func:`gru_backward` for rows ``n0 <= n < n1``, all but
    the product with ``W_hh``: it leaves the direct path's share of
    ``dL/dh_{t-1}`` in ``dh`` and the hidden side's gradient in ``hid``
    ``(n1 - n0, 3H)`` (zero for rows past their length), so that adding
    ``W_hh^T hid`` to ``dh`` completes the step."""
    hidden = dh.shape[1]
    zero, one = dh.dtype.type(0), dh.dtype.type(1)
    for n in range(n0, n1):
        a, hn, hd = gates[t, n, gcol : gcol + 3 * hidden], hns[t, n, ocol : ocol + hidden], hid[n - n0]
        if t >= lengths[n]:
            a[:] = zero
            hn[:] = zero
            hd[:] = zero
            continue
        first = t == lengths[n] - 1 if reverse else t == 0
        h_prev = h0[n] if first else out[t + 1 if reverse else t - 1, n, ocol : ocol + hidden]
        ar, az, an = a[:hidden], a[hidden : 2 * hidden], a[2 * hidden :]
        hr, hz, hh = hd[:hidden], hd[hidden : 2 * hidden], hd[2 * hidden :]
        gy, d = grad_out[t, n, ocol : ocol + hidden], dh[n]
        for k in range(hidden):
            r, u, new = ar[k], az[k], an[k]
            g = d[k] + gy[k]  # dL/dh_t, all paths
            dnew = g * (one - u) * (one - new * new)
            hr[k] = ar[k] = dnew * hn[k] * (r * (one - r))
            hz[k] = az[k] = g * (h_prev[k] - new) * (u * (one - u))
            an[k] = dnew
            hh[k] = hn[k] = dnew * r
            d[k] = g * u  # the direct path to h_{t-1}; W_hh^T hid is added to it


@jit
def gru_step(at, rows, inputs, hidden, width, col, zero):
    """One step on its own over tensors by address
    (:func:`~rnnkit.kernels.numba_ops.rows_at`), the weights as torch holds
    them: a row per gate unit, each product a dot of rows; ``r``, ``z``,
    ``n`` and ``h' = n + z (h - n)`` as :func:`gru_forward_step` computes them.

    Args:
        at: the addresses of ``x (N, H_in)``, ``h (N, H)``, ``w_ih (3H, H_in)``,
            ``w_hh (3H, H)``, ``b_ih (3H,)``, ``b_hh (3H,)`` (0 for
            ``bias=False``), ``out (N, width)`` (``h'`` in columns
            ``col:col+H``), ``h_n (N, H)`` (``h'`` again; the address of
            ``out`` is allowed) and ``acts (N, 4H)``, where ``r``, ``z``, ``n``
            and ``W_hn h + b_hn`` are kept for :func:`gru_step_backward` (0: not
            kept); each C-contiguous and of ``zero``'s dtype.
        rows, inputs, hidden: ``N``, ``H_in``, ``H``.
    """
    x, h = rows_at(at[0], rows, inputs, zero), rows_at(at[1], rows, hidden, zero)
    w_ih, w_hh = rows_at(at[2], 3 * hidden, inputs, zero), rows_at(at[3], 3 * hidden, hidden, zero)
    b_ih, b_hh = rows_at(at[4], 1, 3 * hidden, zero)[0], rows_at(at[5], 1, 3 * hidden, zero)[0]
    out, h_n = rows_at(at[6], rows, width, zero), rows_at(at[7], rows, hidden, zero)
    keep = at[8] != 0
    acts = rows_at(at[8], rows if keep else 0, 4 * hidden, zero)
    for n in range(rows):
        for j in range(hidden):
            r = sigmoid(dot(w_ih[j], x[n]) + b_ih[j] + dot(w_hh[j], h[n]) + b_hh[j])
            k = hidden + j
            z = sigmoid(dot(w_ih[k], x[n]) + b_ih[k] + dot(w_hh[k], h[n]) + b_hh[k])
            k += hidden
            hn = dot(w_hh[k], h[n]) + b_hh[k]
            new = tanh(dot(w_ih[k], x[n]) + b_ih[k] + r * hn)
            value = new + z * (h[n, j] - new)
            out[n, col + j] = value
            h_n[n, j] = value
            if keep:
                acts[n, j], acts[n, hidden + j], acts[n, 2 * hidden + j], acts[n, 3 * hidden + j] = r, z, new, hn


@jit
def gru_step_backward(at, rows, inputs, hidden, zero):
    """Back-propagate through one :func:`gru_step`, by address.

    Args:
        at: the addresses of ``x (N, H_in)``, ``h (N, H)``, ``w_ih (3H, H_in)``,
            ``w_hh (3H, H)``, the kept ``acts (N, 4H)`` and ``dL/dh' (N, H)``,
            then the gradients it writes: ``dz_x (N, 3H)`` and ``dz_h (N,
            3H)``, the input and recurrent projections' (the biases' are
            their column sums), ``dx (N, H_in)``, ``dh (N, H)``, ``dw_ih (3H,
            H_in)`` and ``dw_hh (3H, H)`` (0: not wanted).
    """
    x, h = rows_at(at[0], rows, inputs, zero), rows_at(at[1], rows, hidden, zero)
    w_ih, w_hh = rows_at(at[2], 3 * hidden, inputs, zero), rows_at(at[3], 3 * hidden, hidden, zero)
    acts, dh_n = rows_at(at[4], rows, 4 * hidden, zero), rows_at(at[5], rows, hidden, zero)
    dz_x, dz_h = rows_at(at[6], rows, 3 * hidden, zero), rows_at(at[7], rows, 3 * hidden, zero)
    dh = rows_at(at[9], rows if at[9] else 0, hidden, zero)
    one = zero + 1
    for n in range(rows):
        for j in range(hidden):
            r, z, new, hn = acts[n, j], acts[n, hidden + j], acts[n, 2 * hidden + j], acts[n, 3 * hidden + j]
            d = dh_n[n, j]
            dn = d * (one - z) * (one - new * new)
            dr = dn * hn * r * (one - r)
            du = d * (h[n, j] - new) * z * (one - z)
            dz_x[n, j] = dz_h[n, j] = dr
            dz_x[n, hidden + j] = dz_h[n, hidden + j] = du
            dz_x[n, 2 * hidden + j] = dn
            dz_h[n, 2 * hidden + j] = dn * r
            if at[9]:
                dh[n, j] = d * z
    if at[8]:
        add_row_products(dz_x, w_ih, rows_at(at[8], rows, inputs, zero), True)
    if at[9]:
        add_row_products(dz_h, w_hh, dh, False)
    if at[10]:
        add_column_products(dz_x, x, rows_at(at[10], 3 * hidden, inputs, zero), True)
    if at[11]:
        add_column_products(dz_h, h, rows_at(at[11], 3 * hidden, hidden, zero), True)
