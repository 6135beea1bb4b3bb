"""Fit the rational tanh of ``rnnkit/kernels/numba_ops.py``; prints its coefficients.

``tanh(x) ~ x P(s) / Q(s)`` with ``s = x^2`` on ``0 <= x <= c``, ``Q(0) = 1``,
minimising the largest relative error. Method: linearised weighted least
squares on Chebyshev nodes (Sanathanan-Koerner: divide each residual by the
previous ``Q``), with Lawson's reweighting towards the points of largest
error, which drives the fit towards the minimax one. Done in 50-digit
arithmetic (mpmath, which torch installs through sympy) so that the float64
fit is not limited by the solver.

    python tools/fit_tanh.py 9.02 4 4     # float32: 2.1e-8
    python tools/fit_tanh.py 19.1 9 9     # float64: 7.2e-17
"""

from __future__ import annotations

import sys

import mpmath as mp

mp.mp.dps = 50


def fit(c: float, m: int, n: int, nodes: int = 400, iterations: int = 60):
    """Coefficients of ``P`` (degree ``m``) and ``Q`` (degree ``n``) in ``s``,
    lowest first, and the largest relative error on a dense grid."""
    c2 = mp.mpf(c) ** 2
    # nodes in u = s / c^2, in [0, 1], where the basis u^i is well conditioned
    us = [(1 - mp.cos(mp.pi * (k + mp.mpf(1) / 2) / nodes)) / 2 for k in range(nodes)]

    def f(u):  # tanh(x) / x as a function of u
        x = mp.sqrt(c2 * u)
        return mp.mpf(1) if x == 0 else mp.tanh(x) / x

    fs = [f(u) for u in us]
    weights = [mp.mpf(1)] * nodes
    q_previous = [mp.mpf(1)] * nodes
    for iteration in range(iterations):
        a, b = mp.matrix(nodes, m + 1 + n), mp.matrix(nodes, 1)
        for k, u in enumerate(us):
            scale = mp.sqrt(weights[k]) / (fs[k] * q_previous[k])
            for i in range(m + 1):
                a[k, i] = scale * u**i
            for j in range(1, n + 1):
                a[k, m + j] = -scale * fs[k] * u**j
            b[k] = scale * fs[k]
        solution, _ = mp.qr_solve(a, b)
        p = [solution[i] for i in range(m + 1)]
        q = [mp.mpf(1)] + [solution[m + j] for j in range(1, n + 1)]
        q_previous = [mp.polyval(q[::-1], u) for u in us]
        errors = [abs(mp.polyval(p[::-1], u) / q_previous[k] - fs[k]) / fs[k] for k, u in enumerate(us)]
        if iteration > 5:  # Lawson: weigh each node by its error
            total = sum(w * e for w, e in zip(weights, errors))
            weights = [w * e / total for w, e in zip(weights, errors)]
    dense = [mp.mpf(i) / 4000 for i in range(4001)]
    worst = max(abs(mp.polyval(p[::-1], u) / mp.polyval(q[::-1], u) - f(u)) / f(u) for u in dense)
    return [v / c2**i for i, v in enumerate(p)], [v / c2**j for j, v in enumerate(q)], worst


if __name__ == "__main__":
    c, m, n = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    p, q, worst = fit(c, m, n)
    print(f"largest relative error {mp.nstr(worst, 3)}")
    print("P", ", ".join(repr(float(v)) for v in p))
    print("Q", ", ".join(repr(float(v)) for v in q))
