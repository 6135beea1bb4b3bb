"""The one-step loops (rnnkit.kernels.fused_step): cells and one-step layers
called without autograd, against torch.nn and the reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit import kernels
from rnnkit.kernels import fused_step
from rnnkit.kinds import CELLS
from equivalence import KIND_OPTIONS

CELL_OPTIONS = [
    (cell.cell_class, options)
    for cell in CELLS.values()
    for options in ([dict(nonlinearity=k.nonlinearity) for k in cell.kinds if k.nonlinearity] or [{}])
]


@pytest.fixture
def one_step_calls(monkeypatch):
    """How many calls the one-step loops served."""
    served = []

    def counted(run):
        def call(*args, **kwargs):
            served.append(True)
            return run(*args, **kwargs)
        return call

    monkeypatch.setattr(fused_step, "run_cell", counted(fused_step.run_cell))
    monkeypatch.setattr(fused_step, "run_layer", counted(fused_step.run_layer))
    return served


def _cell_args(class_name, batch, dtype, batched=True):
    shape = (batch, 5) if batched else (5,)
    x = torch.randn(shape[:-1] + (4,), dtype=dtype)
    h = torch.randn(shape, dtype=dtype)
    return x, ((h, torch.randn_like(h)) if class_name == "LSTMCell" else h)


def _close(ours, theirs, dtype):
    """The same tensors, or nested tuples of them, within float tolerance."""
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _close(a, b, dtype)
        return
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(ours, theirs, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 3, None])  # None: an unbatched input
@pytest.mark.parametrize("class_name, options", CELL_OPTIONS)
def test_cells_without_autograd_match_torch(one_step_calls, class_name, options, batch, bias, dtype):
    theirs = getattr(nn, class_name)(4, 5, bias=bias, dtype=dtype, **options)
    ours = getattr(rnnkit, class_name).from_torch(theirs)
    x, hx = _cell_args(class_name, batch or 1, dtype, batched=batch is not None)
    with torch.no_grad():
        _close(ours(x, hx), theirs(x, hx), dtype)
        _close(ours(x), theirs(x), dtype)  # a zero state
    assert one_step_calls == [True, True]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [dict(), dict(bias=False), dict(num_layers=2, bidirectional=True)])
@pytest.mark.parametrize("class_name, options", [(c, o) for c, variants in KIND_OPTIONS.items() for o in variants])
def test_one_step_layers_without_autograd_match_torch(one_step_calls, class_name, options, shape, dtype):
    theirs = getattr(nn, class_name)(4, 5, dtype=dtype, **options, **shape)
    ours = getattr(rnnkit, class_name).from_torch(theirs)
    x = torch.randn(1, 3, 4, dtype=dtype)
    with torch.no_grad():
        output, state = ours(x)
        expected_output, expected_state = theirs(x)
        _close(output, expected_output, dtype)
        _close(state, expected_state, dtype)
        # a state of the caller's, given as a non-contiguous view
        given = tuple(s.transpose(0, 1).contiguous().transpose(0, 1) for s in (
            expected_state if isinstance(expected_state, tuple) else (expected_state,)
        ))
        hx = given if len(given) > 1 else given[0]
        _close(ours(x, hx), theirs(x, hx), dtype)
    assert one_step_calls == [True] * 2 * ours.num_layers


def test_the_outputs_are_tensors_of_their_own():
    """No output shares memory with another, an input or the state (torch.nn's do not)."""
    layer = rnnkit.LSTM(4, 5)
    x, h0 = torch.randn(1, 2, 4), (torch.randn(1, 2, 5), torch.randn(1, 2, 5))
    with torch.no_grad():
        output, (h_n, c_n) = layer(x, h0)
    pointers = [t.untyped_storage().data_ptr() for t in (output, h_n, c_n, x, *h0)]
    assert len(set(pointers)) == len(pointers)
    torch.testing.assert_close(output[0], h_n[0], rtol=0, atol=0)


def test_calls_that_autograd_records_or_that_are_too_large_go_elsewhere(one_step_calls):
    cell = rnnkit.RNNCell(4, 5)  # the Elman cell has no backward loop
    x, h = torch.randn(2, 4), torch.randn(2, 5)
    theirs = nn.RNNCell(4, 5)
    theirs.load_state_dict(cell.state_dict())
    _close(cell(x, h), theirs(x, h), torch.float32)  # autograd records it
    cell(x, h).sum().backward()
    assert cell.weight_hh.grad is not None
    rnnkit.RNN(4, 5)(torch.randn(1, 2, 4))  # the Elman layer under autograd
    rnnkit.LSTM(4, 5, proj_size=3)(torch.randn(1, 2, 4))  # no backward loop for the projection
    with torch.no_grad():
        cell(x, h.requires_grad_())  # a state that wants a gradient: no graph under no_grad
    large = rnnkit.GRUCell(4, 5)
    with torch.no_grad():
        large(torch.randn(fused_step.MAX_ROWS + 1, 4))
    assert one_step_calls == [True]
    frozen = rnnkit.RNN(4, 5).requires_grad_(False)  # nothing to record, with grad mode on
    frozen(torch.randn(1, 2, 4))
    assert one_step_calls == [True, True]


GRADIENT_CELLS = [cell for cell in CELLS.values() if cell.kinds[0].key in fused_step.BACKWARDS]
"""The cells whose steps the one-step loops run under autograd too (their kinds' BACKWARDS)."""


def test_the_kinds_with_a_backward_loop_are_the_lstm_and_gru():
    assert sorted(fused_step.BACKWARDS) == ["gru", "lstm"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [dict(), dict(bias=False), dict(num_layers=2, bidirectional=True)])
@pytest.mark.parametrize("class_name", [cell.layer for cell in GRADIENT_CELLS])
def test_one_step_layers_under_autograd_match_torch(monkeypatch, class_name, shape, dtype):
    applied = []
    apply = fused_step._Step.apply
    monkeypatch.setattr(fused_step._Step, "apply", lambda *args: applied.append(1) or apply(*args))
    theirs = getattr(nn, class_name)(4, 5, dtype=dtype, **shape)
    ours = getattr(rnnkit, class_name).from_torch(theirs)
    layers, directions = theirs.num_layers, 2 if theirs.bidirectional else 1
    x = torch.randn(1, 3, 4, dtype=dtype, requires_grad=True)
    h = torch.randn(layers * directions, 3, 5, dtype=dtype, requires_grad=True)
    hx = (h, torch.randn_like(h)) if class_name == "LSTM" else h  # an LSTM's c wants no gradient
    for used in (None, [0], [1]):  # every output; the output alone; the final state alone
        expected_out, expected_grads = _gradients(theirs, x, hx, used)
        out, grads = _gradients(ours, x, hx, used)
        _close(out, expected_out, dtype)
        for got, want in zip(grads, expected_grads):
            assert (got is None) == (want is None)
            if want is not None:
                _close(got, want, dtype)
    assert applied == [1] * layers * 3


def test_a_one_step_layer_has_a_differentiable_backward():
    layer = rnnkit.GRU(4, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: layer(x)[0], (x,))


def _gradients(module, x, hx, outputs_used=None):
    """The outputs and the gradients of a weighted loss with respect to the
    input, every state part and every parameter (``None`` where there is none)."""
    out = module(x, hx)
    out = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(5)
    used = _tensors(out if outputs_used is None else [out[i] for i in outputs_used])
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in used)
    inputs = [x, *(hx if isinstance(hx, tuple) else (hx,)), *module.parameters()]
    wanted = [t for t in inputs if t.requires_grad]
    found = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
    grads = [next(found) if t.requires_grad else None for t in inputs]
    return tuple(o.detach() for o in _tensors(out)), grads


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor in an output: a tensor, or (nested) tuples of them."""
    return [value] if isinstance(value, torch.Tensor) else [t for part in value for t in _tensors(part)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 3, None])
@pytest.mark.parametrize("class_name", [cell.cell_class for cell in GRADIENT_CELLS])
def test_cells_under_autograd_match_torch(monkeypatch, class_name, batch, bias, dtype):
    applied = []
    apply = fused_step._Step.apply
    monkeypatch.setattr(fused_step._Step, "apply", lambda *args: applied.append(1) or apply(*args))
    theirs = getattr(nn, class_name)(4, 5, bias=bias, dtype=dtype)
    ours = getattr(rnnkit, class_name).from_torch(theirs)
    x, hx = _cell_args(class_name, batch or 1, dtype, batched=batch is not None)
    x.requires_grad_()
    parts = hx if isinstance(hx, tuple) else (hx,)
    parts[0].requires_grad_()  # an LSTM's c wants none: its gradient is None on both sides
    expected_out, expected_grads = _gradients(theirs, x, hx)
    out, grads = _gradients(ours, x, hx)
    _close(out, expected_out, dtype)
    for got, want in zip(grads, expected_grads):
        assert (got is None) == (want is None)
        if want is not None:
            _close(got, want, dtype)
    assert applied == [1]


@pytest.mark.parametrize("class_name", [cell.cell_class for cell in GRADIENT_CELLS])
def test_a_decoder_loop_with_one_output_used_matches_torch(class_name):
    """Several steps chained, a state the caller feeds back, only ``h`` in the loss."""
    theirs = getattr(nn, class_name)(4, 5, dtype=torch.float64)
    ours = getattr(rnnkit, class_name).from_torch(theirs)
    xs = torch.randn(6, 2, 4, dtype=torch.float64)

    def run(cell):
        state, loss = None, 0
        for x in xs:
            state = cell(x, state)
            loss = loss + (state[0] if isinstance(state, tuple) else state).square().sum()
        loss.backward()
        return [p.grad for p in cell.parameters()]

    for got, want in zip(run(ours), run(theirs)):
        _close(got, want, torch.float64)


@pytest.mark.parametrize("class_name", [cell.cell_class for cell in GRADIENT_CELLS])
def test_gradcheck_and_a_differentiable_backward(class_name):
    cell = getattr(rnnkit, class_name)(4, 5, dtype=torch.float64)
    x, hx = _cell_args(class_name, 2, torch.float64)
    parts = tuple(p.requires_grad_() for p in (x, *(hx if isinstance(hx, tuple) else (hx,))))

    def step(x, *state):
        return cell(x, state if len(state) > 1 else state[0])

    assert torch.autograd.gradcheck(step, parts)
    assert torch.autograd.gradgradcheck(step, parts)  # create_graph=True: through the reference


def test_options_beyond_torch_nn_lengths_and_a_forced_backend_go_elsewhere(one_step_calls):
    with torch.no_grad():
        rnnkit.LSTMCell(4, 5, layer_norm=True)(torch.randn(2, 4))
        rnnkit.GRU(4, 5, layer_norm=True)(torch.randn(1, 2, 4))
        rnnkit.GRU(4, 5)(torch.randn(1, 2, 4), lengths=[1, 1])
        rnnkit.LSTM(4, 5)(torch.randn(1, 2, 4), return_states=True)
        rnnkit.RNN(4, 5)(torch.randn(2, 2, 4))  # two steps: the layer's loops
        with kernels.use_backend("reference"):
            rnnkit.RNNCell(4, 5)(torch.randn(2, 4))
            rnnkit.RNN(4, 5)(torch.randn(1, 2, 4))
    assert one_step_calls == []


def test_weights_changed_in_place_or_replaced_are_seen():
    cell = rnnkit.LSTMCell(4, 5)
    theirs = nn.LSTMCell(4, 5)
    x = torch.randn(2, 4)

    def same():
        theirs.load_state_dict(cell.state_dict())
        with torch.no_grad():
            _close(cell(x), theirs(x), torch.float32)

    same()
    with torch.no_grad():
        cell.weight_hh.mul_(2)  # in place, version counter bumped
    same()
    cell.weight_ih.data.add_(1)  # in place through .data: no version bump
    same()
    cell.weight_hh.data = torch.randn(20, 5)  # the same Parameter over new memory
    same()
    cell.bias_ih = nn.Parameter(torch.randn(20))  # another Parameter
    same()
    cell.double()
    x = x.double()
    theirs.double()
    same_double = theirs.load_state_dict(cell.state_dict())
    assert not same_double.missing_keys
    with torch.no_grad():
        _close(cell(x), theirs(x), torch.float64)


def test_plan_says_why_not():
    cell = rnnkit.RNNCell(4, 5)
    w = cell._cached_weights(cell._one_direction)
    x, state = torch.randn(2, 4), (torch.zeros(2, 5),)
    assert fused_step.plan("rnn_tanh", x, state, [w]) == "autograd records the call"
    with torch.no_grad():
        planned = fused_step.plan("rnn_tanh", x, state, [w])
        assert isinstance(planned, fused_step.Plan) and len(planned.weights) == 1 and not planned.recorded
        assert "state part" in fused_step.plan("rnn_tanh", x, (torch.zeros(2, 5, dtype=torch.float64),), [w])
        assert "state part" in fused_step.plan("rnn_tanh", x, (torch.zeros(3, 5),), [w])
        assert "3 features, the weights 4" in fused_step.plan("rnn_tanh", torch.zeros(2, 3), state, [w])
        assert "one step, got 2" in fused_step.plan("rnn_tanh", torch.randn(2, 2, 4), (torch.zeros(1, 2, 5),), [w])
        assert "bfloat16" in fused_step.plan("rnn_tanh", x.bfloat16(), state, [w])
        assert "more than" in fused_step.plan("rnn_tanh", torch.randn(fused_step.MAX_ROWS + 1, 4), state, [w])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert "autocast" in fused_step.plan("rnn_tanh", x, state, [w])
        cell.double()
        w = cell._cached_weights(cell._one_direction)
        assert "not a contiguous torch.float32" in fused_step.plan("rnn_tanh", x, state, [w])


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("class_name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_non_contiguous_inputs_and_states(class_name, grad):
    """A decoder's ``seq[:, t]`` and a transposed state: the loops read copies
    that live through the call, and autograd differentiates through them."""
    theirs = getattr(nn, class_name)(4, 5, dtype=torch.float64)
    ours = getattr(rnnkit, class_name).from_torch(theirs)
    seq = torch.randn(3, 6, 4, dtype=torch.float64)
    x = seq[:, 2].requires_grad_(grad) if grad else seq[:, 2]
    h = torch.randn(5, 3, dtype=torch.float64).t().requires_grad_(grad)
    hx = (h, torch.randn(3, 5, dtype=torch.float64)) if class_name == "LSTMCell" else h
    with torch.set_grad_enabled(grad):
        if grad:
            for got, want in zip(_gradients(ours, x, hx), _gradients(theirs, x, hx)):
                _close(tuple(g for g in got if g is not None), tuple(g for g in want if g is not None), torch.float64)
        else:
            _close(ours(x, hx), theirs(x, hx), torch.float64)
    layer = rnnkit.GRU(4, 5, batch_first=True, bidirectional=True, dtype=torch.float64)
    reference = nn.GRU(4, 5, batch_first=True, bidirectional=True, dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    with torch.set_grad_enabled(grad):
        _close(layer(seq[:, 2:3]), reference(seq[:, 2:3]), torch.float64)  # (N, 1, H_in), steps strided


@pytest.mark.parametrize("class_name", [cell.cell_class for cell in GRADIENT_CELLS])
def test_a_differentiable_backward_through_a_transposed_state(class_name):
    """create_graph=True: the gradient of a state given as a view reaches it."""
    theirs = getattr(nn, class_name)(4, 5, dtype=torch.float64)
    ours = getattr(rnnkit, class_name).from_torch(theirs)
    x = torch.randn(3, 4, dtype=torch.float64)
    results = []
    for cell in (ours, theirs):
        h = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).t().requires_grad_()
        hx = (h, torch.zeros(3, 5, dtype=torch.float64)) if class_name == "LSTMCell" else h
        out = cell(x, hx)
        (grad_h,) = torch.autograd.grad(_tensors(out)[0].square().sum(), h, create_graph=True)
        (grad_grad,) = torch.autograd.grad(grad_h.square().sum(), h)
        results.append((grad_h.detach(), grad_grad))
    _close(results[0], results[1], torch.float64)


@pytest.mark.parametrize("class_name", [cell.cell_class for cell in GRADIENT_CELLS])
def test_outputs_changed_in_place_before_backward(class_name):
    """As with torch.nn and the reference: the backward pass keeps no output."""
    theirs = getattr(nn, class_name)(4, 5)
    ours = getattr(rnnkit, class_name).from_torch(theirs)
    x, mask = torch.randn(2, 4), torch.tensor([[1.0], [0.0]])
    grads = []
    for cell in (ours, theirs):
        out = _tensors(cell(x))
        for part in out:
            part.mul_(mask)  # sequences that ended
        sum(part.sum() for part in out).backward()
        grads.append(tuple(p.grad for p in cell.parameters()))
    _close(grads[0], grads[1], torch.float32)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # torch's make_dual, on first use
@pytest.mark.parametrize("class_name, shape", [("LSTMCell", (2, 4)), ("GRU", (1, 2, 4)), ("LSTM", (3, 2, 4))])
def test_forward_mode_ad_goes_to_the_reference(class_name, shape):
    """An open dual level: the loops' Functions have no jvp, so neither the
    one-step loops nor the layer's take the call; the tangents are the
    reference's (a directional derivative, checked by finite differences)."""
    import torch.autograd.forward_ad as forward_ad

    module = getattr(rnnkit, class_name)(4, 5, dtype=torch.float64)
    x, tangent = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    with torch.no_grad(), forward_ad.dual_level():
        found = [forward_ad.unpack_dual(o).tangent for o in _tensors(module(forward_ad.make_dual(x, tangent)))]
    step = 1e-6
    with torch.no_grad():
        ahead, behind = _tensors(module(x + step * tangent)), _tensors(module(x - step * tangent))
    for got, a, b in zip(found, ahead, behind):
        torch.testing.assert_close(got, (a - b) / (2 * step), rtol=1e-6, atol=1e-8)


def test_a_square_weight_transposed_through_data_is_seen():
    cell = rnnkit.RNNCell(5, 5)
    theirs = nn.RNNCell(5, 5)
    x = torch.randn(2, 5)
    with torch.no_grad():
        cell(x)
        cell.weight_hh.data = cell.weight_hh.data.t()  # the same address and shape, another layout
        theirs.load_state_dict(cell.state_dict())
        h = torch.randn(2, 5)
        _close(cell(x, h), theirs(x, h), torch.float32)
