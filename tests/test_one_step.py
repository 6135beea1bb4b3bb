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
from tests.equivalence import KIND_OPTIONS

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
    cell = rnnkit.GRUCell(4, 5)
    x, h = torch.randn(2, 4), torch.randn(2, 5)
    theirs = nn.GRUCell(4, 5)
    theirs.load_state_dict(cell.state_dict())
    _close(cell(x, h), theirs(x, h), torch.float32)  # autograd records it
    cell(x, h).sum().backward()
    assert cell.weight_hh.grad is not None
    with torch.no_grad():
        cell(x, h.requires_grad_())  # a state that wants a gradient: no graph under no_grad
    large = rnnkit.GRUCell(4, 5)
    with torch.no_grad():
        large(torch.randn(fused_step.MAX_ROWS + 1, 4))
    assert one_step_calls == [True]
    frozen = rnnkit.RNN(4, 5).requires_grad_(False)  # nothing to record, with grad mode on
    frozen(torch.randn(1, 2, 4))
    assert one_step_calls == [True, True]


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
        assert len(fused_step.plan("rnn_tanh", x, state, [w])) == 1
        assert "one step, got 2" in fused_step.plan("rnn_tanh", torch.randn(2, 2, 4), (torch.zeros(1, 2, 5),), [w])
        assert "bfloat16" in fused_step.plan("rnn_tanh", x.bfloat16(), state, [w])
        assert "more than" in fused_step.plan("rnn_tanh", torch.randn(fused_step.MAX_ROWS + 1, 4), state, [w])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert "autocast" in fused_step.plan("rnn_tanh", x, state, [w])
        cell.double()
        w = cell._cached_weights(cell._one_direction)
        assert "not a contiguous torch.float32" in fused_step.plan("rnn_tanh", x, state, [w])
