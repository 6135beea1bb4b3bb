"""``lengths=`` and ``return_states=True`` on the sequence layers.

``lengths=`` against torch.nn's packed route (pack, run, unpack); every
step's states against torch's one-layer modules stepped by hand, sequence by
sequence, layer by layer; gradients of both; and every misuse.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.kernels import reference
from rnnkit.kernels.reference import DirectionWeights
from rnnkit.kinds import CLASSES
from rnnkit.layers.shapes import suffix
from equivalence import BATCH, HIDDEN, INPUT, KIND_OPTIONS, STEPS, flat

LENGTHS = [STEPS, 2, 4]  # one full, one short, one in between; not sorted
assert len(LENGTHS) == BATCH

CONFIGS = [
    dict(layer=layer, num_layers=layers, bidirectional=bidirectional, **options)
    for layer, variants in KIND_OPTIONS.items()
    for options in variants
    for layers, bidirectional in itertools.product((1, 2), (False, True))
]


def config_id(config: dict) -> str:
    return "-".join(str(v) if k == "layer" else f"{k}={v}" for k, v in config.items())


def build(config: dict, **more) -> tuple[nn.Module, nn.Module]:
    """``(ours, theirs)``: the rnnkit layer and its torch.nn twin, same weights, float64."""
    config = dict(config, **more)
    layer = config.pop("layer")
    theirs = getattr(nn, layer)(INPUT, HIDDEN, dtype=torch.float64, **config)
    return getattr(rnnkit, layer).from_torch(theirs), theirs


def parts_of(module: nn.Module) -> tuple[str, ...]:
    return CLASSES[type(module).__name__][0].state


def random_hx(module: nn.Module, batch: int | None = BATCH) -> tuple[Tensor, ...]:
    stacked = module.num_layers * (2 if module.bidirectional else 1)
    sizes = [getattr(module, "proj_size", 0) or HIDDEN] + [HIDDEN] * (len(parts_of(module)) - 1)
    return tuple(
        torch.randn((stacked, size) if batch is None else (stacked, batch, size), dtype=torch.float64)
        for size in sizes
    )


def as_hx(parts: tuple[Tensor, ...]):
    return parts if len(parts) > 1 else parts[0]


def weighted(value) -> Tensor:
    """A loss that weighs every element differently, so that every gradient is tested."""
    v = flat(value)
    g = torch.Generator().manual_seed(99)
    return (v * torch.randn(v.shape, generator=g, dtype=v.dtype)).sum()


# -- lengths= is the packed route -----------------------------------------------------


def packed_route(theirs: nn.Module, x: Tensor, hx, lengths, batch_first: bool):
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    output, state = theirs(packed, hx)
    output, _ = pad_packed_sequence(output, batch_first=batch_first, total_length=STEPS)
    return output, state


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_lengths_match_torch_packed_route(backend, config, batch_first):
    ours, theirs = build(config, batch_first=batch_first)
    shape = (BATCH, STEPS, INPUT) if batch_first else (STEPS, BATCH, INPUT)
    x = torch.randn(shape, dtype=torch.float64)
    hx = random_hx(ours)
    results = []
    for module, run in ((ours, lambda x, h: ours(x, h, lengths=LENGTHS)),
                        (theirs, lambda x, h: packed_route(theirs, x, h, LENGTHS, batch_first))):
        x_leaf = x.clone().requires_grad_()
        hx_leaves = tuple(h.clone().requires_grad_() for h in hx)
        output, state = run(x_leaf, as_hx(hx_leaves))
        (weighted(output) + weighted(state)).backward()
        grads = [x_leaf.grad, *(h.grad for h in hx_leaves), *(p.grad for p in module.parameters())]
        results.append((output.detach(), flat(state).detach(), grads))
    (out, state, grads), (t_out, t_state, t_grads) = results
    torch.testing.assert_close(out, t_out)
    torch.testing.assert_close(state, t_state)
    for got, expected in zip(grads, t_grads, strict=True):
        torch.testing.assert_close(got, expected)
    # zeros past each length, and no gradient flows into the padding
    time_axis = 1 if batch_first else 0
    for n, length in enumerate(LENGTHS):
        past = out.select(1 - time_axis, n).narrow(0, length, STEPS - length)
        assert not past.any()
        padding_grad = grads[0].select(1 - time_axis, n).narrow(0, length, STEPS - length)
        assert not padding_grad.any()


@pytest.mark.parametrize(
    "lengths",
    [LENGTHS, tuple(LENGTHS), [np.int64(n) for n in LENGTHS], torch.tensor(LENGTHS),
     torch.tensor(LENGTHS, dtype=torch.int32)],
    ids=["list", "tuple", "numpy-ints", "int64", "int32"],
)
def test_lengths_in_every_accepted_form_give_the_same_result(backend, lengths):
    layer = rnnkit.GRU(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    expected = layer(pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False))
    output, h_n = layer(x, lengths=lengths)
    torch.testing.assert_close(output, pad_packed_sequence(expected[0], total_length=STEPS)[0])
    torch.testing.assert_close(h_n, expected[1])


@pytest.mark.parametrize("layer", list(KIND_OPTIONS))
def test_lengths_with_dropout_between_layers_is_the_packed_route(backend, layer):
    """In training mode, with dropout drawn from the same seed, ``lengths=`` and a
    PackedSequence of the same batch give the same result."""
    module = getattr(rnnkit, layer)(INPUT, HIDDEN, num_layers=3, dropout=0.5, dtype=torch.float64)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    torch.manual_seed(7)
    output, state = module(x, lengths=LENGTHS)
    torch.manual_seed(7)
    packed_output, packed_state = module(pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False))
    torch.testing.assert_close(output, pad_packed_sequence(packed_output, total_length=STEPS)[0])
    torch.testing.assert_close(flat(state), flat(packed_state))


# -- return_states=True: every step's state of every layer ---------------------------------


def stepped_by_hand(theirs: nn.Module, x: Tensor, hx: tuple[Tensor, ...], lengths: list[int]):
    """Every layer's and direction's states, ``(L*D, T, N, ·)`` per part, from
    torch's own one-layer, one-direction module run one step at a time, each
    sequence alone, on the weights of that layer and direction (differentiable
    with respect to ``theirs``'s parameters); zeros past each length."""
    directions = 2 if theirs.bidirectional else 1
    cell = CLASSES[type(theirs).__name__][0]
    config = {name: getattr(theirs, name) for name in cell.layer_arguments}
    steps, batch, _ = x.shape
    history = [[] for _ in hx]  # per part, per (k, d): (T, N, ·)
    inputs = x
    for k in range(theirs.num_layers):
        single = type(theirs)(**(config | dict(
            input_size=inputs.shape[-1], num_layers=1, bidirectional=False, batch_first=False, dropout=0.0,
        )), dtype=torch.float64)
        layer_h = []
        for d in range(directions):
            weights = {name: getattr(theirs, name[: -len("_l0")] + suffix(k, d)) for name, _ in single.named_parameters()}
            per_part = [[[h.new_zeros(h.shape[-1]) for _ in range(batch)] for _ in range(steps)] for h in hx]
            for n, length in enumerate(lengths):
                state = tuple(h[k * directions + d, n].reshape(1, 1, -1) for h in hx)
                order = range(length - 1, -1, -1) if d else range(length)
                for t in order:
                    _, state = torch.func.functional_call(single, weights, (inputs[t : t + 1, n : n + 1], as_hx(state)))
                    state = state if isinstance(state, tuple) else (state,)
                    for part, s in enumerate(state):
                        per_part[part][t][n] = s.reshape(-1)
            stacked = [torch.stack([torch.stack(row) for row in p]) for p in per_part]  # (T, N, ·)
            for part, s in enumerate(stacked):
                history[part].append(s)
            layer_h.append(stacked[0])
        inputs = torch.cat(layer_h, dim=2)
    return tuple(torch.stack(h) for h in history)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_states_match_torch_stepped_by_hand(backend, config, with_lengths):
    ours, theirs = build(config)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    hx = random_hx(ours)
    lengths = LENGTHS if with_lengths else [STEPS] * BATCH

    x_ours, hx_ours = x.clone().requires_grad_(), tuple(h.clone().requires_grad_() for h in hx)
    output, h_n, states = ours(x_ours, as_hx(hx_ours), lengths=LENGTHS if with_lengths else None,
                               return_states=True)
    states = states if isinstance(states, tuple) else (states,)
    x_theirs, hx_theirs = x.clone().requires_grad_(), tuple(h.clone().requires_grad_() for h in hx)
    expected = stepped_by_hand(theirs, x_theirs, hx_theirs, lengths)
    assert len(states) == len(expected) == len(parts_of(ours))
    for got, want in zip(states, expected):
        torch.testing.assert_close(got, want)

    # the last layer's entries are the halves of output; h_n is each one's last step
    d = 2 if ours.bidirectional else 1
    last = states[0][-d:]  # (D, T, N, H_out)
    torch.testing.assert_close(torch.cat(list(last), dim=2), output)
    finals = h_n if isinstance(h_n, tuple) else (h_n,)
    for part, final in zip(states, finals):
        for n, length in enumerate(lengths):
            for kd in range(part.shape[0]):
                step = 0 if kd % d == 1 else length - 1
                torch.testing.assert_close(final[kd, n], part[kd, step, n])

    # a loss on the states back-propagates like torch's
    weighted(states).backward()
    weighted(expected).backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad)
    for ours_h, theirs_h in zip(hx_ours, hx_theirs):
        torch.testing.assert_close(ours_h.grad, theirs_h.grad)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("layer", list(KIND_OPTIONS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_states_follow_the_input_layout(layer, batch_first):
    module = getattr(rnnkit, layer)(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(STEPS, BATCH, INPUT)
    time_first = module(x.transpose(0, 1) if batch_first else x, return_states=True)
    states = time_first[2] if isinstance(time_first[2], tuple) else (time_first[2],)
    for s in states:
        assert s.shape[:3] == ((4, BATCH, STEPS) if batch_first else (4, STEPS, BATCH))
    # unbatched: the N axis goes, the rest is the batched result's
    alone = module(x[:, 0], return_states=True)  # (L, H_in) whatever batch_first says
    alone_states = alone[2] if isinstance(alone[2], tuple) else (alone[2],)
    for s, batched in zip(alone_states, states):
        assert s.shape == (4, STEPS, batched.shape[-1])
        expected = batched[:, 0] if batch_first else batched[:, :, 0]
        torch.testing.assert_close(s, expected)


def test_lstm_states_have_h_out_and_hidden_size_features():
    lstm = rnnkit.LSTM(INPUT, 8, num_layers=2, proj_size=3, bidirectional=True, batch_first=True)
    output, (h_n, c_n), (h_states, c_states) = lstm(torch.randn(BATCH, STEPS, INPUT), return_states=True)
    assert h_states.shape == (4, BATCH, STEPS, 3) and c_states.shape == (4, BATCH, STEPS, 8)


def test_without_return_states_the_result_is_torchs_pair():
    result = rnnkit.GRU(INPUT, HIDDEN)(torch.randn(STEPS, BATCH, INPUT), return_states=False)
    assert len(result) == 2


@pytest.mark.parametrize("config", [c for c in CONFIGS if c["num_layers"] == 2 and c["bidirectional"]],
                         ids=config_id)
def test_gradcheck_through_states_and_lengths(backend, config):
    ours, _ = build(config)
    steps, lengths = 3, [3, 1]
    x = torch.randn(steps, 2, INPUT, dtype=torch.float64, requires_grad=True)
    hx = tuple(h.requires_grad_() for h in random_hx(ours, batch=2))
    names = [name for name, _ in ours.named_parameters()]

    def f(x, *tensors):
        state, weights = tensors[: len(hx)], tensors[len(hx) :]
        output, _, states = torch.func.functional_call(
            ours, dict(zip(names, weights)), (x, as_hx(state)), dict(lengths=lengths, return_states=True)
        )
        return (output, *(states if isinstance(states, tuple) else (states,)))

    assert torch.autograd.gradcheck(f, (x, *hx, *ours.parameters()), fast_mode=True)


# -- misuse ---------------------------------------------------------------------------------

BAD_LENGTHS = [
    ("a length of 0", [6, 0, 4], RuntimeError, r"RNN: Expected one length per sequence \(3\), each in 1\.\.6; got lengths\[1\] = 0"),
    ("a length above T", [6, 7, 4], RuntimeError, r"each in 1\.\.6; got lengths\[1\] = 7"),
    ("too few", [6, 2], RuntimeError, r"Expected one length per sequence \(3\), each in 1\.\.6: got 2 lengths"),
    ("too many", torch.tensor([6, 2, 4, 1]), RuntimeError, "got 4 lengths"),
    ("a float tensor", torch.tensor([6.0, 2.0, 4.0]), TypeError, "integer tensor or a list of ints, got a tensor of dtype torch.float32"),
    ("a bool tensor", torch.tensor([True, True, True]), TypeError, "dtype torch.bool"),
    ("a 2-D tensor", torch.tensor([[6, 2, 4]]), ValueError, r"lengths should be 1-D.*got a 2-D tensor of shape \[1, 3\]"),
    ("a float in a list", [6, 2.0, 4], TypeError, "got an item 2.0 of type float"),
    ("None in a list", [6, None, 4], TypeError, "got an item None of type NoneType"),
    ("a bool in a list", [6, True, 4], TypeError, "got an item True of type bool"),
    ("a number", 6, TypeError, "lengths should be a 1-D integer tensor or a list of ints, got int"),
]


@pytest.mark.parametrize("name, lengths, error, message", BAD_LENGTHS, ids=[c[0] for c in BAD_LENGTHS])
def test_bad_lengths_say_what_was_expected(name, lengths, error, message):
    with pytest.raises(error, match=message):
        rnnkit.RNN(INPUT, HIDDEN)(torch.randn(STEPS, BATCH, INPUT), lengths=lengths)


def test_lengths_count_the_batch_first_axes():
    layer = rnnkit.LSTM(INPUT, HIDDEN, batch_first=True)
    with pytest.raises(RuntimeError, match=r"one length per sequence \(2\), each in 1\.\.6; got lengths\[0\] = 7"):
        layer(torch.randn(2, STEPS, INPUT), lengths=[7, 1])


def test_lengths_with_a_packed_sequence_or_unbatched_input_is_refused():
    layer = rnnkit.GRU(INPUT, HIDDEN)
    packed = pack_padded_sequence(torch.randn(STEPS, BATCH, INPUT), torch.tensor(LENGTHS), enforce_sorted=False)
    with pytest.raises(ValueError, match="GRU: lengths= is for a padded tensor; a PackedSequence carries its own"):
        layer(packed, lengths=LENGTHS)
    with pytest.raises(ValueError, match=r"GRU: lengths= needs batched input \(L, N, H_in\), got unbatched"):
        layer(torch.randn(STEPS, INPUT), lengths=[STEPS])


def test_return_states_with_a_packed_sequence_suggests_lengths():
    layer = rnnkit.LSTM(INPUT, HIDDEN)
    packed = pack_padded_sequence(torch.randn(STEPS, BATCH, INPUT), torch.tensor(LENGTHS), enforce_sorted=False)
    with pytest.raises(ValueError, match="not a PackedSequence: pass the padded batch with lengths= instead"):
        layer(packed, return_states=True)


def test_cells_are_asked_only_of_a_two_part_state():
    x = torch.zeros(2, 1, 3, dtype=torch.float64)
    gru = DirectionWeights(torch.zeros(3 * 4, 3, dtype=torch.float64), torch.zeros(3 * 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="return_cells needs a kind with a cell state, got 'gru'"):
        reference.run_layer("gru", x, (torch.zeros(1, 1, 4, dtype=torch.float64),), [gru], None, return_cells=True)
    lstm = DirectionWeights(torch.randn(4 * 4, 3, dtype=torch.float64), torch.randn(4 * 4, 4, dtype=torch.float64))
    assert kernels.select_backend("lstm", x, [lstm]).name == "fused"
    state = (torch.zeros(1, 1, 4, dtype=torch.float64),) * 2
    x = torch.randn(2, 1, 3, dtype=torch.float64)
    output, (h_n, c_n), cells = kernels.run_layer("lstm", x, state, [lstm], torch.tensor([1]), return_cells=True)
    assert cells.shape == (2, 1, 4) and cells[0].all() and not cells[1].any()  # zeros past the length
    torch.testing.assert_close(cells[0], c_n[0])
