"""rnnkit's layers and cells against their torch.nn twins: outputs, states and
gradients for every configuration that matters, conversions and initialisation."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.kinds import CLASSES, KINDS
from equivalence import BATCH, HIDDEN, INPUT, KIND_OPTIONS, STEPS, assert_same, build, flat, run


LAYER_CONFIGS = [
    dict(class_name=class_name, num_layers=layers, bias=bias, bidirectional=bidirectional, **options)
    for class_name, all_options in KIND_OPTIONS.items()
    for options in all_options
    for layers, bias, bidirectional in itertools.product((1, 2, 3), (True, False), (False, True))
]


def config_id(config: dict) -> str:
    return "-".join(str(v) if k == "class_name" else f"{k}={v}" for k, v in config.items())


def random_state(config: dict, batch: int | None, dtype):
    """A random ``hx`` for ``config``: a tensor, or ``(h_0, c_0)`` for an LSTM."""
    stacked = config.get("num_layers", 1) * (2 if config.get("bidirectional") else 1)
    parts = CLASSES[config["class_name"]][0].state
    sizes = [config.get("proj_size") or HIDDEN] + [HIDDEN] * (len(parts) - 1)
    parts = tuple(
        torch.randn((stacked, size) if batch is None else (stacked, batch, size), dtype=dtype)
        for size in sizes
    )
    return parts[0] if len(parts) == 1 else parts


def by_kind(every: int):
    """A sample of LAYER_CONFIGS that still covers every layer class_name and option."""
    return LAYER_CONFIGS[::every]


@pytest.mark.parametrize("config", LAYER_CONFIGS, ids=config_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_layer_matches_torch(backend, config, dtype, batch_first, with_hx):
    ours, theirs = build(config, dtype, batch_first=batch_first)
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    x = torch.randn(shape, dtype=dtype)
    hx = random_state(config, BATCH, dtype) if with_hx else None
    assert_same(run(ours, x, hx), run(theirs, x, hx), dtype)


@pytest.mark.parametrize("config", by_kind(3), ids=config_id)
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched_input_matches_torch(backend, config, with_hx):
    ours, theirs = build(config)
    x = torch.randn(STEPS, INPUT, dtype=torch.float64)
    hx = random_state(config, None, torch.float64) if with_hx else None
    assert_same(run(ours, x, hx), run(theirs, x, hx), torch.float64)


@pytest.mark.parametrize("config", by_kind(3), ids=config_id)
@pytest.mark.parametrize("batch", [1, BATCH])
@pytest.mark.parametrize("with_hx", [False, True])
def test_one_step_calls_match_torch(config, batch, with_hx):
    """A layer called one step at a time, as streaming does (``auto`` gives
    these calls to the reference), state carried from call to call."""
    ours, theirs = build(config)
    hx = random_state(config, batch, torch.float64) if with_hx else None
    for _ in range(2):
        x = torch.randn(1, batch, INPUT, dtype=torch.float64)
        ours_run, theirs_run = run(ours, x, hx), run(theirs, x, hx)
        assert_same(ours_run, theirs_run, torch.float64)
        with torch.no_grad():
            hx = theirs(x, hx)[1]


@pytest.mark.parametrize("lengths", [[6, 4, 2], [2, 6, 4], [3, 3, 3], [1, 6, 1]], ids=str)
@pytest.mark.parametrize("config", by_kind(5), ids=config_id)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_input_matches_torch(backend, lengths, config, batch_first, with_hx):
    """Sorted and unsorted variable-length batches: each sequence's forward state
    ends on its own last step, its backward pass starts there."""
    ours, theirs = build(config, batch_first=batch_first)
    lengths = torch.tensor(lengths)
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    x = torch.randn(shape, dtype=torch.float64)
    hx = random_state(config, BATCH, torch.float64) if with_hx else None
    a = run(ours, x, hx, lengths=lengths, batch_first=batch_first)
    b = run(theirs, x, hx, lengths=lengths, batch_first=batch_first)
    assert_same(a, b, torch.float64)


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_packed_output_keeps_the_batch_order(class_name):
    ours, theirs = build(dict(class_name=class_name, num_layers=2, bidirectional=True))
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([2, 6, 4]), enforce_sorted=False)
    out, _ = ours(packed)
    expected, _ = theirs(packed)
    assert torch.equal(out.batch_sizes, expected.batch_sizes)
    assert torch.equal(out.sorted_indices, expected.sorted_indices)
    assert torch.equal(out.unsorted_indices, expected.unsorted_indices)


@pytest.mark.parametrize("config", by_kind(4), ids=config_id)
def test_gradcheck(backend, config):
    ours, _ = build(config)
    x = torch.randn(3, 2, INPUT, dtype=torch.float64, requires_grad=True)
    hx = random_state(config, 2, torch.float64)
    hx = (hx,) if isinstance(hx, torch.Tensor) else hx
    hx = tuple(h.requires_grad_() for h in hx)
    names = [name for name, _ in ours.named_parameters()]

    def f(x, *tensors):
        state, weights = tensors[: len(hx)], tensors[len(hx) :]
        state = state[0] if len(state) == 1 else state
        output, final = torch.func.functional_call(ours, dict(zip(names, weights)), (x, state))
        return (output, *final) if isinstance(final, tuple) else (output, final)

    assert torch.autograd.gradcheck(f, (x, *hx, *ours.parameters()), fast_mode=True)


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_driver_matches_stepping_the_cell_by_hand(class_name):
    """A one-layer network is its cell applied step by step (the seed's RNNCell versus RNN)."""
    layer = getattr(rnnkit, class_name)(INPUT, HIDDEN, dtype=torch.float64)
    cell = getattr(rnnkit, CLASSES[class_name][0].cell_class)(INPUT, HIDDEN, dtype=torch.float64)
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in layer.state_dict().items()})
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    layered_state = random_state(dict(class_name=class_name), BATCH, torch.float64)  # (1, N, H) each
    output, final = layer(x, layered_state)
    two_part = isinstance(layered_state, tuple)  # an LSTM's (h, c)
    state = tuple(s[0] for s in layered_state) if two_part else layered_state[0]
    for t in range(STEPS):
        state = cell(x[t], state)
        torch.testing.assert_close(output[t], state[0] if two_part else state)
    if two_part:
        torch.testing.assert_close(torch.stack([final[0][0], final[1][0]]), torch.stack(state))
    else:
        torch.testing.assert_close(final[0], state)


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_reverse_direction_reads_the_sequence_backwards(class_name):
    layer = getattr(rnnkit, class_name)(INPUT, HIDDEN, bidirectional=True, dtype=torch.float64)
    forward_only = getattr(rnnkit, class_name)(INPUT, HIDDEN, dtype=torch.float64)
    forward_only.load_state_dict(
        {k.replace("_reverse", ""): v for k, v in layer.state_dict().items() if "_reverse" in k}
    )
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    output, _ = layer(x)
    flipped, _ = forward_only(x.flip(0))
    torch.testing.assert_close(output[..., HIDDEN:], flipped.flip(0))


# -- the seed's example --------------------------------------------------------------


def test_seed_example():
    """RNN(input_size=5, hidden_size=8, num_layers=2) on a (3, 2, 5) input with h_0 (2, 2, 8)."""
    rnn = rnnkit.RNN(input_size=5, hidden_size=8, num_layers=2)
    output, h_n = rnn(torch.randn(3, 2, 5), torch.randn(2, 2, 8))
    assert output.shape == (3, 2, 8)
    assert h_n.shape == (2, 2, 8)
    torch.testing.assert_close(output[-1], h_n[-1])


# -- dropout -------------------------------------------------------------------------


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_dropout_is_inactive_in_eval_mode(class_name):
    ours, theirs = build(dict(class_name=class_name, num_layers=3, dropout=0.5))
    ours.eval(), theirs.eval()
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    assert_same(run(ours, x), run(theirs, x), torch.float64)


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_dropout_one_zeroes_every_layer_input_but_the_first(backend, class_name):
    ours, theirs = build(dict(class_name=class_name, num_layers=2, dropout=1.0))
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    assert_same(run(ours, x), run(theirs, x), torch.float64)


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_dropout_draws_the_same_masks_as_torch_for_the_same_seed(backend, class_name):
    ours, theirs = build(dict(class_name=class_name, num_layers=3, dropout=0.4, bidirectional=True))
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    torch.manual_seed(7)
    a = run(ours, x)
    torch.manual_seed(7)
    b = run(theirs, x)
    assert_same(a, b, torch.float64)


def test_dropout_changes_the_output_in_training_mode_only():
    layer = rnnkit.RNN(INPUT, HIDDEN, num_layers=2, dropout=0.5)
    x = torch.randn(STEPS, BATCH, INPUT)
    train_a, train_b = layer(x)[0], layer(x)[0]
    assert not torch.equal(train_a, train_b)
    layer.eval()
    assert torch.equal(layer(x)[0], layer(x)[0])


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_dropout_with_one_layer_warns_like_torch(class_name):
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        getattr(rnnkit, class_name)(INPUT, HIDDEN, dropout=0.5)


# -- cells ---------------------------------------------------------------------------

CELL_CONFIGS = [
    dict(class_name=CLASSES[layer][0].cell_class, **options)
    for layer, variants in KIND_OPTIONS.items()
    for options in variants
    if "proj_size" not in options  # torch's cells have no projection
]


def build_cell(config: dict, dtype=torch.float64, **more):
    config = dict(config, **more)
    class_name = config.pop("class_name")
    theirs = getattr(nn, class_name)(INPUT, HIDDEN, dtype=dtype, **config)
    return getattr(rnnkit, class_name).from_torch(theirs), theirs


def random_cell_state(class_name: str, batch: int | None, dtype):
    shape = (HIDDEN,) if batch is None else (batch, HIDDEN)
    parts = tuple(torch.randn(shape, dtype=dtype) for _ in CLASSES[class_name][0].state)
    return parts if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("config", CELL_CONFIGS, ids=config_id)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_cell_matches_torch(config, bias, dtype, batched, with_hx):
    ours, theirs = build_cell(config, dtype, bias=bias)
    x = torch.randn((BATCH, INPUT) if batched else (INPUT,), dtype=dtype)
    hx = random_cell_state(config["class_name"], BATCH if batched else None, dtype) if with_hx else None
    assert_same(run(ours, x, hx), run(theirs, x, hx), dtype)


@pytest.mark.parametrize("config", CELL_CONFIGS, ids=config_id)
def test_cell_gradcheck(config):
    ours, _ = build_cell(config)
    x = torch.randn(BATCH, INPUT, dtype=torch.float64, requires_grad=True)
    hx = random_cell_state(config["class_name"], BATCH, torch.float64)
    if isinstance(hx, tuple):
        h, c = (t.requires_grad_() for t in hx)
        assert torch.autograd.gradcheck(lambda x, h, c: ours(x, (h, c)), (x, h, c))
    else:
        assert torch.autograd.gradcheck(ours, (x, hx.requires_grad_()))


# -- parameters, initialisation, conversions ------------------------------------------


@pytest.mark.parametrize("config", by_kind(5), ids=config_id)
def test_same_seed_gives_the_same_weights_as_torch(config):
    config = dict(config)
    class_name = config.pop("class_name")
    torch.manual_seed(3)
    ours = getattr(rnnkit, class_name)(INPUT, HIDDEN, **config)
    torch.manual_seed(3)
    theirs = getattr(nn, class_name)(INPUT, HIDDEN, **config)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(p, q), name
    assert [[p.shape for p in ws] for ws in ours.all_weights] == [
        [p.shape for p in ws] for ws in theirs.all_weights
    ]


@pytest.mark.parametrize("config", CELL_CONFIGS, ids=config_id)
@pytest.mark.parametrize("bias", [True, False])
def test_cell_same_seed_gives_the_same_weights_as_torch(config, bias):
    config = dict(config, bias=bias)
    class_name = config.pop("class_name")
    torch.manual_seed(3)
    ours = getattr(rnnkit, class_name)(INPUT, HIDDEN, **config)
    torch.manual_seed(3)
    theirs = getattr(nn, class_name)(INPUT, HIDDEN, **config)
    assert (ours.bias_ih is None) == (not bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), theirs.parameters()))


def test_initialisation_bounds():
    layer = rnnkit.LSTM(INPUT, 16, num_layers=2, proj_size=4)
    for p in layer.parameters():
        assert p.abs().max() <= 1 / 4
    assert max(p.abs().max() for p in layer.parameters()) > 0.2


@pytest.mark.parametrize("config", by_kind(7), ids=config_id)
def test_state_dict_round_trips_both_ways(config):
    config = dict(config)
    class_name = config.pop("class_name")
    theirs = getattr(nn, class_name)(INPUT, HIDDEN, **config)
    ours = getattr(rnnkit, class_name)(INPUT, HIDDEN, **config)
    ours.load_state_dict(theirs.state_dict())
    back = getattr(nn, class_name)(INPUT, HIDDEN, **config)
    back.load_state_dict(ours.state_dict())
    for p, q in zip(back.parameters(), theirs.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("config", by_kind(6), ids=config_id)
def test_from_torch_and_to_torch_keep_configuration_and_weights(config):
    class_name = config["class_name"]
    ours, theirs = build(config, batch_first=True, dropout=0.25 if config["num_layers"] > 1 else 0.0)
    theirs.eval()
    ours = getattr(rnnkit, class_name).from_torch(theirs)
    assert isinstance(ours, getattr(rnnkit, class_name)) and not ours.training
    back = ours.to_torch()
    assert type(back) is getattr(nn, class_name) and not back.training
    for name in (*ours.config_names, "mode"):
        assert getattr(ours, name) == getattr(theirs, name) == getattr(back, name), name
    for p, q, r in zip(ours.parameters(), theirs.parameters(), back.parameters()):
        assert p.dtype == torch.float64 and torch.equal(p, q) and torch.equal(q, r)


@pytest.mark.parametrize("config", CELL_CONFIGS, ids=config_id)
def test_cell_from_torch_and_to_torch(config):
    ours, theirs = build_cell(config, bias=False)
    back = ours.to_torch()
    assert type(back) is type(theirs)
    for name in ours.config_names:
        assert getattr(ours, name) == getattr(theirs, name) == getattr(back, name), name
    assert all(torch.equal(p, q) for p, q in zip(back.parameters(), theirs.parameters()))


def test_from_torch_rejects_another_module_type():
    with pytest.raises(TypeError, match="expects a torch.nn.RNN, got LSTM"):
        rnnkit.RNN.from_torch(nn.LSTM(INPUT, HIDDEN))


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (rnnkit.RNN(5, 8, 2), nn.RNN(5, 8, 2)),
        (
            rnnkit.RNN(5, 8, bias=False, batch_first=True, bidirectional=True),
            nn.RNN(5, 8, bias=False, batch_first=True, bidirectional=True),
        ),
        (rnnkit.LSTM(5, 8, 2, proj_size=3, dropout=0.5), nn.LSTM(5, 8, 2, proj_size=3, dropout=0.5)),
        (rnnkit.GRU(5, 8, bidirectional=True), nn.GRU(5, 8, bidirectional=True)),
        (rnnkit.RNNCell(5, 8, nonlinearity="relu"), nn.RNNCell(5, 8, nonlinearity="relu")),
        (rnnkit.LSTMCell(5, 8, bias=False), nn.LSTMCell(5, 8, bias=False)),
        (rnnkit.GRUCell(5, 8), nn.GRUCell(5, 8)),
    ],
    ids=repr,
)
def test_repr_follows_torch(ours, theirs):
    assert repr(ours) == repr(theirs)


def test_rnn_repr_names_a_relu_nonlinearity():
    """torch.nn.RNN leaves it out of its repr; rnnkit shows it, as torch's RNNCell does."""
    assert repr(rnnkit.RNN(5, 8, nonlinearity="relu")) == "RNN(5, 8, nonlinearity=relu)"


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_module_casts_like_any_module(class_name):
    layer = getattr(rnnkit, class_name)(INPUT, HIDDEN, num_layers=2).double()
    output, _ = layer(torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64))
    assert output.dtype == torch.float64
    layer.flatten_parameters()  # a no-op kept for code written against torch.nn


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_optimizer_steps_train_the_layer(backend, class_name):
    layer = getattr(rnnkit, class_name)(INPUT, HIDDEN, num_layers=2, batch_first=True)
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


@pytest.mark.parametrize("class_name, options", [(k, o) for k, opts in KIND_OPTIONS.items() for o in opts])
@pytest.mark.parametrize("frozen", ["all", "first layer"])
def test_frozen_weights_get_no_gradient_and_the_rest_match_torch(backend, class_name, options, frozen):
    ours, theirs = build(dict(class_name=class_name, num_layers=2, bidirectional=True, **options))
    for module in (ours, theirs):
        for name, parameter in module.named_parameters():
            parameter.requires_grad_(frozen == "first layer" and "_l0" not in name)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    grads = []
    for module in (ours, theirs):
        given = x.clone().requires_grad_()
        module(given)[0].pow(2).sum().backward()
        grads.append([given.grad] + [p.grad for p in module.parameters()])
    for got, expected in zip(*grads):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected)


# -- the recurrence is ours ------------------------------------------------------------

RECURRENT_OPS = [*KINDS, *(f"{kind}_cell" for kind in KINDS)]
"""torch's own recurrent ops, which it names by the kinds' keys."""


def test_forward_never_calls_a_built_in_rnn_op(monkeypatch, backend):
    def forbidden(*args, **kwargs):
        raise AssertionError("a built-in RNN op was called")

    for name in RECURRENT_OPS:
        monkeypatch.setattr(torch._VF, name, forbidden)
        monkeypatch.setattr(torch, name, forbidden)
    x = torch.randn(STEPS, BATCH, INPUT)
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 3]), enforce_sorted=False)
    for class_name in KIND_OPTIONS:
        layer = getattr(rnnkit, class_name)(INPUT, HIDDEN, num_layers=2, bidirectional=True)
        layer(x)[0].sum().backward()
        layer(packed)
        getattr(rnnkit, CLASSES[class_name][0].cell_class)(INPUT, HIDDEN)(x[0])
        with pytest.raises(AssertionError, match="built-in RNN op"):
            getattr(nn, class_name)(INPUT, HIDDEN)(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_cuda_matches_cpu(class_name):
    ours = getattr(rnnkit, class_name)(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    x = torch.randn(STEPS, BATCH, INPUT)
    expected, _ = ours(x)
    actual, _ = ours.cuda()(x.cuda())
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-4, atol=1e-5)


# -- what a user may do to a module ------------------------------------------------------


def test_a_replaced_parameter_of_the_wrong_shape_is_refused(backend):
    layer = rnnkit.RNN(INPUT, HIDDEN)
    layer.weight_hh_l0 = nn.Parameter(torch.randn(HIDDEN, 400))
    with pytest.raises(RuntimeError, match=r"weight_hh_l0 has shape \[5, 400\], expected \(5, 5\)"):
        layer(torch.randn(STEPS, BATCH, INPUT))


def test_conversions_keep_frozen_parameters_frozen():
    theirs = nn.LSTM(INPUT, HIDDEN)
    theirs.weight_ih_l0.requires_grad_(False)
    ours = rnnkit.LSTM.from_torch(theirs)
    assert [p.requires_grad for p in ours.parameters()] == [False, True, True, True]
    assert [p.requires_grad for p in ours.to_torch().parameters()] == [False, True, True, True]


# -- the weights a layer keeps between calls follow every change -------------------------


def _scale_in_place(module):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(1.5)


def _load_other_weights(module, assign=False):
    torch.manual_seed(7)
    other = {name: torch.randn_like(value) * 0.3 for name, value in module.state_dict().items()}
    module.load_state_dict(other, assign=assign)


def _replace_a_parameter(module):
    name = next(n for n, _ in module.named_parameters() if "weight_hh" in n)
    torch.manual_seed(8)
    setattr(module, name, nn.Parameter(torch.randn_like(getattr(module, name))))


def _reregister_a_parameter(module):
    name = next(n for n, _ in module.named_parameters() if "bias_ih" in n)
    module.register_parameter(name, nn.Parameter(getattr(module, name).detach() + 1))


def _swap_data(module):
    name = next(n for n, _ in module.named_parameters() if "weight_ih" in n)
    parameter = getattr(module, name)
    parameter.data = parameter.data.flip(0).clone()


def _optimizer_step(module):
    x = torch.randn(STEPS, BATCH, INPUT, dtype=next(module.parameters()).dtype)
    result = module(x) if hasattr(module, "num_layers") else module(x[0])
    module.zero_grad()
    flat(result).sum().backward()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter -= 0.5 * parameter.grad


EDITS = {
    "in-place edit under no_grad": _scale_in_place,
    "load_state_dict": _load_other_weights,
    "load_state_dict(assign=True)": lambda m: _load_other_weights(m, assign=True),
    "a new Parameter assigned": _replace_a_parameter,
    "register_parameter again": _reregister_a_parameter,
    "parameter.data replaced": _swap_data,
    "a gradient step": _optimizer_step,
    ".to(float64)": lambda m: m.to(torch.float64),
}
"""What a user may do to a module's weights between two calls."""


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_a_layer_sees_every_change_to_its_weights_since_the_last_call(backend, class_name, edit):
    ours, theirs = build(dict(class_name=class_name, num_layers=2, bidirectional=True), dtype=torch.float32)
    x = torch.randn(STEPS, BATCH, INPUT)
    ours(x)  # the weights are now kept from this call
    for module in (ours, theirs):
        torch.manual_seed(0)
        EDITS[edit](module)
    dtype = next(theirs.parameters()).dtype
    x = x.to(dtype)
    assert_same(run(ours, x), run(theirs, x), dtype)


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("config", CELL_CONFIGS, ids=config_id)
def test_a_cell_sees_every_change_to_its_weights_since_the_last_call(config, edit):
    ours, theirs = build_cell(config, dtype=torch.float32)
    x = torch.randn(BATCH, INPUT)
    ours(x)
    for module in (ours, theirs):
        torch.manual_seed(0)
        EDITS[edit](module)
    dtype = next(theirs.parameters()).dtype
    x = x.to(dtype)
    assert_same(run(ours, x), run(theirs, x), dtype)


def test_a_parametrized_weight_is_computed_afresh_every_call(backend):
    """With torch.nn.utils.parametrize the weight is no registered parameter
    but computed on access: it must not be kept from an earlier call."""
    ours, theirs = build(dict(class_name="GRU"))
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    ours(x)
    torch.nn.utils.parametrizations.weight_norm(ours, "weight_hh_l0")
    for scale in (1.0, 0.5):
        with torch.no_grad():
            ours.parametrizations.weight_hh_l0.original0.mul_(scale)  # the magnitude
            theirs.weight_hh_l0.copy_(ours.weight_hh_l0)
            torch.testing.assert_close(ours(x)[0], theirs(x)[0])
