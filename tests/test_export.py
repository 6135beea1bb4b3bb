"""Models holding rnnkit layers under torch.compile, torch.export and torch.jit, on every backend.

The oracle is the same model run eagerly (itself tested against torch.nn
elsewhere). Compiles are slow on a small machine: most tests compile with
``aot_eager`` (the traced graph and its autograd, without code generation)
and one with inductor.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

import rnnkit
from rnnkit import kernels
from rnnkit.kernels import ops

INPUT, HIDDEN = 3, 4

CASES = {
    "rnn_tanh_stacked": dict(kind="RNN", num_layers=2),
    "rnn_relu_bidirectional": dict(kind="RNN", nonlinearity="relu", bidirectional=True),
    "lstm_stacked_bidirectional_batch_first": dict(kind="LSTM", num_layers=2, bidirectional=True, batch_first=True),
    "lstm_projection": dict(kind="LSTM", proj_size=2),
    "gru_bidirectional_no_bias": dict(kind="GRU", bidirectional=True, bias=False),
    "gru_batch_first": dict(kind="GRU", num_layers=2, batch_first=True),
    "lstm_layer_norm_bidirectional": dict(kind="LSTM", layer_norm=True, bidirectional=True),
    "rnn_layer_norm": dict(kind="RNN", layer_norm=True),
}
"""Layers of every kind and option that changes what is traced."""


class Model(nn.Module):
    """An rnnkit layer with a linear head on its output: ``(scores, state)``."""

    def __init__(self, kind: str, **options):
        super().__init__()
        self.rnn = getattr(rnnkit, kind)(INPUT, HIDDEN, **options)
        self.head = nn.Linear(self.rnn(torch.zeros(1, 1, INPUT))[0].shape[-1], 2)

    def forward(self, x, lengths=None):
        output, state = self.rnn(x) if lengths is None else self.rnn(x, lengths=lengths)
        return self.head(output), state


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles its own models: no guards or recompile counts carried over."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def model_and_input(name: str, steps: int, batch: int):
    model = Model(**CASES[name])
    shape = (batch, steps, INPUT) if model.rnn.batch_first else (steps, batch, INPUT)
    return model, torch.randn(shape)


def outputs_and_grads(model: nn.Module, x: torch.Tensor, *args):
    """Everything the model returns, and the gradients of a weighted sum of it
    with respect to the input and every parameter."""
    x = x.detach().clone().requires_grad_()
    scores, state = model(x, *args)
    results = [scores, *(state if isinstance(state, tuple) else (state,))]
    weights = torch.Generator().manual_seed(7)
    loss = sum((r * torch.randn(r.shape, generator=weights)).sum() for r in results)
    leaves = [x, *model.parameters()]
    return [r.detach() for r in results], torch.autograd.grad(loss, leaves)


def assert_same(actual, expected):
    """Two :func:`outputs_and_grads` results agree."""
    for a, b in zip([*actual[0], *actual[1]], [*expected[0], *expected[1]], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def lengths_for(batch: int, steps: int) -> torch.Tensor:
    """Valid lengths from 1 to ``steps``, the longest not first."""
    return torch.linspace(1, steps, batch).round().long().roll(1)


# -- the operator itself -------------------------------------------------------------


def _layer_call(kind: str, directions: int, bias: bool, projection: bool):
    """Arguments of one layer call at the kernel level, every tensor differentiable."""
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}[kind]
    out = 2 if projection else HIDDEN
    x = torch.randn(5, 2, INPUT, dtype=torch.float64, requires_grad=True)
    parts = 2 if kind == "lstm" else 1
    sizes = [out, HIDDEN][:parts]
    state = tuple(torch.randn(directions, 2, s, dtype=torch.float64, requires_grad=True) for s in sizes)

    def tensor(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    weights = [
        kernels.DirectionWeights(
            tensor(gates * HIDDEN, INPUT), tensor(gates * HIDDEN, out),
            tensor(gates * HIDDEN) if bias else None, tensor(gates * HIDDEN) if bias else None,
            tensor(out, HIDDEN) if projection else None,
        )
        for _ in range(directions)
    ]
    return x, state, weights


OPERATOR_CASES = [
    ("rnn_tanh", 1, True, False), ("rnn_relu", 2, False, False), ("lstm", 2, True, False),
    ("lstm", 1, True, True), ("gru", 2, True, False), ("gru", 1, False, False),
]


@pytest.mark.parametrize("kind,directions,bias,projection", OPERATOR_CASES)
def test_operator_matches_the_backend_forward_and_backward(backend, kind, directions, bias, projection):
    x, state, weights = _layer_call(kind, directions, bias, projection)
    leaves = [x, *state, *(t for w in weights for t in w if t is not None)]
    results = []
    for run in (ops.layer, kernels.run_selected):
        output, state_n = run(kind, x, state, weights, None)
        loss = (output * torch.arange(output.numel()).reshape(output.shape)).sum() + sum(
            (s * s).sum() for s in state_n
        )
        results.append([output, *state_n, *torch.autograd.grad(loss, leaves)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind,directions,bias,projection", OPERATOR_CASES[2:4])
def test_operator_passes_torch_opcheck(kind, directions, bias, projection):
    """torch's own checks of a custom operator: schema, fake shapes, autograd registration."""
    x, state, weights = _layer_call(kind, directions, bias, projection)
    flat, fields = ops.flatten_weights(weights)
    args = (kind, x, list(state), flat, fields, torch.tensor([5, 3]), False, None, None)
    torch.library.opcheck(torch.ops.rnnkit.layer.default, args)
    width = x.shape[1:2] + state[0].shape[-1:]  # (N, H_out)
    masks = (torch.rand(directions, *width).round(), torch.rand(directions, x.shape[0], *width).round())
    torch.library.opcheck(torch.ops.rnnkit.layer.default, args[:-2] + masks)


def test_operator_returns_cells_like_the_backend(backend):
    """Needs the backends' ``return_cells`` (the LSTM's every c_t)."""
    x, state, weights = _layer_call("lstm", 2, True, False)
    expected = kernels.run_selected("lstm", x, state, weights, torch.tensor([5, 2]), return_cells=True)
    actual = ops.layer("lstm", x, state, weights, torch.tensor([5, 2]), return_cells=True)
    torch.testing.assert_close(actual[2], expected[2])
    (g_actual,) = torch.autograd.grad(actual[2].sum(), x)
    (g_expected,) = torch.autograd.grad(expected[2].sum(), x)
    torch.testing.assert_close(g_actual, g_expected)


# -- torch.compile -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_compile_sees_no_graph_break(name):
    model, x = model_and_input(name, steps=5, batch=2)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("grad", [False, True])
def test_a_decoder_loop_over_a_cell_compiles_without_a_graph_break(name, grad):
    """A cell's call is traced as the reference's ops: its one-step loops
    (and their kept weights' addresses) never enter a graph."""
    cell = getattr(rnnkit, name)(INPUT, HIDDEN)

    def decode(xs):
        state = None
        for x in xs:
            state = cell(x, state)
        return state

    xs = torch.randn(3, 2, INPUT)
    with torch.set_grad_enabled(grad):
        explanation = torch._dynamo.explain(decode)(xs)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        compiled = torch.compile(decode, backend="aot_eager", fullgraph=True)
        got, want = compiled(xs), decode(xs)
        torch.testing.assert_close(got, want)  # a tensor, or an LSTM's tuple of two


@pytest.mark.parametrize("name", ["lstm_stacked_bidirectional_batch_first", "gru_batch_first"])
def test_compile_sees_no_graph_break_under_autocast(name):
    model, x = model_and_input(name, steps=5, batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_model_matches_eager_at_two_sizes_without_recompiling(backend, name):
    model, x = model_and_input(name, steps=5, batch=2)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    assert_same(outputs_and_grads(compiled, x), outputs_and_grads(model, x))
    compiled_frames = counter.frame_count
    _, x2 = model_and_input(name, steps=8, batch=4)
    assert_same(outputs_and_grads(compiled, x2), outputs_and_grads(model, x2))
    assert counter.frame_count == compiled_frames, "compiled again for another size"


# inductor's code generation calls torch.jit.script_method, which torch itself deprecates
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_inductor_compiled_lstm_matches_eager(backend):
    model, x = model_and_input("lstm_stacked_bidirectional_batch_first", steps=5, batch=2)
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    assert_same(outputs_and_grads(compiled, x), outputs_and_grads(model, x))


def test_compiled_model_with_lengths_matches_eager(backend):
    """Needs the layer's ``lengths=`` keyword."""
    model, x = model_and_input("gru_batch_first", steps=6, batch=4)
    lengths = lengths_for(4, 6)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    assert_same(outputs_and_grads(compiled, x, lengths), outputs_and_grads(model, x, lengths))
    too_long = torch.tensor([6, 7, 2, 1])
    with pytest.raises(RuntimeError, match=r"Expected each length in 1\.\.6; got lengths\[1\] = 7"):
        compiled(x, too_long)


# -- torch.export --------------------------------------------------------------------


def _dynamic_shapes(model: Model, with_lengths: bool = False):
    steps, batch = torch.export.Dim("steps", min=2), torch.export.Dim("batch", min=2)
    x = {0: batch, 1: steps} if model.rnn.batch_first else {0: steps, 1: batch}
    return {"x": x, "lengths": {0: batch}} if with_lengths else {"x": x}


@pytest.mark.parametrize("name", list(CASES))
def test_exported_program_matches_eager_at_other_sizes(backend, name):
    model, x = model_and_input(name, steps=5, batch=2)
    program = torch.export.export(model, (x,), dynamic_shapes=_dynamic_shapes(model))
    exported = program.module()
    for steps, batch in ((5, 2), (9, 4), (2, 6)):
        _, x2 = model_and_input(name, steps=steps, batch=batch)
        assert_same(outputs_and_grads(exported, x2), outputs_and_grads(model, x2))


def test_exported_program_with_lengths_matches_eager(backend):
    """Needs the layer's ``lengths=`` keyword."""
    model, x = model_and_input("lstm_stacked_bidirectional_batch_first", steps=5, batch=2)
    program = torch.export.export(
        model, (x, lengths_for(2, 5)), dynamic_shapes=_dynamic_shapes(model, with_lengths=True)
    )
    _, x2 = model_and_input("lstm_stacked_bidirectional_batch_first", steps=7, batch=4)
    lengths = lengths_for(4, 7)
    assert_same(outputs_and_grads(program.module(), x2, lengths), outputs_and_grads(model, x2, lengths))


# -- torch.jit -----------------------------------------------------------------------


torch_jit_deprecated = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
)
"""torch 2.13 deprecates torch.jit; rnnkit still supports tracing."""


@torch_jit_deprecated
# The layer's shape checks, like torch.nn's, read sizes that the tracer records as tensors
@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean:torch.jit.TracerWarning")
@pytest.mark.parametrize("name", list(CASES))
def test_traced_model_matches_eager(backend, name):
    model, x = model_and_input(name, steps=5, batch=2)
    traced = torch.jit.trace(model, x)
    assert_same(outputs_and_grads(traced, x), outputs_and_grads(model, x))


@torch_jit_deprecated
def test_script_refuses_with_the_ways_that_work():
    model, _ = model_and_input("lstm_projection", steps=5, batch=2)
    with pytest.raises(RuntimeError, match=r"torch\.jit\.script.*torch\.jit\.trace.*torch\.export") as error:
        torch.jit.script(model)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_compiled_masks_match_eager_for_the_same_seed(backend, kind):
    """Recurrent dropout and zoneout draw their masks outside the operator,
    from torch's generator, so a compiled graph draws what eager draws."""
    model, x = Model(kind, num_layers=2, recurrent_dropout=0.3, zoneout=0.2), torch.randn(5, 2, INPUT)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.manual_seed(3)
    got = outputs_and_grads(compiled, x)
    torch.manual_seed(3)
    assert_same(got, outputs_and_grads(model, x))
    model.eval()
    assert_same(outputs_and_grads(compiled, x), outputs_and_grads(model, x))
