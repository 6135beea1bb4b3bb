"""The fused backend against the reference: outputs, final states and every
gradient, configuration by configuration; then the backend choice itself."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass

import numba
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.kernels import blas, dense, fused, fused_common, numba_ops, parallel, reference
from rnnkit.kernels.numba_ops import ROW_BLOCK
from rnnkit.kernels.reference import DirectionWeights
from rnnkit.kinds import KINDS, cell_of

from equivalence import layer_options



def _one_per_loops() -> tuple[str, ...]:
    first: dict[str | None, str] = {}
    for key, kind in KINDS.items():
        first.setdefault(kind.fused, key)
    return tuple(first.values())


ONE_PER_LOOPS = _one_per_loops()
"""One kind for each fused module (tanh and ReLU share their loops)."""


TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-10)}


def assert_close(actual, expected, name=""):
    torch.testing.assert_close(actual, expected, **TOLERANCE[expected.dtype], msg=f"{name} differs")


@dataclass(frozen=True)
class Case:
    """One call of ``run_layer``: its configuration and input sizes."""

    kind: str = "rnn_tanh"
    directions: int = 1
    bias: bool = True
    dtype: torch.dtype = torch.float64
    lengths: tuple[int, ...] | None = None  # None: every sequence has all T steps
    random_h0: bool = True  # random h_0 (and c_0), else zeros
    steps: int = 7
    batch: int = 5
    input_size: int = 3
    hidden: int = 6
    proj: int = 0  # an LSTM's proj_size

    @property
    def width(self) -> int:
        """Features of ``h``: the projection's, else the hidden size."""
        return self.proj or self.hidden

    def __str__(self) -> str:
        return (
            f"{self.kind}-D{self.directions}-{'bias' if self.bias else 'nobias'}-"
            f"{str(self.dtype)[6:]}-len{self.lengths}-{'h0' if self.random_h0 else 'zeros'}-"
            f"T{self.steps}N{self.batch}H{self.hidden}" + (f"P{self.proj}" if self.proj else "")
        )


VARIABLE = (7, 1, 4, 7, 2)  # a length equal to T, a length 1, the rest in between

CASES = [
    Case(kind, directions, bias, dtype, lengths, random_h0)
    for kind, directions, bias, dtype in itertools.product(
        tuple(KINDS), (1, 2), (True, False), (torch.float32, torch.float64)
    )
    for lengths, random_h0 in ((None, True), (VARIABLE, False))
] + [
    Case("lstm", directions, bias, dtype, lengths, random_h0, proj=2)
    for directions, bias, dtype, (lengths, random_h0) in [
        (1, True, torch.float64, (None, True)),
        (2, True, torch.float64, (VARIABLE, True)),
        (2, False, torch.float32, (VARIABLE, False)),
        (1, False, torch.float32, (None, False)),
    ]
] + [
    case
    for kind in ONE_PER_LOOPS
    for case in [
        Case(kind, steps=1, batch=1),
        Case(kind, steps=1, directions=2, lengths=(1, 1, 1, 1, 1)),
        Case(kind, batch=1, directions=2, lengths=(4,), steps=4),
        Case(kind, lengths=(7, 0, 3, 7, 5), directions=2),  # a sequence with no step at all
        # several blocks of four batch rows plus a remainder, and a hidden size
        # that fills whole vectors and leaves a tail
        Case(kind, dtype=torch.float32, directions=2, batch=11, hidden=33, lengths=(9,) * 6 + (3,) * 5,
             steps=9),
        Case(kind, dtype=torch.float32, batch=9, hidden=64, input_size=16, steps=12),
    ]
] + [
    Case(kind="rnn_relu", batch=1, steps=40),
    Case(kind="lstm", batch=3, steps=40, hidden=8, proj=5, directions=2, lengths=(40, 17, 1)),
]


def make_inputs(case: Case, requires_grad: bool = True):
    """Random ``x``, state (``(h0,)`` or ``(h0, c0)``), weights and lengths for ``case``, as leaves."""
    g = torch.Generator().manual_seed(zlib.crc32(str(case).encode()))

    def rand(*shape, scale=1.0):
        t = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * scale
        return t.to(case.dtype).requires_grad_(requires_grad)

    bound = case.hidden**-0.5
    rows = len(cell_of(case.kind).gates) * case.hidden
    weights = [
        DirectionWeights(
            rand(rows, case.input_size, scale=bound),
            rand(rows, case.width, scale=bound),
            rand(rows, scale=bound) if case.bias else None,
            rand(rows, scale=bound) if case.bias else None,
            rand(case.proj, case.hidden, scale=bound) if case.proj else None,
        )
        for _ in range(case.directions)
    ]
    x = rand(case.steps, case.batch, case.input_size)
    sizes = [case.width] + [case.hidden] * (len(cell_of(case.kind).state) - 1)
    state = tuple(rand(case.directions, case.batch, size) for size in sizes)
    if not case.random_h0:
        state = tuple(torch.zeros_like(s).requires_grad_(requires_grad) for s in state)
    lengths = None if case.lengths is None else torch.tensor(case.lengths)
    return x, state, weights, lengths


def leaves(x, state, weights):
    return [x, *state] + [t for w in weights for t in w if t is not None]


def leaf_names(case: Case) -> list[str]:
    parts = cell_of(case.kind).state
    names = ["output"] + [f"{p}_n" for p in parts] + ["x"] + [f"{p}0" for p in parts]
    fields = ("w_ih", "w_hh") + (("b_ih", "b_hh") if case.bias else ()) + (("w_hr",) if case.proj else ())
    return names + [f"{name}[{d}]" for d in range(case.directions) for name in fields]


def forward_and_grads(run_layer, case: Case, inputs):
    """Output, final state and the gradients of a loss that weighs every
    element of them differently, with respect to every leaf."""
    x, state, weights, lengths = inputs
    output, final = run_layer(case.kind, x, state, weights, lengths)
    g = torch.Generator().manual_seed(7)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=case.dtype)).sum() for t in (output, *final))
    grads = torch.autograd.grad(loss, leaves(x, state, weights))
    return [output.detach(), *(s.detach() for s in final), *grads]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fused_matches_reference(case):
    inputs = make_inputs(case)
    ours = forward_and_grads(fused.run_layer, case, inputs)
    expected = forward_and_grads(reference.run_layer, case, inputs)
    names = leaf_names(case)
    assert len(names) == len(ours) == len(expected)
    for name, a, b in zip(names, ours, expected):
        assert a.dtype == case.dtype, name
        assert_close(a, b, name)


@pytest.mark.parametrize("kind", ONE_PER_LOOPS)
def test_output_is_zero_past_each_length_and_h_n_is_taken_at_the_last_step(kind):
    case = Case(kind, directions=2, lengths=VARIABLE)
    x, state, weights, lengths = make_inputs(case, requires_grad=False)
    output, (h_n, *_) = fused.run_layer(case.kind, x, state, weights, lengths)
    for n, length in enumerate(case.lengths):
        assert torch.all(output[length:, n] == 0)
        assert torch.equal(h_n[0, n], output[length - 1, n, : case.hidden])
        assert torch.equal(h_n[1, n], output[0, n, case.hidden :])


@pytest.mark.parametrize(
    "case",
    [Case("lstm", dtype=torch.float32, directions=2, lengths=VARIABLE, proj=4),
     Case("gru", dtype=torch.float32, directions=2, lengths=VARIABLE)],
    ids=str,
)
def test_inference_gives_what_training_gives(case):
    """Without autograd the loops keep nothing for a backward pass (scratch
    rows instead of every step's gates): the same numbers, bit for bit."""
    inputs = make_inputs(case)
    x, state, weights, _ = inputs
    with torch.no_grad():
        assert not fused_common.backward_may_follow(*leaves(x, state, weights))
        output, final = fused.run_layer(case.kind, *inputs)
    expected, expected_final = fused.run_layer(case.kind, *inputs)
    assert not output.requires_grad and expected.requires_grad
    for a, b in zip((output, *final), (expected, *expected_final)):
        assert torch.equal(a, b.detach())


AUTOGRAD_CASES = [
    Case("rnn_tanh", directions=2, lengths=VARIABLE),
    Case("lstm", directions=2, lengths=VARIABLE, proj=4),
    Case("gru", directions=2, lengths=VARIABLE),
]


@pytest.mark.parametrize("case", AUTOGRAD_CASES, ids=str)
def test_a_second_backward_through_the_same_graph_gives_the_same_gradients(case):
    """The LSTM and GRU backward loops overwrite the saved activations with
    gradients; retain_graph=True must still work (the forward loop reruns)."""
    x, state, weights, lengths = inputs = make_inputs(case)
    output, final = fused.run_layer(case.kind, *inputs)
    loss = output.square().sum() + sum(s.square().sum() for s in final)
    first = torch.autograd.grad(loss, leaves(x, state, weights), retain_graph=True)
    second = torch.autograd.grad(loss, leaves(x, state, weights))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", AUTOGRAD_CASES, ids=str)
def test_changing_the_output_in_place_leaves_backward_right(case):
    inputs = make_inputs(case)
    results = []
    for run_layer in (fused.run_layer, reference.run_layer):
        output, _ = run_layer(case.kind, *inputs)
        output.mul_(2)
        results.append(torch.autograd.grad(output.square().sum(), leaves(*inputs[:3])))
    for a, b in zip(*results):
        assert_close(a, b)


@pytest.mark.parametrize("case", AUTOGRAD_CASES, ids=str)
def test_a_differentiable_backward_matches_the_reference(case):
    """create_graph=True (a gradient penalty): the fused layer's backward
    then goes through the reference, so its gradient can be differentiated."""
    x, state, weights, lengths = inputs = make_inputs(case)
    results = []
    for run_layer in (fused.run_layer, reference.run_layer):
        output, _ = run_layer(case.kind, *inputs)
        (grad_x,) = torch.autograd.grad(output.sum(), x, create_graph=True)
        penalty = output.square().sum() + grad_x.square().sum()
        results.append(torch.autograd.grad(penalty, leaves(x, state, weights)))
    for a, b in zip(*results):
        assert_close(a, b)


@pytest.mark.parametrize(
    "case",
    [
        Case(directions=2, lengths=(4, 2, 3), steps=4, batch=3, hidden=3, input_size=2),
        Case("lstm", directions=2, lengths=(4, 2, 3), steps=4, batch=3, hidden=3, input_size=2, proj=2),
        Case("lstm", lengths=(4, 1, 3), steps=4, batch=3, hidden=3, input_size=2, random_h0=False),
        Case("gru", directions=2, lengths=(4, 2, 3), steps=4, batch=3, hidden=3, input_size=2),
    ],
    ids=str,
)
def test_gradcheck(case):
    x, state, weights, lengths = make_inputs(case)

    def f(x, *tensors):
        given, params = tensors[: len(state)], iter(tensors[len(state) :])
        rebuilt = [DirectionWeights(*(None if t is None else next(params) for t in w)) for w in weights]
        output, final = fused.run_layer(case.kind, x, given, rebuilt, lengths)
        return output, *final

    assert torch.autograd.gradcheck(f, tuple(leaves(x, state, weights)))


@pytest.mark.parametrize("kind", ONE_PER_LOOPS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("directions, batch, steps", [(2, 13, 50), (1, 4, 200)])
def test_bitwise_deterministic_whatever_the_thread_count(kind, threads, directions, batch, steps):
    """Two runs agree bit for bit, and so do one and two threads: batch chunks
    start at multiples of ROW_BLOCK, and each row meets the same arithmetic
    in every tile (batch 4 on two threads: two tiles of two rows, against one
    of four on one thread)."""
    case = Case(kind, dtype=torch.float32, directions=directions, steps=steps, batch=batch, hidden=64, input_size=8)
    inputs = make_inputs(case)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = forward_and_grads(fused.run_layer, case, inputs)
        torch.set_num_threads(threads)
        pieces, used = parallel.plan(directions, case.batch, case.steps * case.hidden**2)
        assert used == threads and len(pieces) == max(threads, directions)
        first = forward_and_grads(fused.run_layer, case, inputs)
        second = forward_and_grads(fused.run_layer, case, inputs)
    finally:
        torch.set_num_threads(previous)
    for a, b, c in zip(first, second, single):
        assert torch.equal(a, b)
        assert torch.equal(a, c)


@pytest.mark.parametrize(
    "directions, batch, threads", [(1, 1, 2), (1, 13, 2), (2, 13, 2), (2, 40, 4), (1, 40, 3), (2, 3, 1)]
)
@pytest.mark.parametrize("row_block", [ROW_BLOCK, blas.BLAS_ROWS])
def test_the_plan_covers_every_row_once_in_aligned_chunks(directions, batch, threads, row_block, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    pieces, used = parallel.plan(directions, batch, work_per_row=10**9, row_block=row_block)
    assert 1 <= used <= threads
    for d in range(directions):
        rows = [n for p in pieces if p.d == d for n in range(p.n0, p.n1)]
        assert rows == list(range(batch))
    assert all(p.n0 % row_block == 0 for p in pieces)


def test_small_work_stays_on_the_calling_thread(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert parallel.plan(2, 4, work_per_row=100)[1] == 1


PRODUCTS = ["none", *blas.available()]
"""Every way the loops can do their per-step products here: numba's own
``matmul_rows`` (``RNNKIT_BLAS=none``) and each BLAS found."""

PRODUCT_CASES = [
    Case(mode, directions, bias, dtype, lengths, steps=6, batch=37, hidden=hidden, input_size=5, proj=proj)
    for mode, proj, hidden in [
        ("rnn_tanh", 0, 9), ("rnn_relu", 0, 9), ("lstm", 0, 9), ("lstm", 4, 9), ("gru", 0, 9),
    ]
    for directions, bias, dtype, lengths in [
        (1, True, torch.float64, None),
        (2, True, torch.float32, (6,) * 20 + (3, 1, 0) + (5,) * 14),
        (2, False, torch.float64, (1,) + (6,) * 36),
    ]
]
"""Batches of more than two blocks of ``BLAS_ROWS`` rows and a remainder."""


@pytest.mark.parametrize("calls", ["8 rows", "16 rows", "32 rows"])
@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=str)
def test_every_product_path_matches_reference(case, product, calls, monkeypatch):
    monkeypatch.setenv("RNNKIT_BLAS", product)
    if calls == "8 rows":  # as for a batch too small for two blocks of 16
        monkeypatch.setattr(blas, "BLAS_ROWS", 64)
    if calls == "32 rows":  # as for weights beyond a core's cache
        monkeypatch.setattr(blas, "LARGE_WEIGHTS_BYTES", 0)
    assert (blas.per_step_gemm(case.dtype == torch.float64, case.batch, 1, 64, 256)[1] == blas.TILES) == (product == "none")
    inputs = make_inputs(case)
    ours = forward_and_grads(fused.run_layer, case, inputs)
    expected = forward_and_grads(reference.run_layer, case, inputs)
    for name, a, b in zip(leaf_names(case), ours, expected):
        assert_close(a, b, name)


@pytest.mark.parametrize("calls", [8, 16, 32])
@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_every_product_path_is_bitwise_deterministic_whatever_the_thread_count(mode, product, calls, monkeypatch):
    """With BLAS, the batch goes to threads in whole blocks of rows (8 for a
    batch of under 32, 16, or 32 for large weights), and each block is one
    BLAS call, whatever the split."""
    monkeypatch.setenv("RNNKIT_BLAS", product)
    if calls == 32:
        monkeypatch.setattr(blas, "LARGE_WEIGHTS_BYTES", 0)
    case = Case(mode, dtype=torch.float32, steps=120, batch={8: 20, 16: 40, 32: 80}[calls], hidden=33, input_size=8)
    if product != "none":
        assert blas.per_step_gemm(False, case.batch, 1, case.hidden, 4 * case.hidden)[1][1] == calls
    inputs = make_inputs(case)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = forward_and_grads(fused.run_layer, case, inputs)
        torch.set_num_threads(2)
        rows = ROW_BLOCK if product == "none" else calls
        pieces, threads = parallel.plan(1, case.batch, case.steps * len(cell_of(mode).gates) * case.hidden**2, rows)
        assert threads == 2 and len(pieces) == 2
        split = forward_and_grads(fused.run_layer, case, inputs)
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(split, single):
        assert torch.equal(a, b)


def test_the_automatic_choice_depends_on_the_shape_only(monkeypatch):
    monkeypatch.delenv("RNNKIT_BLAS", raising=False)
    shapes = itertools.product((False, True), (1, 4, 16, 32, 64), (1, 2), [(32, 128), (64, 64), (64, 256), (512, 2048)])
    for double, batch, directions, (inner, outer) in shapes:
        library, (address, rows) = blas.per_step_gemm(double, batch, directions, inner, outer)
        assert (library is None) == (address == 0)
        if library is None:
            assert rows == 0
            continue
        assert address == library.gemm(double) and library.name == "mkl" and blas.INTEL
        if inner * outer * (8 if double else 4) > blas.LARGE_WEIGHTS_BYTES:
            assert rows == blas.LARGE_BLAS_ROWS
        else:
            assert rows == (blas.BLAS_ROWS if batch * directions >= 2 * blas.BLAS_ROWS else blas.SMALL_BLAS_ROWS)
        # never fewer than two blocks of rows (numba's tiles split smaller batches in pairs), nor a narrow W_hh
        assert batch * directions >= 2 * rows and inner * outer >= blas.MKL_MIN_WEIGHTS
    big = blas.per_step_gemm(False, 64, 1, 512, 2048)[0]
    assert (big is not None) == (blas.INTEL and blas.torch_mkl() is not None)


@pytest.mark.parametrize("double", [False, True])
def test_blas_calls_take_fewer_rows_for_small_batches_and_more_for_weights_beyond_a_cache(double, monkeypatch):
    monkeypatch.setenv("RNNKIT_BLAS", next(iter(blas.available())))
    assert blas.per_step_gemm(double, 4, 1, 64, 256)[1][1] == blas.SMALL_BLAS_ROWS
    assert blas.per_step_gemm(double, 16, 2, 64, 256)[1][1] == blas.BLAS_ROWS
    assert blas.per_step_gemm(double, 4, 1, 512, 2048)[1][1] == blas.LARGE_BLAS_ROWS


def test_an_unknown_blas_is_refused(monkeypatch):
    monkeypatch.setenv("RNNKIT_BLAS", "atlas")
    with pytest.raises(ValueError, match="RNNKIT_BLAS='atlas': expected 'none' or one of"):
        blas.per_step_gemm(False, 64, 1, 64, 256)


@pytest.mark.parametrize("name", list(blas.available()))
def test_one_blas_thread_inside_and_the_setting_restored_after(name):
    """Inside ``one_thread`` the BLAS runs on one thread; afterwards it has
    its thread count back."""
    library = blas.available()[name]
    before = _blas_threads(name)
    with library.one_thread():
        assert _blas_threads(name) == 1
        with library.one_thread():  # nested, as concurrent pieces are
            assert _blas_threads(name) == 1
        assert _blas_threads(name) == 1
    assert _blas_threads(name) == before


def _blas_threads(name: str) -> int:
    """The thread count ``name`` would use now, on this thread."""
    if name == "mkl":
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        return lib.MKL_Get_Max_Threads()
    get_threads, _ = blas._openblas_thread_setters(blas.available()["openblas"].sgemm)
    return get_threads()


def lstm_by_hand(x, state, weights, lengths):
    """torch.nn.LSTM's equations stepped in plain torch: ``(output, cells)``,
    ``cells (T, N, D*H)`` every step's ``c_t``, zeros past each length."""
    steps, batch, _ = x.shape
    lengths = torch.full((batch,), steps) if lengths is None else lengths
    outputs, cells = [], []
    for d, w in enumerate(weights):
        h, c = state[0][d], state[1][d]
        out_d, cells_d = [None] * steps, [None] * steps
        for t in reversed(range(steps)) if d == 1 else range(steps):
            z = x[t] @ w.w_ih.T + h @ w.w_hh.T
            if w.b_ih is not None:
                z = z + w.b_ih + w.b_hh
            i, f, g, o = z.chunk(4, dim=1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if w.w_hr is not None:
                h_new = h_new @ w.w_hr.T
            alive = (t < lengths)[:, None]
            c, h = torch.where(alive, c_new, c), torch.where(alive, h_new, h)
            out_d[t], cells_d[t] = h_new * alive, c_new * alive
        outputs.append(torch.stack(out_d))
        cells.append(torch.stack(cells_d))
    return torch.cat(outputs, 2), torch.cat(cells, 2)


CELLS_CASES = [
    Case("lstm", directions, True, dtype, lengths, steps=7, batch=5, hidden=6, proj=proj)
    for directions, dtype, lengths, proj in [
        (1, torch.float64, None, 0),
        (2, torch.float64, VARIABLE, 0),
        (2, torch.float64, VARIABLE, 3),
        (1, torch.float32, (7, 0, 3, 7, 5), 3),
        (2, torch.float32, None, 0),
    ]
]


@pytest.mark.parametrize("case", CELLS_CASES, ids=str)
def test_the_lstm_returns_every_cell_state_and_back_propagates_through_them(case):
    x, state, weights, lengths = make_inputs(case)
    output, final, cells = fused.run_layer("lstm", x, state, weights, lengths, return_cells=True)
    expected_output, expected_cells = lstm_by_hand(x, state, weights, lengths)
    assert cells.shape == (case.steps, case.batch, case.directions * case.hidden)
    assert_close(output, expected_output, "output")
    assert_close(cells, expected_cells, "cells")
    g = torch.Generator().manual_seed(5)
    weigh_out = torch.randn(output.shape, generator=g, dtype=case.dtype)
    weigh_cells = torch.randn(cells.shape, generator=g, dtype=case.dtype)
    wrt = leaves(x, state, weights)
    ours = torch.autograd.grad((output * weigh_out).sum() + (cells * weigh_cells).sum(), wrt, retain_graph=True)
    theirs = torch.autograd.grad((expected_output * weigh_out).sum() + (expected_cells * weigh_cells).sum(), wrt)
    for name, a, b in zip(leaf_names(case)[len(final) + 1 :], ours, theirs):
        assert_close(a, b, name)
    kept = cells.detach().clone()
    again = torch.autograd.grad((cells * weigh_cells).sum() + (output * weigh_out).sum(), wrt)
    assert torch.equal(cells, kept)  # the backward loop's in-place work does not reach the caller's cells
    for name, a, b in zip(leaf_names(case)[len(final) + 1 :], again, theirs):
        assert_close(a, b, name)


def test_cells_without_autograd_are_the_same_cells():
    case = CELLS_CASES[2]
    x, state, weights, lengths = make_inputs(case, requires_grad=False)
    _, _, cells = fused.run_layer("lstm", x, state, weights, lengths, return_cells=True)
    assert_close(cells, lstm_by_hand(x, state, weights, lengths)[1], "cells")


@pytest.mark.parametrize("mode", ["rnn_tanh", "rnn_relu", "gru"])
def test_cells_are_the_lstm_s_only(mode):
    x, state, weights, lengths = make_inputs(Case(mode))
    with pytest.raises(ValueError, match=f"return_cells=True is for the LSTM only .* not '{mode}'"):
        fused.run_layer(mode, x, state, weights, lengths, return_cells=True)


# -- through the layers -------------------------------------------------------------------


def run_module(module, input, hx):
    """Output, final state and the gradients of input, hx and every parameter."""
    module.zero_grad()
    output, final = module(input, hx)
    data = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    final = final if isinstance(final, tuple) else (final,)
    g = torch.Generator().manual_seed(3)
    loss = (data * torch.randn(data.shape, generator=g, dtype=data.dtype)).sum()
    loss = loss + sum(s.square().sum() for s in final)
    loss.backward()
    return [data.detach(), *(s.detach() for s in final)] + [p.grad.clone() for p in module.parameters()]


def both_backends(module, make_input, hx):
    """``run_module`` under each backend, forced, with the same dropout masks."""
    results = {}
    for name in ("fused", "reference"):
        torch.manual_seed(11)
        with kernels.use_backend(name):
            results[name] = run_module(module, make_input(), hx)
    return results["fused"], results["reference"]


LAYERS = {
    "-".join([layer.lower(), *map(str, options.values())]): (getattr(rnnkit, layer), options)
    for layer, variants in layer_options(proj_size=3).items()
    for options in variants
}


def make_layer(kind: str, dtype: torch.dtype, **options):
    """A layer of ``kind`` with 4 input and 6 hidden features, and a random
    ``hx`` maker for it, ``hx(stacked, batch)``."""
    cls, more = LAYERS[kind]
    layer = cls(4, 6, dtype=dtype, **more, **options)
    sizes = [more.get("proj_size", 6)] + [6] * (len(layer.state_names) - 1)

    def hx(stacked: int, batch: int):
        parts = tuple(torch.randn(stacked, batch, size, dtype=dtype) for size in sizes)
        return parts if len(parts) > 1 else parts[0]

    return layer, hx


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stacked_bidirectional_layer_with_dropout(kind, dtype):
    layer, hx = make_layer(
        kind, dtype, num_layers=3, bidirectional=True, dropout=0.3, batch_first=True
    )
    x = torch.randn(5, 8, 4, dtype=dtype)
    ours, expected = both_backends(layer, lambda: x, hx(6, 5))
    for a, b in zip(ours, expected):
        assert_close(a, b)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_packed_input(kind):
    layer, hx = make_layer(kind, torch.float64, num_layers=2, bidirectional=True)
    x = torch.randn(7, 4, 4, dtype=torch.float64)
    lengths = torch.tensor([3, 7, 1, 5])
    ours, expected = both_backends(
        layer, lambda: pack_padded_sequence(x, lengths, enforce_sorted=False), hx(4, 4)
    )
    for a, b in zip(ours, expected):
        assert_close(a, b)


def test_the_tanh_of_the_loops_is_within_a_few_ulp():
    """With ``W_hh = 0`` and ``W_ih = I`` a step is ``tanh(x)``: compare with
    torch's tanh in float64 over the whole range, saturation included."""
    for dtype, tolerance in ((torch.float32, 8 * 2.0**-24), (torch.float64, 8 * 2.0**-53)):
        x = torch.linspace(-25, 25, 200_001, dtype=dtype).reshape(1, -1, 1)
        x = torch.cat([x, torch.logspace(-30, 1, 1001, dtype=dtype).reshape(1, -1, 1)], dim=1)
        identity, zero = torch.ones(1, 1, dtype=dtype), torch.zeros(1, 1, dtype=dtype)
        weights = [DirectionWeights(identity, zero, None, None)]
        h0 = torch.zeros(1, x.shape[1], 1, dtype=dtype)
        with torch.no_grad():
            y, _ = fused.run_layer("rnn_tanh", x, (h0,), weights, None)
        exact = torch.tanh(x.double())
        assert torch.all((y.double() - exact).abs() <= tolerance * exact.abs().clamp(min=2.0**-126))
        assert torch.all(y.abs() <= 1)


def test_the_sigmoid_of_the_loops_is_within_a_few_ulp():
    """A GRU step with ``W_hh = 0``, no bias, ``h_0 = 1`` and an input that
    reaches only the update gate is ``h' = n + z (1 - n)`` with ``n = tanh(0) = 0``,
    that is ``sigmoid(x)`` exactly: compare with torch's in float64 over the
    whole range. Below the smallest normal number the loops promise only to
    be within it."""
    for dtype, tolerance, tiny in (
        (torch.float32, 4 * 2.0**-24, 2.0**-126), (torch.float64, 5 * 2.0**-53, 2.0**-1022)
    ):
        x = torch.linspace(-800, 50, 400_001, dtype=dtype).reshape(1, -1, 1)
        x = torch.cat([x, torch.logspace(-30, 1, 1001, dtype=dtype).reshape(1, -1, 1)], dim=1)
        x = torch.cat([x, -x], dim=1)
        w_ih = torch.tensor([[0.0], [1.0], [0.0]], dtype=dtype)  # rows: r, z, n
        weights = [DirectionWeights(w_ih, torch.zeros(3, 1, dtype=dtype), None, None)]
        h0 = torch.ones(1, x.shape[1], 1, dtype=dtype)
        with torch.no_grad():
            y, _ = fused.run_layer("gru", x, (h0,), weights, None)
        exact = torch.sigmoid(x.double())
        error = (y.double() - exact).abs()
        normal = exact >= tiny
        assert torch.all(error[normal] <= tolerance * exact[normal])
        assert torch.all(error[~normal] <= tiny)
        assert torch.all((y >= 0) & (y <= 1))


# -- which backend runs -------------------------------------------------------------------


def weights_like(x: torch.Tensor, hidden: int = 3, **more) -> list[DirectionWeights]:
    w = lambda *shape: torch.zeros(shape, dtype=x.dtype, device=x.device)  # noqa: E731
    return [DirectionWeights(w(hidden, x.shape[-1]), w(hidden, hidden), w(hidden), w(hidden), **more)]


@pytest.mark.parametrize(
    "kind, dtype, device, projection, expected",
    [
        ("rnn_tanh", torch.float32, "cpu", False, "fused"),
        ("rnn_relu", torch.float64, "cpu", False, "fused"),
        ("rnn_tanh", torch.bfloat16, "cpu", False, "reference"),
        ("rnn_tanh", torch.float32, "meta", False, "reference"),  # stands in for CUDA
        ("lstm", torch.float32, "cpu", False, "fused"),
        ("lstm", torch.float64, "cpu", True, "fused"),
        ("gru", torch.float32, "cpu", False, "fused"),
        ("gru", torch.float16, "cpu", False, "reference"),
    ],
)
def test_auto_picks_fused_where_it_serves_and_the_reference_elsewhere(
    kind, dtype, device, projection, expected
):
    x = torch.zeros(2, 2, 4, dtype=dtype, device=device)
    hr = torch.zeros(2, 3, dtype=dtype, device=device) if projection else None
    assert kernels.select_backend(kind, x, weights_like(x, w_hr=hr)).name == expected


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_auto_gives_a_one_step_call_to_the_reference_and_longer_ones_to_fused(mode):
    """One step (streaming, decoding) costs less through the reference's few
    ops than through the fused Function; a forced backend still runs it."""
    one, two = torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)
    assert kernels.select_backend(mode, one, weights_like(one)).name == "reference"
    assert kernels.select_backend(mode, two, weights_like(two)).name == "fused"
    with kernels.use_backend("fused"):
        assert kernels.select_backend(mode, one, weights_like(one)).name == "fused"


def test_autocast_and_torch_func_transforms_go_to_the_reference():
    """The loops read raw memory: under autocast the input projection would
    change dtype beneath them, and torch.func's tensors are wrappers."""
    x = torch.zeros(2, 2, 4)
    assert kernels.select_backend("gru", x, weights_like(x)).name == "fused"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.select_backend("gru", x, weights_like(x)).name == "reference"
    chosen = []

    def loss(x):
        chosen.append(kernels.select_backend("gru", x, weights_like(x)).name)
        return x.sum()

    torch.func.grad(loss)(x)
    assert chosen == ["reference"]


def test_the_environment_variable_forces_the_reference():
    """Read when rnnkit.kernels is imported: a fresh process with it set."""
    script = (
        "import torch, rnnkit\n"
        "from rnnkit import kernels\n"
        "from rnnkit.kernels.reference import DirectionWeights\n"
        "x = torch.zeros(2, 2, 4)\n"
        "w = DirectionWeights(torch.zeros(3, 4), torch.zeros(3, 3))\n"
        "print(kernels.select_backend('rnn_tanh', x, [w]).name)\n"
    )
    for value, expected in (("reference", "reference"), ("auto", "fused")):
        env = dict(os.environ, RNNKIT_BACKEND=value)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert done.stdout.strip() == expected


def test_forcing_a_backend_that_cannot_serve_the_call_raises():
    layer = rnnkit.RNN(4, 3).to(torch.bfloat16)
    with kernels.use_backend("fused"):
        with pytest.raises(kernels.UnsupportedCall, match=r"'fused' cannot run this rnn_tanh call: .*bfloat16"):
            layer(torch.zeros(2, 1, 4, dtype=torch.bfloat16))
    with kernels.use_backend("reference"):  # the reference serves it
        assert layer(torch.zeros(2, 1, 4, dtype=torch.bfloat16))[0].shape == (2, 1, 3)


def test_warm_up_compiles_every_dtype_ahead():
    from rnnkit.kernels import elman_loops, gru_loops, lstm_loops

    fused.warm_up()
    for loop in (
        elman_loops.elman_forward, elman_loops.elman_backward, lstm_loops.lstm_forward,
        lstm_loops.lstm_backward, gru_loops.gru_forward, gru_loops.gru_backward,
    ):
        assert {sig[0].dtype.name for sig in loop.signatures} >= {"float32", "float64"}


def test_concurrent_callers_growing_the_pool_all_finish():
    """Python threads running layers at once, each with its own thread count,
    while the shared pool grows under them."""
    import concurrent.futures

    def call(threads: int) -> list[parallel.Piece]:
        seen: list[parallel.Piece] = []
        pieces = [parallel.Piece(0, n, n + 1) for n in range(8)]
        parallel.run(seen.append, pieces, threads)
        return sorted(seen)

    with concurrent.futures.ThreadPoolExecutor(8) as callers:
        results = list(callers.map(call, [2, 3, 4, 5, 6, 7, 8, 9] * 8))
    assert all(r == [parallel.Piece(0, n, n + 1) for n in range(8)] for r in results)


# -- the products themselves ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 13, 17])
@pytest.mark.parametrize("inner, width", [(1, 3), (7, 16), (33, 40), (32, 96), (64, 100), (1100, 200)])
def test_the_tiles_compute_a_times_w_for_any_rows_and_width(rows, inner, width, dtype):
    """Every tile height (8, 4, 2, 1 rows), whole and single vectors, one
    row's tiles of every width (1 to 8 vectors), padded columns, and (K =
    1100) several column panels; rows taken from inside a larger array at a
    column offset, as the loops pass them."""
    g = torch.Generator().manual_seed(rows * 1000 + inner)
    a = torch.randn(rows + 3, inner + 2, generator=g, dtype=dtype)
    w = torch.randn(inner, width, generator=g, dtype=dtype)
    (w_packed,) = fused_common.step_weights([w], dtype)
    assert w_packed.shape == (inner, numba_ops.padded_width(width, w_packed.itemsize))
    assert w_packed.ctypes.data % numba_ops.VECTOR_BYTES == 0
    res = torch.full((rows, w_packed.shape[1]), float("nan"), dtype=dtype).numpy()
    numba_ops.matmul_rows(a.numpy(), 2, w_packed, res, 1, 1 + rows)
    expected = a[1 : 1 + rows, 2:].double() @ w.double()
    tolerance = dict(rtol=1e-4, atol=1e-5 * inner) if dtype == torch.float32 else TOLERANCE[dtype]
    torch.testing.assert_close(torch.from_numpy(res[:, :width]).double(), expected, **tolerance)
    assert (res[:, width:] == 0).all()  # zero columns of w give zeros


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 3, 8, 13])
@pytest.mark.parametrize("inner, width", [(1, 3), (7, 16), (64, 100), (1100, 200)])
def test_the_tiles_add_to_a_view_of_a_wider_buffer(rows, inner, width, dtype):
    """``matmul_add_rows``: the sums start from what ``res`` holds, and only
    its first ``width`` columns change, the last ones short of a vector too,
    so ``res`` can be a step's gates inside the whole buffer."""
    g = torch.Generator().manual_seed(rows * 1000 + inner + 1)
    a = torch.randn(rows + 3, inner + 2, generator=g, dtype=dtype)
    w = torch.randn(inner, width, generator=g, dtype=dtype)
    (w_packed,) = fused_common.step_weights([w], dtype)
    buffer = torch.randn(rows + 2, width + 9, generator=g, dtype=dtype)
    before = buffer.clone()
    numba_ops.matmul_add_rows(a.numpy(), 2, w_packed, buffer.numpy()[1 : 1 + rows, 3:], 1, 1 + rows, width)
    expected = before[1 : 1 + rows, 3 : 3 + width].double() + a[1 : 1 + rows, 2:].double() @ w.double()
    tolerance = dict(rtol=1e-4, atol=1e-5 * inner) if dtype == torch.float32 else TOLERANCE[dtype]
    torch.testing.assert_close(buffer[1 : 1 + rows, 3 : 3 + width].double(), expected, **tolerance)
    untouched = torch.ones_like(buffer, dtype=torch.bool)
    untouched[1 : 1 + rows, 3 : 3 + width] = False
    assert torch.equal(buffer[untouched], before[untouched])


def test_a_row_gets_the_same_bits_in_every_tile_when_adding():
    a = torch.randn(13, 50).numpy()
    (w,) = fused_common.step_weights([torch.randn(50, 70)], torch.float32)
    start = torch.randn(13, 70).numpy()
    together = start.copy()
    numba_ops.matmul_add_rows(a, 0, w, together, 0, 13, 70)
    for n in range(13):
        alone = start[n : n + 1].copy()
        numba_ops.matmul_add_rows(a, 0, w, alone, n, n + 1, 70)
        assert (alone[0] == together[n]).all()


@numba.njit
def _row_sums(u, v):  # the building blocks are callable from compiled code only
    return numba_ops.row_sums(u, v)


@numba.njit
def _centred_squares(v, centre):
    return numba_ops.centred_squares(v, centre)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [0, 1, 7, 8, 16, 31, 64, 100, 256, 1000])
def test_row_sums_are_the_sum_and_the_dot_product_of_a_row(size, dtype):
    """Every split of a row: whole blocks of vectors, single vectors, the
    last elements one at a time; rows taken from inside a larger array at a
    column offset, as the loops pass them."""
    g = torch.Generator().manual_seed(size)
    u = torch.randn(3, size + 5, generator=g, dtype=dtype)
    v = torch.randn(3, size + 5, generator=g, dtype=dtype)
    total, dot = _row_sums(u.numpy()[1, 3 : 3 + size], v.numpy()[2, 5 : 5 + size])
    exact_total, exact_dot = u[1, 3 : 3 + size].double().sum(), (u[1, 3 : 3 + size].double() * v[2, 5:].double()).sum()
    tolerance = dict(rtol=1e-5, atol=1e-5 * max(size, 1) ** 0.5) if dtype == torch.float32 else TOLERANCE[dtype]
    torch.testing.assert_close(torch.tensor([total, dot], dtype=torch.float64), torch.stack([exact_total, exact_dot]),
                               **tolerance)
    row = u.numpy()[1, 3 : 3 + size]
    centre = row.dtype.type(0.75)
    squares = _centred_squares(row, centre)
    torch.testing.assert_close(torch.tensor(squares, dtype=torch.float64),
                               ((u[1, 3 : 3 + size].double() - 0.75) ** 2).sum(), **tolerance)


@numba.njit
def _unowned_scratch(held: bool):
    """The sum of a scratch row of ones written through an unowned view, after
    an allocation that would reuse the row's memory if it were freed."""
    scratch = np.zeros(1000)
    view = numba_ops.unowned(scratch)
    view[:] = 1.0
    other = np.full(1000, 2.0)
    total = view.sum()
    if held:
        numba_ops.keep_alive(scratch)
    return total, other[0]


@numba.njit
def _unowned_of(a):
    return numba_ops.unowned(a)


def test_an_unowned_view_is_the_same_memory_and_keep_alive_holds_its_scratch():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    view = _unowned_of(a)
    assert view.shape == a.shape and view.dtype == a.dtype and view.ctypes.data == a.ctypes.data
    lengths = np.arange(5)
    assert _unowned_of(lengths).ctypes.data == lengths.ctypes.data
    strided = a[:, :, ::2]  # not C-contiguous: handed back as it is
    assert _unowned_of(strided).strides == strided.strides
    assert _unowned_scratch(True) == (1000.0, 2.0)


def test_pooled_tensors_come_back_only_when_nothing_over_them_is_left(monkeypatch):
    pool = fused_common._BufferPool()
    monkeypatch.setattr(fused_common, "_POOL", pool)
    shape = (256, 1024)  # 1 MiB of float32
    first = fused_common.pooled_tensor(shape, torch.float32)
    assert first.shape == shape and first.is_contiguous() and first.data_ptr() % numba_ops.VECTOR_BYTES == 0
    where = first.data_ptr()
    view, array = first[3], first.numpy()
    del first
    assert fused_common.pooled_tensor(shape, torch.float32).data_ptr() != where  # a view still uses it
    del view
    assert fused_common.pooled_tensor(shape, torch.float32).data_ptr() != where  # so does an array
    del array
    again = fused_common.pooled_tensor(shape, torch.float32)
    assert again.data_ptr() == where
    assert fused_common.pooled_tensor(shape, torch.float32).data_ptr() != where  # never twice at once
    del again
    assert fused_common.pooled_tensor((256, 512), torch.float64).data_ptr() == where  # the same bytes


def test_small_pooled_tensors_are_torch_s_and_the_pool_keeps_at_most_its_limit(monkeypatch):
    pool = fused_common._BufferPool()
    monkeypatch.setattr(fused_common, "_POOL", pool)
    monkeypatch.setattr(fused_common._BufferPool, "LIMIT_BYTES", 3 << 20)
    small = fused_common.pooled_tensor((10, 10), torch.float32)
    del small
    assert pool.idle_bytes == 0
    buffers = [fused_common.pooled_tensor((256, 1024), torch.float32) for _ in range(5)]
    del buffers
    assert 2 << 20 <= pool.idle_bytes <= 3 << 20


def test_packed_weights_reuse_memory_between_calls_and_never_within_one():
    w1, w2 = torch.randn(40, 30), torch.randn(40, 30)

    @fused_common.reuses_call_memory
    def pack(first, second):
        a, b = fused_common.step_weights([first.t(), second.t()], torch.float32)
        return (a.ctypes.data, b.ctypes.data), a.copy(), b.copy()

    where, a, b = pack(w1, w2)
    assert where[0] != where[1]
    again, c, d = pack(w2, w1)
    assert set(again) == set(where)  # the first call's memory, reused
    for packed, w in [(a, w1), (b, w2), (c, w2), (d, w1)]:
        assert torch.equal(torch.from_numpy(packed[:, :40]), w.t()) and not packed[:, 40:].any()
    (outside,) = fused_common.step_weights([w1.t()], torch.float32)  # outside such a call: new memory
    assert outside.ctypes.data not in where


@pytest.mark.parametrize("kind", ONE_PER_LOOPS)
def test_inference_sees_weights_changed_in_place_by_any_means(kind):
    """Inference reuses the weights packed at its last call only while their
    bytes are unchanged: an edit through ``.data`` leaves the version counter
    as it was, and must show all the same."""
    gates = len(cell_of(kind).gates)
    w_ih, w_hh, b_ih, b_hh = torch.randn(gates * 8, 5), torch.randn(gates * 8, 8), torch.randn(gates * 8), torch.randn(gates * 8)
    proj = torch.randn(4, 8) if kind == "lstm" else None
    weights = [reference.DirectionWeights(w_ih, w_hh if proj is None else w_hh[:, :4], b_ih, b_hh, proj)]
    x = torch.randn(6, 3, 5)
    width = 8 if proj is None else 4
    state = (torch.zeros(1, 3, width),) + ((torch.zeros(1, 3, 8),) if kind == "lstm" else ())
    with torch.no_grad():
        for change in [None, lambda t: t.data.mul_(0.5), lambda t: t.add_(0.25), lambda t: t.data.copy_(t.flip(0))]:
            for tensor in (w_ih, w_hh, proj):
                if change is not None and tensor is not None:
                    change(tensor)
            ours = fused.run_layer(kind, x, state, weights, None)
            expected = reference.run_layer(kind, x, state, weights, None)
            torch.testing.assert_close(ours[0], expected[0], **TOLERANCE[torch.float32])
        version = w_ih._version
        w_ih.data.mul_(2.0)
        assert w_ih._version == version  # what a check of the version alone would miss


def test_steady_weights_never_keep_a_packing_their_copy_does_not_describe(monkeypatch):
    """A weight changed while it is being packed (another thread, here the
    packing itself) is packed again at the next call, not served stale."""
    steady = fused_common._SteadyWeights()
    w = torch.randn(24, 8)
    pack = fused_common._pack

    def pack_then_change(t, memory):
        packed = pack(t, memory)
        w.mul_(2)
        return packed

    monkeypatch.setattr(fused_common, "_pack", pack_then_change)
    steady.packed(w.t())
    monkeypatch.setattr(fused_common, "_pack", pack)
    again = steady.packed(w.t())
    assert torch.equal(torch.from_numpy(again[:, :24]), w.t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_steady_weights_compare_bits(dtype):
    """A NaN equals itself, a zero of the other sign does not, a single
    changed element is seen, by memcmp and by the element-wise way alike."""
    a = torch.randn(8, 24, dtype=dtype)
    a[3, 5] = float("nan")
    b = a.clone()
    assert fused_common._same_bits(a, b) and fused_common._same_bits(a.t(), b.t())
    b[7, 23] = b[7, 23].nextafter(torch.tensor(float("inf"), dtype=dtype))
    assert not fused_common._same_bits(a, b) and not fused_common._same_bits(a.t(), b.t())
    zeros = torch.zeros(4, 4, dtype=dtype)
    assert not fused_common._same_bits(zeros, -zeros)
    other_dtype = torch.float32 if dtype == torch.float64 else torch.float64
    assert not fused_common._same_bits(a, a[:4]) and not fused_common._same_bits(a, a.to(other_dtype))


def test_steady_weights_past_their_limit_are_packed_at_every_call(monkeypatch):
    monkeypatch.setattr(fused_common._SteadyWeights, "LIMIT_BYTES", 4 * 2 * 24 * 16)  # one (8, 24) weight
    steady = fused_common._SteadyWeights()
    a, b = torch.randn(24, 8), torch.randn(24, 8)
    first = steady.packed(a.t())
    assert steady.packed(a.t()) is first  # kept
    other = steady.packed(b.t())  # does not fit beside it: packed, not kept
    assert steady.packed(b.t()) is not other and steady.packed(a.t()) is first
    del a, first  # a's entry is dead now: b takes its place
    kept = steady.packed(b.t())
    assert steady.packed(b.t()) is kept
    assert torch.equal(torch.from_numpy(kept[:, :24]), b.t())


def test_a_row_gets_the_same_bits_in_every_tile():
    """The sum over K runs in the same order whatever tile a row falls in."""
    a = torch.randn(13, 50).numpy()
    (w,) = fused_common.step_weights([torch.randn(50, 70)], torch.float32)
    together = numba_ops.np.zeros((13, w.shape[1]), numba_ops.np.float32)
    numba_ops.matmul_rows(a, 0, w, together, 0, 13)
    for n in range(13):
        alone = numba_ops.np.zeros((1, w.shape[1]), numba_ops.np.float32)
        numba_ops.matmul_rows(a, 0, w, alone, n, n + 1)
        assert (alone[0] == together[n]).all()


@pytest.mark.parametrize("product", PRODUCTS)
def test_a_piece_projects_its_own_rows_and_steps_only(product):
    """By numba's tiles (a part of the batch, then all of it: one batch row
    over the steps at a time, then every step's rows together), or a step at
    a time by a BLAS in calls of two rows here."""
    library = blas.available().get(product)

    def project(x, w_t, b, out, *rows_and_steps):
        if library is None:
            numba_ops.project_rows(x.numpy(), w_t, b.numpy(), out.numpy(), 3, *rows_and_steps)
        else:
            with library.one_thread():
                numba_ops.project_steps(x.numpy(), w_t, b.numpy(), out.numpy(), 3, *rows_and_steps, (library.gemm(False), 2))

    x = torch.randn(6, 5, 4)
    w, b = torch.randn(10, 4), torch.randn(10)
    (w_t,) = fused_common.step_weights([w.t()], torch.float32)
    out = torch.full((6, 5, 23), float("nan"))
    project(x, w_t, b, out, 2, 5, 2, 5)
    expected = x @ w.t() + b
    torch.testing.assert_close(out[2:5, 2:5, 3:13], expected[2:5, 2:5])
    region = torch.zeros_like(out, dtype=torch.bool)
    region[2:5, 2:5, 3:13] = True
    assert out[~region].isnan().all()
    project(x, w_t, b, out, 0, 5, 0, 6)  # every row
    torch.testing.assert_close(out[:, :, 3:13], expected)


@pytest.mark.parametrize("onednn", [False, True])
def test_dense_products_match_torch_on_either_path(onednn, monkeypatch):
    if onednn and not dense._onednn_available():
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setattr(dense, "ONEDNN", onednn)
    monkeypatch.setattr(dense, "MIN_ONEDNN_WORK", 0)
    monkeypatch.setattr(dense, "MIN_ONEDNN_REDUCTION_OUTPUT", 0)
    a, b, bias = torch.randn(40, 30), torch.randn(50, 30), torch.randn(50)
    for left, right, add in [(a, b.t(), None), (a, b.t(), bias), (a.t(), a, None), (b[:, 3:20].t(), b[:, :9], None)]:
        expected = left.double() @ right.double() + (0 if add is None else add.double())
        result = dense.matmul(left, right, add)
        assert result.is_contiguous()
        torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows, inner, columns", [(300, 2100, 7), (64, 4000, 64), (8, 50, 3)])
def test_a_weights_gradient_is_the_same_whatever_the_thread_count(rows, inner, columns, dtype, monkeypatch):
    """``dz^T x`` off oneDNN: blocks of output rows and spans of the inner
    dimension by the shape alone (here 4 pieces, so that 300 rows make
    blocks of 128 rows and 64 rows four spans), with torch's grad mode on."""
    monkeypatch.setattr(dense, "ONEDNN", False)
    monkeypatch.setattr(dense, "REDUCTION_PIECES", 4)
    monkeypatch.setattr(dense, "REDUCTION_WORK_PER_THREAD", 1)
    dz = torch.randn(inner, rows, dtype=dtype, requires_grad=True)
    x = torch.randn(inner, columns, dtype=dtype)
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(dense.matmul(dz.t(), x))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(results[0], results[1])
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(results[0], (dz.t() @ x).detach(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("kind", ONE_PER_LOOPS)
def test_layers_match_reference_with_every_product_on_onednn(kind, monkeypatch):
    """The backward's products over all steps through oneDNN, however small."""
    if not dense._onednn_available():
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setattr(dense, "ONEDNN", True)
    monkeypatch.setattr(dense, "MIN_ONEDNN_WORK", 0)
    monkeypatch.setattr(dense, "MIN_ONEDNN_REDUCTION_OUTPUT", 0)
    case = Case(kind, 2, True, torch.float32, (5, 3, 5, 1), steps=5, batch=4, hidden=7, input_size=3,
                proj=3 if kind == "lstm" else 0)
    inputs = make_inputs(case)
    ours = forward_and_grads(fused.run_layer, case, inputs)
    expected = forward_and_grads(reference.run_layer, case, inputs)
    for name, a, b in zip(leaf_names(case), ours, expected):
        assert_close(a, b, name)


def test_dense_products_hand_onednn_plain_layouts_only():
    """A slice's strided rows would take oneDNN's slow reference path."""
    matrix = torch.randn(6, 8)
    assert dense._plain(matrix) is matrix
    assert dense._plain(matrix.t()).data_ptr() == matrix.data_ptr()  # a transpose stays a view
    sliced = matrix[:, 2:5]
    plain = dense._plain(sliced)
    assert plain.is_contiguous() and torch.equal(plain, sliced)


@pytest.mark.parametrize("threads", ["openmp", "pool"])
def test_every_piece_runs_once_and_errors_reach_the_caller(threads, monkeypatch):
    """On torch's OpenMP team (where torch has GNU OpenMP) and on rnnkit's own pool."""
    if threads == "openmp" and parallel._team is None:
        pytest.skip("torch has no GNU OpenMP here")
    if threads == "pool":
        monkeypatch.setattr(parallel, "_team", None)
    seen: list[int] = []
    lock = threading.Lock()

    def work(piece: int) -> None:
        with lock:
            seen.append(piece)

    parallel.run(work, list(range(9)), 2)
    assert sorted(seen) == list(range(9))

    def fail(piece: int) -> None:
        if piece == 5:
            raise ValueError("piece 5")

    with pytest.raises(ValueError, match="piece 5"):
        parallel.run(fail, list(range(9)), 2)


def test_oneDNN_takes_large_products_and_large_reductions_only(monkeypatch):
    monkeypatch.setattr(dense, "ONEDNN", True)
    rows, small, wide = torch.randn(8000, 64), torch.randn(8000, 32), torch.randn(8000, 512)
    assert dense._use_onednn(rows, torch.randn(64, 256))  # (8000, 64) @ (64, 256): large
    assert not dense._use_onednn(rows[:10], torch.randn(64, 256))  # too little work
    assert not dense._use_onednn(small.t(), small)  # a (32, 32) gradient over 8000 rows
    assert dense._use_onednn(wide.t(), rows)  # a (512, 64) one
    assert not dense._use_onednn(rows.double(), torch.randn(64, 256, dtype=torch.float64))


@pytest.mark.parametrize("width", [24, 56])  # the copied operand is x (narrower than dz), or dz
@pytest.mark.parametrize("sliced", [False, True])  # dz whole, or one direction's columns of it
def test_a_long_reduction_goes_to_onednn_in_chunks(width, sliced, monkeypatch):
    """A weight's gradient over many rows, summed chunk by chunk: the same
    product, and the same bits from call to call."""
    if not dense._onednn_available():
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setattr(dense, "ONEDNN", True)
    monkeypatch.setattr(dense, "MIN_ONEDNN_WORK", 0)
    monkeypatch.setattr(dense, "MIN_ONEDNN_REDUCTION_OUTPUT", 0)
    # chunks of 7 rows and a last of 4 (x copied), or of 5 rows (dz copied)
    monkeypatch.setattr(dense, "REDUCTION_CHUNK_BYTES", 4 * 24 * 7 if width == 24 else 4 * 40 * 5)
    dz, x, bias = torch.randn(95, 80)[:, 40:] if sliced else torch.randn(95, 40), torch.randn(95, width), torch.randn(width)
    result = dense.matmul(dz.t(), x, bias)
    torch.testing.assert_close(result.double(), dz.t().double() @ x.double() + bias.double(), rtol=1e-5, atol=1e-5)
    assert torch.equal(dense.matmul(dz.t(), x, bias), result)
