"""rnnkit.RNN and rnnkit.RNNCell against torch.nn.RNN and torch.nn.RNNCell."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from equivalence import assert_same, run

INPUT, HIDDEN, STEPS, BATCH = 4, 5, 6, 3

LAYER_CONFIGS = [
    dict(num_layers=layers, nonlinearity=nonlinearity, bias=bias, bidirectional=bidirectional)
    for layers, nonlinearity, bias, bidirectional in itertools.product(
        (1, 2, 3), ("tanh", "relu"), (True, False), (False, True)
    )
]


def config_id(config: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in config.items())


def make_pair(dtype=torch.float64, **config):
    theirs = nn.RNN(INPUT, HIDDEN, dtype=dtype, **config)
    return rnnkit.RNN.from_torch(theirs), theirs


def random_state(config: dict, batch: int | None, dtype) -> torch.Tensor:
    stacked = config.get("num_layers", 1) * (2 if config.get("bidirectional") else 1)
    shape = (stacked, HIDDEN) if batch is None else (stacked, batch, HIDDEN)
    return torch.randn(shape, dtype=dtype)


@pytest.mark.parametrize("config", LAYER_CONFIGS, ids=config_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_layer_matches_torch(backend, config, dtype, batch_first, with_hx):
    ours, theirs = make_pair(dtype, batch_first=batch_first, **config)
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    x = torch.randn(shape, dtype=dtype)
    hx = random_state(config, BATCH, dtype) if with_hx else None
    assert_same(run(ours, x, hx), run(theirs, x, hx), dtype)


@pytest.mark.parametrize("config", LAYER_CONFIGS[::3], ids=config_id)
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched_input_matches_torch(backend, config, with_hx):
    ours, theirs = make_pair(**config)
    x = torch.randn(STEPS, INPUT, dtype=torch.float64)
    hx = random_state(config, None, torch.float64) if with_hx else None
    a, b = run(ours, x, hx), run(theirs, x, hx)
    assert_same(a, b, torch.float64)
    output, h_n = ours(x, hx)
    d = 2 if config["bidirectional"] else 1
    assert output.shape == (STEPS, d * HIDDEN)
    assert h_n.shape == (config["num_layers"] * d, HIDDEN)


@pytest.mark.parametrize("lengths", [[6, 4, 2], [2, 6, 4], [3, 3, 3], [1, 6, 1]], ids=str)
@pytest.mark.parametrize("config", LAYER_CONFIGS[::5], ids=config_id)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_input_matches_torch(backend, lengths, config, batch_first, with_hx):
    """Sorted and unsorted variable-length batches: each sequence's forward state
    ends on its own last step, its backward pass starts there."""
    ours, theirs = make_pair(batch_first=batch_first, **config)
    lengths = torch.tensor(lengths)
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    x = torch.randn(shape, dtype=torch.float64)
    hx = random_state(config, BATCH, torch.float64) if with_hx else None
    a = run(ours, x, hx, lengths=lengths, batch_first=batch_first)
    b = run(theirs, x, hx, lengths=lengths, batch_first=batch_first)
    assert_same(a, b, torch.float64)


def test_packed_output_keeps_the_batch_order():
    ours, theirs = make_pair(num_layers=2, bidirectional=True)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([2, 6, 4]), enforce_sorted=False)
    out, _ = ours(packed)
    expected, _ = theirs(packed)
    assert torch.equal(out.batch_sizes, expected.batch_sizes)
    assert torch.equal(out.sorted_indices, expected.sorted_indices)
    assert torch.equal(out.unsorted_indices, expected.unsorted_indices)


@pytest.mark.parametrize("config", LAYER_CONFIGS[::4], ids=config_id)
def test_gradcheck(config):
    ours = rnnkit.RNN(INPUT, HIDDEN, dtype=torch.float64, **config)
    x = torch.randn(3, 2, INPUT, dtype=torch.float64, requires_grad=True)
    hx = random_state(config, 2, torch.float64).requires_grad_()
    params = tuple(ours.parameters())

    def f(x, hx, *weights):
        names = [name for name, _ in ours.named_parameters()]
        out, h_n = torch.func.functional_call(ours, dict(zip(names, weights)), (x, hx))
        return out, h_n

    assert torch.autograd.gradcheck(f, (x, hx, *params))


def test_driver_matches_stepping_the_cell_by_hand():
    """A one-layer RNN is its cell applied step by step: the seed's RNNCell versus RNN."""
    layer = rnnkit.RNN(INPUT, HIDDEN, dtype=torch.float64)
    cell = rnnkit.RNNCell(INPUT, HIDDEN, dtype=torch.float64)
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in layer.state_dict().items()})
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    h = torch.randn(BATCH, HIDDEN, dtype=torch.float64)
    output, h_n = layer(x, h.unsqueeze(0))
    for t in range(STEPS):
        h = cell(x[t], h)
        torch.testing.assert_close(output[t], h)
    torch.testing.assert_close(h_n[0], h)


def test_reverse_direction_reads_the_sequence_backwards():
    layer = rnnkit.RNN(INPUT, HIDDEN, bidirectional=True, dtype=torch.float64)
    forward_only = rnnkit.RNN(INPUT, HIDDEN, dtype=torch.float64)
    forward_only.load_state_dict(
        {k.replace("_reverse", ""): v for k, v in layer.state_dict().items() if "_reverse" in k}
    )
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    output, h_n = layer(x)
    flipped, h_flipped = forward_only(x.flip(0))
    torch.testing.assert_close(output[..., HIDDEN:], flipped.flip(0))
    torch.testing.assert_close(h_n[1], h_flipped[0])


# -- the seed's example --------------------------------------------------------------


def test_seed_example():
    """RNN(input_size=5, hidden_size=8, num_layers=2) on a (3, 2, 5) input with h_0 (2, 2, 8)."""
    rnn = rnnkit.RNN(input_size=5, hidden_size=8, num_layers=2)
    output, h_n = rnn(torch.randn(3, 2, 5), torch.randn(2, 2, 8))
    assert output.shape == (3, 2, 8)
    assert h_n.shape == (2, 2, 8)
    torch.testing.assert_close(output[-1], h_n[-1])


# -- dropout -------------------------------------------------------------------------


def test_dropout_is_inactive_in_eval_mode():
    ours, theirs = make_pair(num_layers=3, dropout=0.5)
    ours.eval(), theirs.eval()
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    assert_same(run(ours, x), run(theirs, x), torch.float64)
    torch.testing.assert_close(ours(x)[0], ours(x)[0], rtol=0, atol=0)


def test_dropout_one_zeroes_every_layer_input_but_the_first():
    ours, theirs = make_pair(num_layers=2, dropout=1.0)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    a, b = run(ours, x), run(theirs, x)
    assert_same(a, b, torch.float64)


def test_dropout_draws_the_same_masks_as_torch_for_the_same_seed():
    ours, theirs = make_pair(num_layers=3, dropout=0.4, bidirectional=True)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    torch.manual_seed(7)
    a = ours(x)
    torch.manual_seed(7)
    b = theirs(x)
    torch.testing.assert_close(a, b)


def test_dropout_changes_the_output_in_training_mode_only():
    layer = rnnkit.RNN(INPUT, HIDDEN, num_layers=2, dropout=0.5)
    x = torch.randn(STEPS, BATCH, INPUT)
    train_a, train_b = layer(x)[0], layer(x)[0]
    assert not torch.equal(train_a, train_b)
    layer.eval()
    assert torch.equal(layer(x)[0], layer(x)[0])


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        rnnkit.RNN(INPUT, HIDDEN, dropout=0.5)


# -- cells ---------------------------------------------------------------------------


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_cell_matches_torch(nonlinearity, bias, dtype, batched, with_hx):
    theirs = nn.RNNCell(INPUT, HIDDEN, bias=bias, nonlinearity=nonlinearity, dtype=dtype)
    ours = rnnkit.RNNCell.from_torch(theirs)
    x = torch.randn((BATCH, INPUT) if batched else (INPUT,), dtype=dtype)
    hx = torch.randn((BATCH, HIDDEN) if batched else (HIDDEN,), dtype=dtype) if with_hx else None
    assert_same(run(ours, x, hx), run(theirs, x, hx), dtype)


def test_cell_gradcheck():
    cell = rnnkit.RNNCell(INPUT, HIDDEN, nonlinearity="tanh", dtype=torch.float64)
    x = torch.randn(BATCH, INPUT, dtype=torch.float64, requires_grad=True)
    h = torch.randn(BATCH, HIDDEN, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cell, (x, h))


# -- parameters, initialisation, conversions ------------------------------------------


@pytest.mark.parametrize("config", LAYER_CONFIGS[::7], ids=config_id)
def test_same_seed_gives_the_same_weights_as_torch(config):
    torch.manual_seed(3)
    ours = rnnkit.RNN(INPUT, HIDDEN, **config)
    torch.manual_seed(3)
    theirs = nn.RNN(INPUT, HIDDEN, **config)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(p, q), name
    assert [[p.shape for p in ws] for ws in ours.all_weights] == [
        [p.shape for p in ws] for ws in theirs.all_weights
    ]


def test_cell_same_seed_gives_the_same_weights_as_torch():
    torch.manual_seed(3)
    ours = rnnkit.RNNCell(INPUT, HIDDEN, bias=False)
    torch.manual_seed(3)
    theirs = nn.RNNCell(INPUT, HIDDEN, bias=False)
    assert ours.bias_ih is None and ours.bias_hh is None
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), theirs.parameters()))


def test_initialisation_bounds():
    layer = rnnkit.RNN(INPUT, 16, num_layers=2)
    for p in layer.parameters():
        assert p.abs().max() <= 1 / 4
    assert p.abs().max() > 0.2


def test_state_dict_round_trips_both_ways():
    theirs = nn.RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    ours = rnnkit.RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    ours.load_state_dict(theirs.state_dict())
    back = nn.RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    back.load_state_dict(ours.state_dict())
    for p, q in zip(back.parameters(), theirs.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("config", LAYER_CONFIGS[::6], ids=config_id)
def test_from_torch_and_to_torch_keep_configuration_and_weights(config):
    theirs = nn.RNN(INPUT, HIDDEN, batch_first=True, dtype=torch.float64, **config).eval()
    ours = rnnkit.RNN.from_torch(theirs)
    assert isinstance(ours, rnnkit.RNN) and not ours.training
    back = ours.to_torch()
    assert type(back) is nn.RNN and not back.training
    for name in rnnkit.RNN.config_names:
        assert getattr(ours, name) == getattr(theirs, name) == getattr(back, name), name
    for p, q, r in zip(ours.parameters(), theirs.parameters(), back.parameters()):
        assert p.dtype == torch.float64 and torch.equal(p, q) and torch.equal(q, r)


def test_cell_from_torch_and_to_torch():
    theirs = nn.RNNCell(INPUT, HIDDEN, nonlinearity="relu")
    ours = rnnkit.RNNCell.from_torch(theirs)
    assert ours.nonlinearity == "relu"
    back = ours.to_torch()
    assert type(back) is nn.RNNCell and back.nonlinearity == "relu"
    assert all(torch.equal(p, q) for p, q in zip(back.parameters(), theirs.parameters()))


def test_from_torch_rejects_another_module_type():
    with pytest.raises(TypeError, match="expects a torch.nn.RNN, got LSTM"):
        rnnkit.RNN.from_torch(nn.LSTM(INPUT, HIDDEN))


def test_repr_follows_torch():
    assert repr(rnnkit.RNN(5, 8, 2)) == "RNN(5, 8, num_layers=2)"
    assert repr(rnnkit.RNN(5, 8, bias=False, batch_first=True, bidirectional=True)) == (
        "RNN(5, 8, bias=False, batch_first=True, bidirectional=True)"
    )
    assert repr(rnnkit.RNNCell(5, 8, nonlinearity="relu")) == "RNNCell(5, 8, nonlinearity=relu)"


def test_module_moves_and_casts_like_any_module():
    layer = rnnkit.RNN(INPUT, HIDDEN, num_layers=2).double()
    output, h_n = layer(torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64))
    assert output.dtype == h_n.dtype == torch.float64
    layer.flatten_parameters()  # a no-op kept for code written against torch.nn


def test_optimizer_step_trains_the_layer():
    layer = rnnkit.RNN(INPUT, HIDDEN, num_layers=2, batch_first=True)
    x, target = torch.randn(8, STEPS, INPUT), torch.randn(8, STEPS, HIDDEN) * 0.3
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = ((layer(x)[0] - target) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(layer.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# -- the recurrence is ours ------------------------------------------------------------


BUILT_IN_RNN_OPS = [
    (torch._VF, name) for name in ("rnn_tanh", "rnn_relu", "rnn_tanh_cell", "rnn_relu_cell")
] + [(torch, name) for name in ("rnn_tanh", "rnn_relu", "rnn_tanh_cell", "rnn_relu_cell")]


def test_forward_never_calls_a_built_in_rnn_op(monkeypatch, backend):
    def forbidden(*args, **kwargs):
        raise AssertionError("a built-in RNN op was called")

    for owner, name in BUILT_IN_RNN_OPS:
        monkeypatch.setattr(owner, name, forbidden)
    layer = rnnkit.RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    x = torch.randn(STEPS, BATCH, INPUT)
    layer(x)[0].sum().backward()
    layer(pack_padded_sequence(x, torch.tensor([6, 2, 3]), enforce_sorted=False))
    rnnkit.RNNCell(INPUT, HIDDEN)(x[0])
    with pytest.raises(AssertionError, match="built-in RNN op"):
        nn.RNN(INPUT, HIDDEN)(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    ours = rnnkit.RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    x = torch.randn(STEPS, BATCH, INPUT)
    expected, _ = ours(x)
    actual, _ = ours.cuda()(x.cuda())
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-4, atol=1e-5)
