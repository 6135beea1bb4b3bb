"""The sequential part of the LSTM, forward and back-propagation through time, in numba.

Both loops work on one direction of one layer, for the batch rows
``n0 <= n < n1``, inside arrays shared by all directions (``D`` of them),
with hidden size ``H`` and output size ``P`` (``P = H`` without a projection):

* ``gates (T, N, D*4H)``, C-contiguous; this direction owns columns
  ``gcol:gcol + 4H``, the gates ``i, f, g, o`` in that order. It holds the
  input projection ``W_ih x_t + b_ih + b_hh`` of every step (both biases),
  computed before the loop; the forward loop adds ``W_hh h_{t-1}`` to each
  step's in place and, where a backward pass may follow, overwrites the sums
  with the gates' activations, which is what the backward loop needs.
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
that product, done by :func:`~rnnkit.kernels.numba_ops.product_add` and
:func:`~rnnkit.kernels.numba_ops.product` (numba's own
register tiles or a BLAS GEMM called from the compiled loop; a Python loop
over the steps calling BLAS measured no faster: the loops' threads share the
batch for the whole sequence, without meeting at every step). The products over all
steps (the weight gradients, the input's gradient) are left to the caller, who
does them with BLAS after the loop.
"""

from __future__ import annotations

import numpy as np

from rnnkit.kernels.numba_ops import (
    add_column_products, add_row_products, copy, dot, jit, keep_alive, product, product_add, rows_at, sigmoid, tanh,
    unowned,
)


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
    steps, hidden = gates.shape[0], c.shape[1]
    keep = cells.shape[0] == steps
    scratch = forward_scratch(n1 - n0, hidden, w_hr_t.shape[1], c.dtype)
    m, projected = unowned(scratch[0]), unowned(scratch[1])
    gates, out, cells, h, c = unowned(gates), unowned(out), unowned(cells), unowned(h), unowned(c)
    lengths = unowned(lengths)
    w_hh_t, w_hr_t = unowned(w_hh_t), unowned(w_hr_t)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        product_add(h, 0, w_hh_t, gates[t, n0:n1, gcol:], n0, n1, 4 * hidden, gemm)
        lstm_forward_step(
            gates, gcol, w_hr_t, out, ocol, cells, ccol, h, c, m, projected, lengths, t, n0, n1, gemm, keep
        )
    keep_alive(scratch)


@jit(inline="always")
def _forward_rows(gates, gcol, w_hr_t, out, ocol, cells, ccol, h, c, m, lengths, t, n0, n1, keep):
    """:func:`lstm_forward_step`'s element-wise part: the new ``c_t`` and
    ``o * tanh(c_t)``, into ``m`` with a projection, else into ``h`` and ``out``."""
    hidden, width = c.shape[1], h.shape[1]
    zero = c.dtype.type(0)
    project = w_hr_t.size > 0
    for n in range(n0, n1):
        o_row = out[t, n, ocol : ocol + width]
        if t >= lengths[n]:
            o_row[:] = zero
            if keep:
                cells[t, n, ccol : ccol + hidden] = zero
            continue
        # Views indexed from 0, so that the loop vectorises (see elman_loops).
        a = gates[t, n, gcol : gcol + 4 * hidden]
        ai, af, ag, ao = a[:hidden], a[hidden : 2 * hidden], a[2 * hidden : 3 * hidden], a[3 * hidden :]
        cn = c[n]
        mn = m[n - n0] if project else o_row  # o * tanh(c_t): h_t itself without a projection
        if keep:  # the activations and c_t, for the backward pass
            kept = cells[t, n, ccol : ccol + hidden]
            for k in range(hidden):
                i, f, g, o, cn[k], mn[k] = lstm_unit(ai[k], af[k], ag[k], ao[k], cn[k])
                ai[k], af[k], ag[k], ao[k], kept[k] = i, f, g, o, cn[k]
        else:
            for k in range(hidden):
                _, _, _, _, cn[k], mn[k] = lstm_unit(ai[k], af[k], ag[k], ao[k], cn[k])
        if not project:
            copy(h[n], o_row)


@jit(inline="always")
def lstm_unit(ai, af, ag, ao, c):
    """One unit's step from its four pre-activations and ``c_{t-1}``:
    ``(i, f, g, o, c_t, o * tanh(c_t))``. Both of
    :func:`lstm_forward_step`'s loops call it, so that they round alike."""
    i, f, g, o = sigmoid(ai), sigmoid(af), tanh(ag), sigmoid(ao)
    c_t = f * c + i * g
    return i, f, g, o, c_t, o * tanh(c_t)


@jit
def forward_scratch(rows, hidden, width, dtype):
    """The working rows :func:`lstm_forward_step` needs: ``o * tanh(c_t)``
    ``(rows, H)`` and its projection ``(rows, width)``, ``P`` padded as
    ``W_hr^T``'s columns are."""
    return np.zeros((rows, hidden), dtype=dtype), np.zeros((rows, width), dtype=dtype)


@jit(inline="always")
def lstm_forward_step(
    gates, gcol, w_hr_t, out, ocol, cells, ccol, h, c, m, projected, lengths, t, n0, n1, gemm, keep
):
    """Step ``t`` of the recurrence for rows ``n0 <= n < n1``, whose
    ``gates[t]`` already hold the pre-activations, ``W_hh h_{t-1}`` added;
    ``m`` and ``projected`` are :func:`forward_scratch`'s. With ``keep``, the
    activations replace the pre-activations and ``c_t`` goes to ``cells[t]``."""
    # The rows in one loop nest for each way, keep a constant in each: with
    # keep a value read inside the loop over rows, LLVM merged its two unit
    # loops into one, and both ran 1.7-1.9 times slower (measured).
    if keep:
        _forward_rows(gates, gcol, w_hr_t, out, ocol, cells, ccol, h, c, m, lengths, t, n0, n1, True)
    else:
        _forward_rows(gates, gcol, w_hr_t, out, ocol, cells, ccol, h, c, m, lengths, t, n0, n1, False)
    if w_hr_t.size > 0:
        width = h.shape[1]
        product(m, 0, w_hr_t, projected, 0, n1 - n0, gemm)
        for n in range(n0, n1):
            if t < lengths[n]:
                o_row, new = out[t, n, ocol : ocol + width], projected[n - n0]
                copy(o_row, new)
                copy(h[n], new)


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
    scratch = backward_scratch(rows, dc.shape[1], max(w_hr.shape[1], dc.shape[1]), width, dc.dtype)
    gh, dm, m = unowned(scratch[0]), unowned(scratch[1]), unowned(scratch[2])
    gates, cells, c0, grad_out = unowned(gates), unowned(cells), unowned(c0), unowned(grad_out)
    grad_cells = unowned(grad_cells)
    dh, dc, dhs, lengths = unowned(dh), unowned(dc), unowned(dhs), unowned(lengths)
    w_hh, w_hr = unowned(w_hh), unowned(w_hr)
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        lstm_backward_step(
            gates, gcol, cells, ccol, c0, w_hr, grad_out, grad_cells, ocol, dh, dc, dhs, gh, dm, m,
            lengths, t, reverse, n0, n1, gemm,
        )
        # rows past their length have zero gradients: their dh stays as it is
        product_add(gates[t], gcol, w_hh, dh[n0:n1], n0, n1, width, gemm)
    keep_alive(scratch)


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
            if project:
                m[k] = o * tc
        if project:
            copy(c_t, m)  # no step still to come reads this c_t


@jit
def lstm_step(at, rows, inputs, hidden, projected, width, col, zero):
    """One step on its own (see :func:`lstm_unit`) over tensors by address
    (:func:`~rnnkit.kernels.numba_ops.rows_at`), the weights as torch holds
    them: a row per gate unit, each product a dot of rows.

    Args:
        at: the addresses of ``x (N, H_in)``, ``h (N, P)``, ``c (N, H)``,
            ``w_ih (4H, H_in)``, ``w_hh (4H, P)``, ``b_ih (4H,)``, ``b_hh (4H,)``
            (0 for ``bias=False``), ``w_hr (P, H)`` (0 without a projection),
            ``out (N, width)`` (``h'`` in columns ``col:col+P``), ``h_n (N, P)``
            (``h'`` again; the address of ``out`` is allowed), ``c_n (N, H)``
            and ``acts (N, 5H)``, where the gates ``i, f, g, o`` and ``c'`` are
            kept for :func:`lstm_step_backward` (0: not kept); each C-contiguous
            and of ``zero``'s dtype.
        rows, inputs, hidden: ``N``, ``H_in``, ``H``; projected: ``P``, or 0
            without a projection (then ``P = H``).
    """
    size = projected if projected else hidden
    x, h, c = rows_at(at[0], rows, inputs, zero), rows_at(at[1], rows, size, zero), rows_at(at[2], rows, hidden, zero)
    w_ih, w_hh = rows_at(at[3], 4 * hidden, inputs, zero), rows_at(at[4], 4 * hidden, size, zero)
    b_ih, b_hh = rows_at(at[5], 1, 4 * hidden, zero)[0], rows_at(at[6], 1, 4 * hidden, zero)[0]
    w_hr = rows_at(at[7], projected, hidden, zero)
    out, h_n = rows_at(at[8], rows, width, zero), rows_at(at[9], rows, size, zero)
    c_n = rows_at(at[10], rows, hidden, zero)
    keep = at[11] != 0
    acts = rows_at(at[11], rows if keep else 0, 5 * hidden, zero)
    gates = np.empty(4 * hidden, dtype=x.dtype)
    m = gates[:hidden]  # o * tanh(c'), written over the input gates as they are read
    for n in range(rows):
        for j in range(4 * hidden):
            gates[j] = dot(w_ih[j], x[n]) + b_ih[j] + dot(w_hh[j], h[n]) + b_hh[j]
        for j in range(hidden):
            i, f, g, o, c_n[n, j], m[j] = lstm_unit(
                gates[j], gates[hidden + j], gates[2 * hidden + j], gates[3 * hidden + j], c[n, j]
            )
            if keep:
                acts[n, j], acts[n, hidden + j], acts[n, 2 * hidden + j], acts[n, 3 * hidden + j] = i, f, g, o
                acts[n, 4 * hidden + j] = c_n[n, j]
        for p in range(size):
            value = dot(w_hr[p], m) if projected else m[p]
            out[n, col + p] = value
            h_n[n, p] = value


@jit
def lstm_step_backward(at, rows, inputs, hidden, zero):
    """Back-propagate through one :func:`lstm_step` without a projection, by address.

    Args:
        at: the addresses of ``x (N, H_in)``, ``h (N, H)``, ``c (N, H)``,
            ``w_ih (4H, H_in)``, ``w_hh (4H, H)``, the kept ``acts (N, 5H)``,
            ``dL/dh' (N, H)`` and ``dL/dc' (N, H)`` (0: zero), then the
            gradients it writes: ``dz (N, 4H)`` (the pre-activations'; the
            biases' are its column sums), ``dx (N, H_in)``, ``dh (N, H)``,
            ``dc (N, H)``, ``dw_ih (4H, H_in)`` and ``dw_hh (4H, H)`` (0: not
            wanted).
    """
    x, h, c = rows_at(at[0], rows, inputs, zero), rows_at(at[1], rows, hidden, zero), rows_at(at[2], rows, hidden, zero)
    w_ih, w_hh = rows_at(at[3], 4 * hidden, inputs, zero), rows_at(at[4], 4 * hidden, hidden, zero)
    acts = rows_at(at[5], rows, 5 * hidden, zero)
    dh_n, dc_n = rows_at(at[6], rows, hidden, zero), rows_at(at[7], rows, hidden, zero)
    dz = rows_at(at[8], rows, 4 * hidden, zero)
    dc_prev = rows_at(at[11], rows if at[11] else 0, hidden, zero)
    one = zero + 1
    for n in range(rows):
        for j in range(hidden):
            i, f, g, o = acts[n, j], acts[n, hidden + j], acts[n, 2 * hidden + j], acts[n, 3 * hidden + j]
            tc = tanh(acts[n, 4 * hidden + j])
            dc = dc_n[n, j] + dh_n[n, j] * o * (one - tc * tc)
            dz[n, j] = dc * g * i * (one - i)
            dz[n, hidden + j] = dc * c[n, j] * f * (one - f)
            dz[n, 2 * hidden + j] = dc * i * (one - g * g)
            dz[n, 3 * hidden + j] = dh_n[n, j] * tc * o * (one - o)
            if at[11]:
                dc_prev[n, j] = dc * f
    if at[9]:
        add_row_products(dz, w_ih, rows_at(at[9], rows, inputs, zero), True)
    if at[10]:
        add_row_products(dz, w_hh, rows_at(at[10], rows, hidden, zero), True)
    if at[12]:
        add_column_products(dz, x, rows_at(at[12], 4 * hidden, inputs, zero), True)
    if at[13]:
        add_column_products(dz, h, rows_at(at[13], 4 * hidden, hidden, zero), True)
