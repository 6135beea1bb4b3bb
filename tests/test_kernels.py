"""The fused backend against the reference: outputs, final states and every
gradient, configuration by configuration; then the backend choice itself."""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.kernels import fused, parallel, reference
from rnnkit.kernels.numba_ops import ROW_BLOCK
from rnnkit.kernels.reference import DirectionWeights


TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-10)}


def assert_close(actual, expected, name=""):
    torch.testing.assert_close(actual, expected, **TOLERANCE[expected.dtype], msg=f"{name} differs")


@dataclass(frozen=True)
class Case:
    """One call of ``run_layer``: its configuration and input sizes."""

    mode: str = "rnn_tanh"
    directions: int = 1
    bias: bool = True
    dtype: torch.dtype = torch.float64
    lengths: tuple[int, ...] | None = None  # None: every sequence has all T steps
    random_h0: bool = True
    steps: int = 7
    batch: int = 5
    input_size: int = 3
    hidden: int = 6

    def __str__(self) -> str:
        return (
            f"{self.mode}-D{self.directions}-{'bias' if self.bias else 'nobias'}-"
            f"{str(self.dtype)[6:]}-len{self.lengths}-{'h0' if self.random_h0 else 'zeros'}-"
            f"T{self.steps}N{self.batch}H{self.hidden}"
        )


VARIABLE = (7, 1, 4, 7, 2)  # a length equal to T, a length 1, the rest in between

CASES = [
    Case(mode, directions, bias, dtype, lengths, random_h0)
    for mode, directions, bias, dtype in itertools.product(
        ("rnn_tanh", "rnn_relu"), (1, 2), (True, False), (torch.float32, torch.float64)
    )
    for lengths, random_h0 in ((None, True), (VARIABLE, False))
] + [
    Case(steps=1, batch=1),
    Case(steps=1, directions=2, lengths=(1, 1, 1, 1, 1)),
    Case(batch=1, directions=2, lengths=(4,), steps=4),
    Case(mode="rnn_relu", batch=1, steps=40),
    Case(lengths=(7, 0, 3, 7, 5), directions=2),  # a sequence with no step at all
    # several blocks of four batch rows plus a remainder, and a hidden size
    # that fills whole vectors and leaves a tail
    Case(dtype=torch.float32, directions=2, batch=11, hidden=33, lengths=(9,) * 6 + (3,) * 5, steps=9),
    Case(dtype=torch.float32, batch=9, hidden=64, input_size=16, steps=12),
]


def make_inputs(case: Case, requires_grad: bool = True):
    """Random ``x``, ``h0``, weights and lengths for ``case``, as leaves."""
    g = torch.Generator().manual_seed(zlib.crc32(str(case).encode()))

    def rand(*shape, scale=1.0):
        t = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * scale
        return t.to(case.dtype).requires_grad_(requires_grad)

    bound = case.hidden**-0.5
    weights = [
        DirectionWeights(
            rand(case.hidden, case.input_size, scale=bound),
            rand(case.hidden, case.hidden, scale=bound),
            rand(case.hidden, scale=bound) if case.bias else None,
            rand(case.hidden, scale=bound) if case.bias else None,
        )
        for _ in range(case.directions)
    ]
    x = rand(case.steps, case.batch, case.input_size)
    h0 = rand(case.directions, case.batch, case.hidden)
    if not case.random_h0:
        h0 = torch.zeros_like(h0).requires_grad_(requires_grad)
    lengths = None if case.lengths is None else torch.tensor(case.lengths)
    return x, h0, weights, lengths


def leaves(x, h0, weights):
    return [x, h0] + [t for w in weights for t in w[:4] if t is not None]


def forward_and_grads(run_layer, case: Case, inputs):
    """Output, final state and the gradients of a loss that weighs every
    element of both differently, with respect to every leaf."""
    x, h0, weights, lengths = inputs
    output, (h_n,) = run_layer(case.mode, x, (h0,), weights, lengths)
    g = torch.Generator().manual_seed(7)
    loss = (output * torch.randn(output.shape, generator=g, dtype=case.dtype)).sum()
    loss = loss + (h_n * torch.randn(h_n.shape, generator=g, dtype=case.dtype)).sum()
    grads = torch.autograd.grad(loss, leaves(x, h0, weights))
    return [output.detach(), h_n.detach(), *grads]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fused_matches_reference(case):
    inputs = make_inputs(case)
    ours = forward_and_grads(fused.run_layer, case, inputs)
    expected = forward_and_grads(reference.run_layer, case, inputs)
    names = ["output", "h_n", "x", "h0"] + [
        f"{name}[{d}]" for d in range(case.directions)
        for name in ("w_ih", "w_hh", "b_ih", "b_hh")[: 4 if case.bias else 2]
    ]
    for name, a, b in zip(names, ours, expected):
        assert a.dtype == case.dtype, name
        assert_close(a, b, name)


def test_output_is_zero_past_each_length_and_h_n_is_taken_at_the_last_step():
    case = Case(directions=2, lengths=VARIABLE)
    x, h0, weights, lengths = make_inputs(case, requires_grad=False)
    output, (h_n,) = fused.run_layer(case.mode, x, (h0,), weights, lengths)
    for n, length in enumerate(case.lengths):
        assert torch.all(output[length:, n] == 0)
        assert torch.equal(h_n[0, n], output[length - 1, n, : case.hidden])
        assert torch.equal(h_n[1, n], output[0, n, case.hidden :])


def test_gradcheck():
    case = Case(directions=2, lengths=(4, 2, 3), steps=4, batch=3, hidden=3, input_size=2)
    x, h0, weights, lengths = make_inputs(case)
    flat = [t for w in weights for t in w[:4]]

    def f(x, h0, *flat):
        weights = [DirectionWeights(*flat[k : k + 4]) for k in range(0, len(flat), 4)]
        output, (h_n,) = fused.run_layer(case.mode, x, (h0,), weights, lengths)
        return output, h_n

    assert torch.autograd.gradcheck(f, (x, h0, *flat))


@pytest.mark.parametrize("threads", [1, 2])
def test_bitwise_deterministic_whatever_the_thread_count(threads):
    """Two runs agree bit for bit, and so do one and two threads: batch chunks
    start at multiples of ROW_BLOCK, so each row meets the same arithmetic."""
    case = Case(dtype=torch.float32, directions=2, steps=50, batch=13, hidden=64, input_size=8)
    inputs = make_inputs(case)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = forward_and_grads(fused.run_layer, case, inputs)
        torch.set_num_threads(threads)
        assert parallel.plan(2, case.batch, case.steps * case.hidden**2)[1] == threads
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
def test_the_plan_covers_every_row_once_in_aligned_chunks(directions, batch, threads, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    pieces, used = parallel.plan(directions, batch, work_per_row=10**9)
    assert 1 <= used <= threads
    for d in range(directions):
        rows = [n for p in pieces if p.d == d for n in range(p.n0, p.n1)]
        assert rows == list(range(batch))
    assert all(p.n0 % ROW_BLOCK == 0 for p in pieces)


def test_small_work_stays_on_the_calling_thread(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert parallel.plan(2, 4, work_per_row=100)[1] == 1


# -- through the layers -------------------------------------------------------------------


def run_module(module, input, hx):
    """Output, h_n and the gradients of input, hx and every parameter."""
    module.zero_grad()
    output, h_n = module(input, hx)
    data = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    g = torch.Generator().manual_seed(3)
    loss = (data * torch.randn(data.shape, generator=g, dtype=data.dtype)).sum() + h_n.square().sum()
    loss.backward()
    return [data.detach(), h_n.detach()] + [p.grad.clone() for p in module.parameters()]


def both_backends(module, make_input, hx):
    """``run_module`` under each backend, forced, with the same dropout masks."""
    results = {}
    for name in ("fused", "reference"):
        torch.manual_seed(11)
        with kernels.use_backend(name):
            results[name] = run_module(module, make_input(), hx)
    return results["fused"], results["reference"]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stacked_bidirectional_layer_with_dropout(nonlinearity, dtype):
    layer = rnnkit.RNN(
        4, 6, num_layers=3, nonlinearity=nonlinearity, bidirectional=True,
        dropout=0.3, batch_first=True, dtype=dtype,
    )
    x = torch.randn(5, 8, 4, dtype=dtype)
    hx = torch.randn(6, 5, 6, dtype=dtype)
    ours, expected = both_backends(layer, lambda: x, hx)
    for a, b in zip(ours, expected):
        assert_close(a, b)


def test_packed_input():
    layer = rnnkit.RNN(4, 6, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(7, 4, 4, dtype=torch.float64)
    lengths = torch.tensor([3, 7, 1, 5])
    hx = torch.randn(4, 4, 6, dtype=torch.float64)
    ours, expected = both_backends(
        layer, lambda: pack_padded_sequence(x, lengths, enforce_sorted=False), hx
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


# -- which backend runs -------------------------------------------------------------------


def weights_like(x: torch.Tensor, hidden: int = 3, **more) -> list[DirectionWeights]:
    w = lambda *shape: torch.zeros(shape, dtype=x.dtype, device=x.device)  # noqa: E731
    return [DirectionWeights(w(hidden, x.shape[-1]), w(hidden, hidden), w(hidden), w(hidden), **more)]


@pytest.mark.parametrize(
    "mode, dtype, device, projection, expected",
    [
        ("rnn_tanh", torch.float32, "cpu", False, "fused"),
        ("rnn_relu", torch.float64, "cpu", False, "fused"),
        ("rnn_tanh", torch.bfloat16, "cpu", False, "reference"),
        ("rnn_tanh", torch.float32, "meta", False, "reference"),  # stands in for CUDA
        ("lstm", torch.float32, "cpu", False, "reference"),
        ("lstm", torch.float32, "cpu", True, "reference"),
    ],
)
def test_auto_picks_fused_where_it_serves_and_the_reference_elsewhere(
    mode, dtype, device, projection, expected
):
    x = torch.zeros(2, 2, 4, dtype=dtype, device=device)
    hr = torch.zeros(2, 3, dtype=dtype, device=device) if projection else None
    assert kernels.select_backend(mode, x, weights_like(x, w_hr=hr)).name == expected


def test_the_environment_variable_forces_the_reference(monkeypatch):
    monkeypatch.setenv("RNNKIT_BACKEND", "reference")
    x = torch.zeros(2, 2, 4)
    assert kernels.select_backend("rnn_tanh", x, weights_like(x)).name == "reference"


def test_forcing_a_backend_that_cannot_serve_the_call_raises():
    layer = rnnkit.RNN(4, 3).to(torch.bfloat16)
    with kernels.use_backend("fused"):
        with pytest.raises(kernels.UnsupportedCall, match=r"'fused' does not support .*bfloat16"):
            layer(torch.zeros(2, 1, 4, dtype=torch.bfloat16))
    with kernels.use_backend("reference"):  # the reference serves it
        assert layer(torch.zeros(2, 1, 4, dtype=torch.bfloat16))[0].shape == (2, 1, 3)


def test_warm_up_compiles_every_dtype_ahead():
    from rnnkit.kernels.elman_loops import elman_backward, elman_forward

    fused.warm_up()
    for loop in (elman_forward, elman_backward):
        assert {sig[0].dtype.name for sig in loop.signatures} >= {"float32", "float64"}
