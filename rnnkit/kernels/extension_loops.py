"""The Elman, LSTM and GRU recurrences with rnnkit's options beyond torch.nn,
forward and back-propagation through time, in numba: layer norm of the
recurrent product (and of an LSTM's cell state), recurrent dropout and zoneout
(see README, "Beyond torch.nn"). The LSTM's loops are described here; the
GRU's and Elman's differ where their docstrings say.

The loops work on one direction of one layer, for the batch rows
``n0 <= n < n1``, inside arrays shared by all directions (``D`` of them);
``d`` is the direction, with hidden size ``H`` and output size ``P`` (an
LSTM's ``proj_size``, else ``P = H``); ``gcol = d*4H`` and, in the LSTM's
loops, ``ccol = d*H`` and ``ocol = d*P`` its columns (``col = d*H`` in the
GRU's and Elman's):

* ``xp (T, N, D*4H)``: the input side of every step, read only:
  ``W_ih x_t + b_ih + b_hh`` (both biases), or, with layer norm, ``W_ih x_t``
  alone, which the loops normalise and add ``b_in (4H,)``, the biases' sum, to.
* ``gates (T, N, D*4H)``: the gates' activations ``i, f, g, o``.
* ``cells (T, N, D*H)``: ``c_t``; ``out (T, N, D*P)``: ``h_t``; ``hprev (T,
  N, D*P)``: ``m ⊙ h_(t-1)``, what step ``t``'s product with ``W_hh`` read
  (for ``dL/dW_hh``). All zero past each length.
* With layer norm (``norm``): ``xhat``, ``zhat (T, N, D*4H)`` the normalised
  ``W_ih x_t`` and ``W_hh (m ⊙ h_(t-1))``, ``chat (T, N, D*H)`` the
  normalised ``c_t``, and their reciprocal standard deviations ``rstd_x``,
  ``rstd_z``, ``rstd_c (T, N, D)``; ``g_ih``, ``g_hh (4H,)``, ``g_c``, ``b_c
  (H,)`` the gains and the shift. Without, ``g_ih`` and ``b_in`` have no
  elements, and the normalised rows and their statistics no steps.
* ``rmask (N, P)``: the recurrent-dropout mask, or no rows for none;
  ``zmask (T, N, P)``: the zoneout mask, or no steps for none.
* ``lengths (N,)`` int64: steps ``t >= lengths[n]`` leave row ``n``'s state
  as it is and output zeros (and zeros in every saved array and gradient).

The products with ``W_hh`` (and ``W_hr``) go through :func:`~rnnkit.kernels.numba_ops.product`
as in :mod:`rnnkit.kernels.lstm_loops`. The weights' gradients, products
over all steps, are left to the caller; the gains', the shift's and the
input bias's (with layer norm) are summed inside the backward loops, each
batch row on its own (so that no row's sum depends on how the batch was
split), and the caller adds the rows.
"""

from __future__ import annotations

import math

import numpy as np

from rnnkit.kernels.numba_ops import (
    centred_squares, copy, jit, keep_alive, product, product_add, row_sums, sigmoid, tanh, unowned,
)

EPS = 1e-5  # rnnkit.kernels.reference.LAYER_NORM_EPS


@jit(inline="always")
def normalise(v, vhat):
    """Layer norm of the row ``v`` without gain or shift: ``vhat = (v - mean) *
    r`` with one mean and one biased variance over the row; returns ``r``, the
    reciprocal standard deviation, which the backward pass needs; the callers
    keep ``v`` (another row)."""
    size = v.shape[0]
    # typed constants keep float32 rows in float32 (an int or a Python float
    # would turn the means, and every element they touch, into float64)
    one, count, eps = v.dtype.type(1), v.dtype.type(size), v.dtype.type(EPS)
    mean = row_sums(v, v)[0] / count
    r = one / math.sqrt(centred_squares(v, mean) / count + eps)
    for k in range(size):
        vhat[k] = (v[k] - mean) * r
    return r


@jit(inline="always")
def normalise_backward(dy, gain, vhat, r, dv):
    """``dL/dv`` of ``y = gain * vhat + shift`` (``vhat`` from :func:`normalise`
    of ``v``, with its ``r``) from ``dL/dy``, into ``dv`` (which may be ``dy``)."""
    size = dy.shape[0]
    count = dy.dtype.type(size)  # as in normalise
    for k in range(size):
        dv[k] = dy[k] * gain[k]  # dL/d vhat
    mean1, mean2 = row_sums(dv, vhat)
    mean1 /= count
    mean2 /= count
    for k in range(size):
        dv[k] = r * (dv[k] - mean1 - vhat[k] * mean2)


@jit(inline="always")
def input_norm_backward(da, g_ih, xh, r, dg_ih, db_in):
    """Back through ``a = g_ih * LN(v) + b_in + ...`` (``xh`` the normalised
    ``v`` and ``r`` its :func:`normalise` statistic): ``da``, ``dL/da`` on
    entry, becomes ``dL/dv``; the row's shares of the gain's and the bias's
    gradients are added to ``dg_ih`` and ``db_in``."""
    for k in range(da.shape[0]):
        dg_ih[k] += da[k] * xh[k]
        db_in[k] += da[k]
    normalise_backward(da, g_ih, xh, r, da)


NORM_INSIDE_ROWS = 8
"""Batch rows of a piece from which the input side's layer norm runs inside
the step loop, each row as the step reaches it (its row at hand, nothing
read twice); a piece of fewer rows normalises its inputs in a pass of their
own before the loop, and their gradients in one after the backward loop
(:func:`normalise_inputs`, :func:`inputs_norm_backward`), off the chain of
dependent steps that a few rows' step is bound by. Measured on an Intel Xeon
against the other way, the layer-normalised LSTM's training step: batch 32
(pieces of 16 rows) 1.03x faster inside, batch 4 (pieces of 2) 1.04-1.05x
faster apart, batch 1 level. Either way a row's arithmetic, and the order of
its sums, is the same."""


@jit(inline="always")
def normalise_inputs(xp, col, width, d, xhat, rstd_x, lengths, n0, n1):
    """The input side's layer norm of every step for the rows ``n0 <= n < n1``,
    before the loop: ``xhat`` and ``rstd_x`` as the forward loops write them
    (:data:`NORM_INSIDE_ROWS`); ``width`` columns from ``col``."""
    zero = xhat.dtype.type(0)
    for t in range(xp.shape[0]):
        for n in range(n0, n1):
            xh = xhat[t, n, col : col + width]
            if t >= lengths[n]:
                xh[:] = zero
            else:
                rstd_x[t, n, d] = normalise(xp[t, n, col : col + width], xh)


@jit(inline="always")
def inputs_norm_backward(dxp, col, width, d, g_ih, xhat, rstd_x, dg_ih, db_in, lengths, reverse, n0, n1):
    """:func:`input_norm_backward` of every step for the rows ``n0 <= n < n1``,
    after the backward loop, the steps in its order (so that the gain's and
    the bias's sums are added up as inside it)."""
    steps = dxp.shape[0]
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        for n in range(n0, n1):
            if t < lengths[n]:
                input_norm_backward(
                    dxp[t, n, col : col + width], g_ih, xhat[t, n, col : col + width], rstd_x[t, n, d], dg_ih[n],
                    db_in[n],
                )


@jit(inline="always")
def masked_product(h, rmask, hm, w_hh_t, z, n0, n1, gemm):
    """``z = (m ⊙ h) W_hh^T`` for the rows ``n0 <= n < n1`` (``z`` indexed from
    0), ``hm`` receiving ``m ⊙ h``; ``m`` is the recurrent-dropout mask
    ``rmask``, or none when it has no rows."""
    masked = rmask.shape[0] > 0
    for n in range(n0, n1):
        for k in range(h.shape[1]):
            hm[n, k] = h[n, k] * rmask[n, k] if masked else h[n, k]
    product(hm, 0, w_hh_t, z, n0, n1, gemm)


@jit(inline="always")
def add_masked_product(dz_t, col, w_hh, back, rmask, dh, n0, n1, gemm):
    """``dh += m ⊙ (dz_t W_hh)`` for the rows ``n0 <= n < n1``, ``back`` its
    scratch with a mask (without, the product adds straight into ``dh``);
    the backward of :func:`masked_product` (rows past their length have
    ``dz = 0`` and add nothing)."""
    if rmask.shape[0] == 0:
        product_add(dz_t, col, w_hh, dh[n0:n1], n0, n1, dh.shape[1], gemm)
        return
    product(dz_t, col, w_hh, back, n0, n1, gemm)
    for n in range(n0, n1):
        dhn, bk, mn = dh[n], back[n - n0], rmask[n]
        for k in range(dh.shape[1]):
            dhn[k] += bk[k] * mn[k]


@jit
def extended_lstm_forward(
    xp, gcol, ccol, ocol, d, w_hh_t, w_hr_t, g_ih, b_in, g_hh, g_c, b_c, rmask, zmask, norm, gates, cells,
    mkeep, out, hprev, xhat, rstd_x, zhat, rstd_z, chat, rstd_c, h, c, lengths, reverse, n0, n1, gemm,
):
    """Run the recurrence; ``h (N, P)``, ``c (N, H)`` hold ``h_0``, ``c_0`` on
    entry and ``h_n``, ``c_n`` on return; ``w_hh_t`` is ``W_hh^T`` and
    ``w_hr_t`` ``W_hr^T`` (empty without a projection), as
    :func:`~rnnkit.kernels.numba_ops.product` takes them. The arrays of
    ``H`` per direction (``cells``, ``chat``, ``mkeep``) have this direction at
    column ``ccol``, those of ``P`` (``out``, ``hprev``) at ``ocol``; with a
    projection ``mkeep`` receives each step's ``o * tanh(LN_c(c_t))``, which
    ``W_hr`` turns into ``h~_t``."""
    steps, hidden, width = xp.shape[0], c.shape[1], h.shape[1]
    rows = 4 * hidden
    zero, one = c.dtype.type(0), c.dtype.type(1)
    zoned, project = zmask.shape[0] > 0, w_hr_t.size > 0
    scratch = (
        np.zeros((h.shape[0], width), dtype=c.dtype),
        np.empty((n1 - n0, w_hh_t.shape[1]), dtype=c.dtype),
        np.empty(hidden, dtype=c.dtype),  # what tanh reads: LN_c(c_t), or c_t
        np.zeros((n1 - n0, hidden), dtype=c.dtype),  # o * tanh(y) of each row
        np.zeros((n1 - n0, w_hr_t.shape[1]), dtype=c.dtype),
    )
    hm, z, y, m = unowned(scratch[0]), unowned(scratch[1]), unowned(scratch[2]), unowned(scratch[3])
    projected = unowned(scratch[4])
    xp, g_ih, b_in, g_hh, g_c = unowned(xp), unowned(g_ih), unowned(b_in), unowned(g_hh), unowned(g_c)
    b_c = unowned(b_c)
    rmask, zmask = unowned(rmask), unowned(zmask)
    gates, cells, mkeep, out = unowned(gates), unowned(cells), unowned(mkeep), unowned(out)
    hprev, xhat, rstd_x = unowned(hprev), unowned(xhat), unowned(rstd_x)
    zhat, rstd_z, chat, rstd_c = unowned(zhat), unowned(rstd_z), unowned(chat), unowned(rstd_c)
    h, c, lengths = unowned(h), unowned(c), unowned(lengths)
    w_hh_t, w_hr_t = unowned(w_hh_t), unowned(w_hr_t)
    inside = n1 - n0 >= NORM_INSIDE_ROWS
    if norm and not inside:
        normalise_inputs(xp, gcol, rows, d, xhat, rstd_x, lengths, n0, n1)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        masked_product(h, rmask, hm, w_hh_t, z, n0, n1, gemm)
        for n in range(n0, n1):
            if t >= lengths[n]:
                out[t, n, ocol : ocol + width] = zero
                hprev[t, n, ocol : ocol + width] = zero
                cells[t, n, ccol : ccol + hidden] = zero
                if project:
                    mkeep[t, n, ccol : ccol + hidden] = zero
                if norm:  # zeros past each length, as in every saved array
                    xhat[t, n, gcol : gcol + rows] = zero
                    zhat[t, n, gcol : gcol + rows] = zero
                    chat[t, n, ccol : ccol + hidden] = zero
                continue
            copy(hprev[t, n, ocol : ocol + width], hm[n])
            zn = z[n - n0, :rows]
            a = gates[t, n, gcol : gcol + rows]
            x_t = xp[t, n, gcol : gcol + rows]
            if norm:
                xh, zh = xhat[t, n, gcol : gcol + rows], zhat[t, n, gcol : gcol + rows]
                if inside:
                    rstd_x[t, n, d] = normalise(x_t, xh)
                rstd_z[t, n, d] = normalise(zn, zh)
                for k in range(rows):
                    a[k] = g_ih[k] * xh[k] + b_in[k] + g_hh[k] * zh[k]
            else:
                for k in range(rows):
                    a[k] = x_t[k] + zn[k]
            # Views indexed from 0, and no branch inside a loop over k: so that the loops vectorise.
            ai, af, ag, ao = a[:hidden], a[hidden : 2 * hidden], a[2 * hidden : 3 * hidden], a[3 * hidden :]
            cn, kept = c[n], cells[t, n, ccol : ccol + hidden]
            for k in range(hidden):
                i = sigmoid(ai[k])
                f = sigmoid(af[k])
                g = tanh(ag[k])
                o = sigmoid(ao[k])
                ai[k], af[k], ag[k], ao[k] = i, f, g, o
                cn[k] = kept[k] = f * cn[k] + i * g
            if norm:
                ch = chat[t, n, ccol : ccol + hidden]
                rstd_c[t, n, d] = normalise(cn, ch)
                for k in range(hidden):
                    y[k] = g_c[k] * ch[k] + b_c[k]
            else:
                copy(y, cn)
            mn = m[n - n0]
            for k in range(hidden):
                mn[k] = ao[k] * tanh(y[k])
            if project:
                copy(mkeep[t, n, ccol : ccol + hidden], mn)
        if project:
            product(m, 0, w_hr_t, projected, 0, n1 - n0, gemm)
        result = projected if project else m  # h~_t, before zoneout
        for n in range(n0, n1):
            if t >= lengths[n]:
                continue
            hn, o_row, new = h[n], out[t, n, ocol : ocol + width], result[n - n0]
            if zoned:
                kept_h = zmask[t, n]
                for k in range(width):
                    hn[k] = o_row[k] = kept_h[k] * hn[k] + (one - kept_h[k]) * new[k]
            else:
                for k in range(width):
                    hn[k] = o_row[k] = new[k]
    keep_alive(scratch)


@jit
def extended_lstm_backward(
    gates, gcol, ccol, ocol, d, cells, mkeep, c0, w_hh, w_hr, g_ih, g_hh, g_c, b_c, rmask, zmask, norm, xhat,
    rstd_x, zhat, rstd_z, chat, rstd_c, grad_out, grad_cells, dxp, dz, dhs, dh, dc, dg_ih, db_in, dg_hh, dg_c,
    db_c, lengths, reverse, n0, n1, gemm,
):
    """Back-propagate through :func:`extended_lstm_forward`, last step first.

    Args:
        c0: ``(N, H)``, this direction's ``c_0``; ``w_hh``: ``W_hh``, ``w_hr``:
            ``W_hr`` (empty without a projection), as
            :func:`~rnnkit.kernels.numba_ops.product` takes them.
        grad_out: ``(T, N, D*P)``, ``dL/d output``.
        grad_cells: ``(T, N, D*H)``, ``dL/dc_t`` of every step where the
            caller took the cells as an output; no steps if not.
        dxp: ``(T, N, D*4H)`` receives ``dL/d xp`` (the gate pre-activations'
            gradient; with layer norm, ``dL/d W_ih x_t``).
        dz: ``(T, N, D*4H)`` receives ``dL/d W_hh (m ⊙ h_(t-1))`` (with layer
            norm; without, it is ``dxp`` and the caller passes ``dxp`` again).
        dhs: ``(T, N, D*P)`` receives ``dL/dh~_t`` with a projection (zeros
            past each length), whose products with ``mkeep`` over all steps
            give ``dL/dW_hr``.
        dh: ``(N, P)``, dc: ``(N, H)``: ``dL/dh_n``, ``dL/dc_n`` on entry,
            ``dL/dh_0``, ``dL/dc_0`` on return.
        dg_ih, db_in, dg_hh: ``(N, 4H)``, dg_c, db_c: ``(N, H)``, zeros on
            entry (with layer norm; else no rows): each row's share of the
            gains', the input bias's and the shift's gradients, summed over
            its steps (the caller sums the rows).
    """
    steps, hidden, width = gates.shape[0], dc.shape[1], dh.shape[1]
    rows = 4 * hidden
    zero, one = dc.dtype.type(0), dc.dtype.type(1)
    zoned, cells_wanted, project = zmask.shape[0] > 0, grad_cells.shape[0] > 0, w_hr.size > 0
    scratch = (
        np.empty((n1 - n0, w_hh.shape[1]), dtype=dc.dtype),
        np.zeros((n1 - n0, width), dtype=dc.dtype),  # dL/dh~_t
        np.zeros((n1 - n0, max(w_hr.shape[1], hidden)), dtype=dc.dtype),  # dL/d(o * tanh(y)), projected
        np.empty(hidden, dtype=dc.dtype),
        np.empty(hidden, dtype=dc.dtype),  # what tanh read: LN_c(c_t), or c_t
    )
    back, gh, dm = unowned(scratch[0]), unowned(scratch[1]), unowned(scratch[2])
    dct, y = unowned(scratch[3]), unowned(scratch[4])
    gates, cells, mkeep, c0, zhat = unowned(gates), unowned(cells), unowned(mkeep), unowned(c0), unowned(zhat)
    chat = unowned(chat)
    g_ih, g_hh, g_c, b_c, rmask = unowned(g_ih), unowned(g_hh), unowned(g_c), unowned(b_c), unowned(rmask)
    zmask = unowned(zmask)
    xhat, rstd_x, dg_ih, db_in = unowned(xhat), unowned(rstd_x), unowned(dg_ih), unowned(db_in)
    rstd_z, rstd_c, grad_out = unowned(rstd_z), unowned(rstd_c), unowned(grad_out)
    grad_cells = unowned(grad_cells)
    dxp, dz, dhs, dh, dc = unowned(dxp), unowned(dz), unowned(dhs), unowned(dh), unowned(dc)
    dg_hh, dg_c, db_c, lengths = unowned(dg_hh), unowned(dg_c), unowned(db_c), unowned(lengths)
    w_hh, w_hr = unowned(w_hh), unowned(w_hr)
    inside = n1 - n0 >= NORM_INSIDE_ROWS
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        for n in range(n0, n1):
            g = gh[n - n0]
            if t >= lengths[n]:
                g[:] = zero
            else:
                gy, dhn = grad_out[t, n, ocol : ocol + width], dh[n]
                if zoned:
                    kept_h = zmask[t, n]
                    for k in range(width):
                        total = dhn[k] + gy[k]
                        g[k] = (one - kept_h[k]) * total
                        dhn[k] = kept_h[k] * total
                else:
                    for k in range(width):
                        g[k] = dhn[k] + gy[k]
                        dhn[k] = zero
            if project:
                copy(dhs[t, n, ocol : ocol + width], g)
        if project:
            product(gh, 0, w_hr, dm, 0, n1 - n0, gemm)
        dm_all = dm if project else gh
        for n in range(n0, n1):
            a, da = gates[t, n, gcol : gcol + rows], dxp[t, n, gcol : gcol + rows]
            dzn = dz[t, n, gcol : gcol + rows]
            if t >= lengths[n]:
                da[:] = zero
                dzn[:] = zero
                continue
            dmn, c_t = dm_all[n - n0], cells[t, n, ccol : ccol + hidden]
            # Views indexed from 0, and no branch inside a loop over k: so that the loops vectorise.
            ai, af, ag, ao = a[:hidden], a[hidden : 2 * hidden], a[2 * hidden : 3 * hidden], a[3 * hidden :]
            dai, daf, dag, dao = da[:hidden], da[hidden : 2 * hidden], da[2 * hidden : 3 * hidden], da[3 * hidden :]
            if norm:  # what tanh read: LN_c(c_t)
                ch = chat[t, n, ccol : ccol + hidden]
                for k in range(hidden):
                    y[k] = g_c[k] * ch[k] + b_c[k]
            else:
                copy(y, c_t)
            for k in range(hidden):
                o = ao[k]
                ty = tanh(y[k])
                dao[k] = dmn[k] * ty * (o * (one - o))
                dct[k] = dmn[k] * o * (one - ty * ty)  # dL/dy for now
            if norm:
                ch, dgc, dbc = chat[t, n, ccol : ccol + hidden], dg_c[n], db_c[n]
                for k in range(hidden):
                    dgc[k] += dct[k] * ch[k]
                    dbc[k] += dct[k]
                normalise_backward(dct, g_c, ch, rstd_c[t, n, d], dct)
            first = t == lengths[n] - 1 if reverse else t == 0
            c_prev = c0[n] if first else cells[t + 1 if reverse else t - 1, n, ccol : ccol + hidden]
            dcn = dc[n]
            if cells_wanted:  # c_t as an output of its own: its gradient joins dL/dc_t
                gc = grad_cells[t, n, ccol : ccol + hidden]
                for k in range(hidden):
                    dcn[k] += gc[k]
            for k in range(hidden):
                i, f, g = ai[k], af[k], ag[k]
                total = dct[k] + dcn[k]
                dai[k] = total * g * (i * (one - i))
                daf[k] = total * c_prev[k] * (f * (one - f))
                dag[k] = total * i * (one - g * g)
                dcn[k] = total * f
            if norm:
                zh, dg = zhat[t, n, gcol : gcol + rows], dg_hh[n]
                for k in range(rows):
                    dg[k] += da[k] * zh[k]
                normalise_backward(da, g_hh, zh, rstd_z[t, n, d], dzn)
                if inside:
                    input_norm_backward(da, g_ih, xhat[t, n, gcol : gcol + rows], rstd_x[t, n, d], dg_ih[n], db_in[n])
        add_masked_product(dz[t], gcol, w_hh, back, rmask, dh, n0, n1, gemm)
    if norm and not inside:
        inputs_norm_backward(dxp, gcol, rows, d, g_ih, xhat, rstd_x, dg_ih, db_in, lengths, reverse, n0, n1)
    keep_alive(scratch)


@jit
def extended_gru_forward(
    xp, gcol, col, d, w_hh_t, g_ih, b_in, b_hh, g_hh, rmask, zmask, norm, gates, bn, out, hold, hprev,
    xhat, rstd_x, zhat, rstd_z, h, lengths, reverse, n0, n1, gemm,
):
    """The GRU's recurrence, arrays as for :func:`extended_lstm_forward` with
    ``3H`` gate rows (``r, z, n``): ``xp`` holds ``W_ih x_t + b_ih`` (with
    layer norm ``W_ih x_t``, and ``b_in`` is ``b_ih``); ``b_hh (3H,)`` (no
    rows: none) is added after ``LN_hh``; ``bn (T, N,
    D*H)`` keeps each step's ``n`` block of ``LN_hh(W_hh (m ⊙ h)) + b_hh``, and
    ``hold (T, N, D*H)`` each step's unmasked ``h_(t-1)``."""
    steps, hidden = xp.shape[0], h.shape[1]
    rows = 3 * hidden
    zero, one = h.dtype.type(0), h.dtype.type(1)
    zoned, biased = zmask.shape[0] > 0, b_hh.shape[0] > 0
    scratch = (
        np.zeros((h.shape[0], hidden), dtype=h.dtype),
        np.empty((n1 - n0, w_hh_t.shape[1]), dtype=h.dtype),
        np.empty(rows, dtype=h.dtype),
        np.empty(rows, dtype=h.dtype),  # g_ih * LN_ih(W_ih x_t) + b_ih, with layer norm
    )
    hm, z, b, xn = unowned(scratch[0]), unowned(scratch[1]), unowned(scratch[2]), unowned(scratch[3])
    xp, g_ih, b_in, b_hh, g_hh = unowned(xp), unowned(g_ih), unowned(b_in), unowned(b_hh), unowned(g_hh)
    rmask, zmask = unowned(rmask), unowned(zmask)
    gates, bn, out, hold, hprev = unowned(gates), unowned(bn), unowned(out), unowned(hold), unowned(hprev)
    xhat, rstd_x, zhat, rstd_z = unowned(xhat), unowned(rstd_x), unowned(zhat), unowned(rstd_z)
    h, lengths = unowned(h), unowned(lengths)
    w_hh_t = unowned(w_hh_t)
    inside = n1 - n0 >= NORM_INSIDE_ROWS
    if norm and not inside:
        normalise_inputs(xp, gcol, rows, d, xhat, rstd_x, lengths, n0, n1)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        masked_product(h, rmask, hm, w_hh_t, z, n0, n1, gemm)
        for n in range(n0, n1):
            if t >= lengths[n]:
                out[t, n, col : col + hidden] = zero
                hold[t, n, col : col + hidden] = zero
                hprev[t, n, col : col + hidden] = zero
                if norm:
                    xhat[t, n, gcol : gcol + rows] = zero
                    zhat[t, n, gcol : gcol + rows] = zero
                continue
            copy(hprev[t, n, col : col + hidden], hm[n])
            copy(hold[t, n, col : col + hidden], h[n])
            zn = z[n - n0, :rows]
            if norm:
                zh = zhat[t, n, gcol : gcol + rows]
                rstd_z[t, n, d] = normalise(zn, zh)
                for k in range(rows):
                    b[k] = g_hh[k] * zh[k]
            else:
                for k in range(rows):
                    b[k] = zn[k]
            if biased:
                for k in range(rows):
                    b[k] += b_hh[k]
            a, x_t = gates[t, n, gcol : gcol + rows], xp[t, n, gcol : gcol + rows]
            if norm:
                xh = xhat[t, n, gcol : gcol + rows]
                if inside:
                    rstd_x[t, n, d] = normalise(x_t, xh)
                for k in range(rows):
                    xn[k] = g_ih[k] * xh[k] + b_in[k]
                x_t = xn
            hn, o_row, bnn = h[n], out[t, n, col : col + hidden], bn[t, n, col : col + hidden]
            for k in range(hidden):
                reset = sigmoid(x_t[k] + b[k])
                update = sigmoid(x_t[hidden + k] + b[hidden + k])
                new = tanh(x_t[2 * hidden + k] + reset * b[2 * hidden + k])
                a[k], a[hidden + k], a[2 * hidden + k] = reset, update, new
                bnn[k] = b[2 * hidden + k]
                candidate = new + update * (hn[k] - new)
                if zoned:
                    m = zmask[t, n, k]
                    candidate = m * hn[k] + (one - m) * candidate
                hn[k] = o_row[k] = candidate
    keep_alive(scratch)


@jit
def extended_gru_backward(
    gates, gcol, col, d, bn, hold, w_hh, g_ih, g_hh, rmask, zmask, norm, xhat, rstd_x, zhat, rstd_z,
    grad_out, dxp, dz, dh, db_hh, dg_ih, db_in, dg_hh, lengths, reverse, n0, n1, gemm,
):
    """Back-propagate through :func:`extended_gru_forward`, last step first:
    ``dxp`` receives ``dL/d xp``, ``dz`` ``dL/d W_hh (m ⊙ h_(t-1))``; ``dh
    (N, H)``: ``dL/dh_n`` on entry, ``dL/dh_0`` on return. ``db_hh (N, 3H)``
    and, with layer norm, ``dg_ih``, ``db_in``, ``dg_hh (N, 3H)`` (else no
    rows), zeros on entry, receive each row's share of ``dL/db_hh``, of the
    gains' and of ``b_ih``'s gradients, summed over its steps (the caller
    sums the rows)."""
    steps, hidden = gates.shape[0], dh.shape[1]
    rows = 3 * hidden
    zero, one = dh.dtype.type(0), dh.dtype.type(1)
    zoned = zmask.shape[0] > 0
    scratch = np.empty((n1 - n0, w_hh.shape[1]), dtype=dh.dtype)
    back = unowned(scratch)
    gates, bn, hold, g_ih, g_hh = unowned(gates), unowned(bn), unowned(hold), unowned(g_ih), unowned(g_hh)
    rmask, zmask = unowned(rmask), unowned(zmask)
    xhat, rstd_x, zhat, rstd_z = unowned(xhat), unowned(rstd_x), unowned(zhat), unowned(rstd_z)
    grad_out, dxp, dz, dh, db_hh = unowned(grad_out), unowned(dxp), unowned(dz), unowned(dh), unowned(db_hh)
    dg_ih, db_in, dg_hh, lengths = unowned(dg_ih), unowned(db_in), unowned(dg_hh), unowned(lengths)
    w_hh = unowned(w_hh)
    inside = n1 - n0 >= NORM_INSIDE_ROWS
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        for n in range(n0, n1):
            a, da = gates[t, n, gcol : gcol + rows], dxp[t, n, gcol : gcol + rows]
            dzn, dbn = dz[t, n, gcol : gcol + rows], db_hh[n]
            if t >= lengths[n]:
                da[:] = zero
                dzn[:] = zero
                continue
            gy, dhn = grad_out[t, n, col : col + hidden], dh[n]
            hp, bnn = hold[t, n, col : col + hidden], bn[t, n, col : col + hidden]
            # dL/d(LN_hh(...) + b_hh) into dz: r's and z's blocks as in da, n's scaled by r
            # (one loop with the zoneout test inside measured faster here than
            # a loop per case over views of each block)
            for k in range(hidden):
                total = dhn[k] + gy[k]
                if zoned:
                    m = zmask[t, n, k]
                    dht = (one - m) * total
                    carry = m * total
                else:
                    dht = total
                    carry = zero
                reset, update, new = a[k], a[hidden + k], a[2 * hidden + k]
                dn_pre = dht * (one - update) * (one - new * new)
                dr_pre = dn_pre * bnn[k] * (reset * (one - reset))
                du_pre = dht * (hp[k] - new) * (update * (one - update))
                da[k], da[hidden + k], da[2 * hidden + k] = dr_pre, du_pre, dn_pre
                dzn[k], dzn[hidden + k], dzn[2 * hidden + k] = dr_pre, du_pre, dn_pre * reset
                dhn[k] = carry + dht * update
            for k in range(rows):
                dbn[k] += dzn[k]
            if norm:
                zh, dg = zhat[t, n, gcol : gcol + rows], dg_hh[n]
                for k in range(rows):
                    dg[k] += dzn[k] * zh[k]
                normalise_backward(dzn, g_hh, zh, rstd_z[t, n, d], dzn)
                if inside:
                    input_norm_backward(da, g_ih, xhat[t, n, gcol : gcol + rows], rstd_x[t, n, d], dg_ih[n], db_in[n])
        add_masked_product(dz[t], gcol, w_hh, back, rmask, dh, n0, n1, gemm)
    if norm and not inside:
        inputs_norm_backward(dxp, gcol, rows, d, g_ih, xhat, rstd_x, dg_ih, db_in, lengths, reverse, n0, n1)
    keep_alive(scratch)


@jit
def extended_elman_forward(
    xp, col, d, w_hh_t, g_ih, b_in, g_hh, rmask, zmask, norm, relu, act, out, hprev, xhat, rstd_x, zhat, rstd_z,
    h, lengths, reverse, n0, n1, gemm,
):
    """The Elman recurrence, arrays as for :func:`extended_lstm_forward` with
    one block of ``H`` rows;
    ``act (T, N, D*H)`` receives each step's ``h~_t`` (tanh, or ReLU with ``relu``)."""
    steps, hidden = xp.shape[0], h.shape[1]
    zero, one = h.dtype.type(0), h.dtype.type(1)
    zoned = zmask.shape[0] > 0
    scratch = (np.zeros((h.shape[0], hidden), dtype=h.dtype), np.empty((n1 - n0, w_hh_t.shape[1]), dtype=h.dtype))
    hm, z = unowned(scratch[0]), unowned(scratch[1])
    xp, g_ih, b_in, g_hh, rmask = unowned(xp), unowned(g_ih), unowned(b_in), unowned(g_hh), unowned(rmask)
    zmask, act, out, hprev = unowned(zmask), unowned(act), unowned(out), unowned(hprev)
    xhat, rstd_x, zhat, rstd_z = unowned(xhat), unowned(rstd_x), unowned(zhat), unowned(rstd_z)
    h, lengths = unowned(h), unowned(lengths)
    w_hh_t = unowned(w_hh_t)
    inside = n1 - n0 >= NORM_INSIDE_ROWS
    if norm and not inside:
        normalise_inputs(xp, col, hidden, d, xhat, rstd_x, lengths, n0, n1)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        masked_product(h, rmask, hm, w_hh_t, z, n0, n1, gemm)
        for n in range(n0, n1):
            if t >= lengths[n]:
                out[t, n, col : col + hidden] = zero
                act[t, n, col : col + hidden] = zero
                hprev[t, n, col : col + hidden] = zero
                if norm:
                    xhat[t, n, col : col + hidden] = zero
                    zhat[t, n, col : col + hidden] = zero
                continue
            copy(hprev[t, n, col : col + hidden], hm[n])
            zn, x_t, a = z[n - n0, :hidden], xp[t, n, col : col + hidden], act[t, n, col : col + hidden]
            if norm:
                xh, zh = xhat[t, n, col : col + hidden], zhat[t, n, col : col + hidden]
                if inside:
                    rstd_x[t, n, d] = normalise(x_t, xh)
                rstd_z[t, n, d] = normalise(zn, zh)
                for k in range(hidden):
                    a[k] = g_ih[k] * xh[k] + b_in[k] + g_hh[k] * zh[k]
            else:
                for k in range(hidden):
                    a[k] = x_t[k] + zn[k]
            hn, o_row = h[n], out[t, n, col : col + hidden]
            for k in range(hidden):
                a[k] = max(a[k], zero) if relu else tanh(a[k])
                candidate = a[k]
                if zoned:
                    m = zmask[t, n, k]
                    candidate = m * hn[k] + (one - m) * candidate
                hn[k] = o_row[k] = candidate
    keep_alive(scratch)


@jit
def extended_elman_backward(
    act, col, d, w_hh, g_ih, g_hh, rmask, zmask, norm, relu, xhat, rstd_x, zhat, rstd_z, grad_out, dxp, dz, dh,
    dg_ih, db_in, dg_hh, lengths, reverse, n0, n1, gemm,
):
    """Back-propagate through :func:`extended_elman_forward`, last step first:
    ``dxp (T, N, D*H)`` receives ``dL/d xp``, ``dz`` ``dL/d W_hh (m ⊙ h_(t-1))``
    (the caller passes ``dxp`` again without layer norm); ``dh (N, H)``:
    ``dL/dh_n`` on entry, ``dL/dh_0`` on return; ``dg_ih``, ``db_in``,
    ``dg_hh (N, H)``, zeros on entry (with layer norm; else no rows), receive
    each row's share of the gains' and the input bias's gradients, summed over
    its steps (the caller sums the rows)."""
    steps, hidden = act.shape[0], dh.shape[1]
    zero, one = dh.dtype.type(0), dh.dtype.type(1)
    zoned = zmask.shape[0] > 0
    scratch = np.empty((n1 - n0, w_hh.shape[1]), dtype=dh.dtype)
    back = unowned(scratch)
    act, g_ih, g_hh, rmask, zmask = unowned(act), unowned(g_ih), unowned(g_hh), unowned(rmask), unowned(zmask)
    xhat, rstd_x, zhat, rstd_z = unowned(xhat), unowned(rstd_x), unowned(zhat), unowned(rstd_z)
    grad_out, dxp, dz, dh, dg_hh = unowned(grad_out), unowned(dxp), unowned(dz), unowned(dh), unowned(dg_hh)
    dg_ih, db_in, lengths = unowned(dg_ih), unowned(db_in), unowned(lengths)
    w_hh = unowned(w_hh)
    inside = n1 - n0 >= NORM_INSIDE_ROWS
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        for n in range(n0, n1):
            a, da = act[t, n, col : col + hidden], dxp[t, n, col : col + hidden]
            dzn = dz[t, n, col : col + hidden]
            if t >= lengths[n]:
                da[:] = zero
                dzn[:] = zero
                continue
            gy, dhn = grad_out[t, n, col : col + hidden], dh[n]
            for k in range(hidden):  # (one loop with the tests inside measured faster than a loop per case)
                total = dhn[k] + gy[k]
                if zoned:
                    m = zmask[t, n, k]
                    dht = (one - m) * total
                    dhn[k] = m * total
                else:
                    dht = total
                    dhn[k] = zero
                slope = (one if a[k] > zero else zero) if relu else one - a[k] * a[k]
                da[k] = dht * slope
            if norm:
                zh, dg = zhat[t, n, col : col + hidden], dg_hh[n]
                for k in range(hidden):
                    dg[k] += da[k] * zh[k]
                normalise_backward(da, g_hh, zh, rstd_z[t, n, d], dzn)
                if inside:
                    input_norm_backward(da, g_ih, xhat[t, n, col : col + hidden], rstd_x[t, n, d], dg_ih[n], db_in[n])
        add_masked_product(dz[t], col, w_hh, back, rmask, dh, n0, n1, gemm)
    if norm and not inside:
        inputs_norm_backward(dxp, col, hidden, d, g_ih, xhat, rstd_x, dg_ih, db_in, lengths, reverse, n0, n1)
    keep_alive(scratch)
