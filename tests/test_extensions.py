"""layer_norm, recurrent_dropout and zoneout: the options torch.nn does not have.

The oracle is a plain-torch implementation of their equations written here
(README, "Beyond torch.nn"), step by step, reading the module's parameters by
name; it draws the masks in the order the driver documents, so the same seed
gives the same masks. Every backend that takes the call is compared with it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.kinds import CELLS

IN, HID, T, N = 3, 4, 5, 3
EPS = 1e-5


# -- the oracle: the equations, one step at a time ---------------------------------


def _ln(v: Tensor, gain: Tensor, shift: Tensor | None = None) -> Tensor:
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)
    out = (v - mean) / torch.sqrt(var + EPS) * gain
    return out if shift is None else out + shift


def _step(cell: str, nonlinearity: str, p: dict, x: Tensor, h: Tensor, c: Tensor | None, mask: Tensor):
    """One step of the equations; ``p`` holds the direction's parameters by base name."""
    ln = "ln_ih_weight" in p
    a = x @ p["weight_ih"].t()
    b = (mask * h) @ p["weight_hh"].t()
    if ln:
        a, b = _ln(a, p["ln_ih_weight"]), _ln(b, p["ln_hh_weight"])
    if "bias_ih" in p:
        a, b = a + p["bias_ih"], b + p["bias_hh"]
    if cell == "rnn":
        return (torch.tanh if nonlinearity == "tanh" else torch.relu)(a + b), None
    if cell == "gru":
        a_r, a_z, a_n = a.chunk(3, 1)
        b_r, b_z, b_n = b.chunk(3, 1)
        r, z = torch.sigmoid(a_r + b_r), torch.sigmoid(a_z + b_z)
        n = torch.tanh(a_n + r * b_n)
        return (1 - z) * n + z * h, None
    i, f, g, o = (a + b).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    cc = _ln(c, p["ln_c_weight"], p["ln_c_bias"]) if ln else c
    h = torch.sigmoid(o) * torch.tanh(cc)
    if "weight_hr" in p:
        h = h @ p["weight_hr"].t()
    return h, c


def bernoulli(shape: tuple[int, ...], p: float, dtype: torch.dtype) -> Tensor:
    """A mask as rnnkit draws one on the CPU (README, "Beyond torch.nn"),
    written again here: one seed from torch's generator, then entry ``i`` is 1
    where the top 53 bits of SplitMix64 at ``seed + i * 0x9E3779B97F4A7C15``
    fall below ``p * 2^53``."""
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(math.prod(shape), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    kept = (z >> np.uint64(11)) < np.uint64(p * 2.0**53)
    return torch.from_numpy(kept).reshape(shape).to(dtype)


def oracle(module, x: Tensor, hx, lengths: list[int] | None):
    """``(output, h_n, c_n or None)`` of a time-first layer, masks drawn from the
    current seed in the driver's order: every recurrent-dropout mask
    ``(L, D, N, H_out)``, then every zoneout mask ``(L, D, T, N, H_out)``."""
    cell = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}[type(module).__name__]
    L, D = module.num_layers, 2 if module.bidirectional else 1
    steps, batch = x.shape[:2]
    width = module.proj_size or module.hidden_size if cell == "lstm" else module.hidden_size
    rd, zo = module.recurrent_dropout, module.zoneout
    ones = torch.ones(L, D, batch, width, dtype=x.dtype)
    if module.training and rd > 0:
        keep = bernoulli((L, D, batch, width), 1 - rd, x.dtype)
        rd_mask = keep / (1 - rd) if rd < 1 else keep
    else:
        rd_mask = ones
    if module.training and zo > 0:
        zo_mask = bernoulli((L, D, steps, batch, width), zo, x.dtype)
    else:
        zo_mask = torch.full((L, D, steps, batch, width), float(zo), dtype=x.dtype)
    lengths = lengths or [steps] * batch
    valid = torch.tensor([[t < n for n in lengths] for t in range(steps)]).unsqueeze(-1)  # (T, N, 1)
    h0, c0 = hx if cell == "lstm" else (hx, None)
    finals_h, finals_c = [], []
    for k in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            p = {n[: -len(sfx)]: w for n, w in module.named_parameters() if n.endswith(sfx)}
            h, c = h0[k * D + d], None if c0 is None else c0[k * D + d]
            out = [None] * steps
            for t in (range(steps - 1, -1, -1) if d else range(steps)):
                h_new, c_new = _step(cell, getattr(module, "nonlinearity", "tanh"), p, x[t], h, c, rd_mask[k, d])
                m = zo_mask[k, d, t]
                h_new = m * h + (1 - m) * h_new
                h = torch.where(valid[t], h_new, h)
                if c is not None:
                    c = torch.where(valid[t], c_new, c)
                out[t] = torch.where(valid[t], h, torch.zeros_like(h))
            outs.append(torch.stack(out))
            finals_h.append(h)
            finals_c.append(c)
        x = torch.cat(outs, 2)
    return x, torch.stack(finals_h), None if c0 is None else torch.stack(finals_c)


def cell_oracle(cell_module, x: Tensor, h: Tensor, c: Tensor | None):
    cell = {"RNNCell": "rnn", "LSTMCell": "lstm", "GRUCell": "gru"}[type(cell_module).__name__]
    p = dict(cell_module.named_parameters())
    ones = torch.ones_like(h)
    return _step(cell, getattr(cell_module, "nonlinearity", "tanh"), p, x, h, c, ones)


# -- cases -----------------------------------------------------------------------------

KINDS = [
    ("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("LSTM", {"proj_size": 2}), ("GRU", {}),
]
OPTIONS = [
    {"layer_norm": True},
    {"recurrent_dropout": 0.4},
    {"zoneout": 0.3},
    {"layer_norm": True, "recurrent_dropout": 0.3, "zoneout": 0.4},
]
SHAPES = [
    {},
    {"num_layers": 2, "bidirectional": True},
    {"bias": False},
]


def _case_id(value) -> str:
    return ",".join(f"{k}={v}" for k, v in value.items()) or "plain"


def _build(kind: str, config: dict, dtype=torch.float64, seed: int = 3):
    torch.manual_seed(seed)
    module = getattr(rnnkit, kind)(IN, HID, dtype=dtype, **config)
    with torch.no_grad():  # layer-norm gains and shift away from 1 and 0, so that they matter
        for name, w in module.named_parameters():
            if name.startswith("ln_"):
                w.add_(torch.randn_like(w) * 0.3)
    return module


def _inputs(module, dtype=torch.float64, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    D = 2 if module.bidirectional else 1
    width = getattr(module, "proj_size", 0) or module.hidden_size
    x = torch.randn(T, N, IN, generator=g, dtype=dtype, requires_grad=True)
    h0 = torch.randn(module.num_layers * D, N, width, generator=g, dtype=dtype, requires_grad=True)
    if isinstance(module, rnnkit.LSTM):
        c0 = torch.randn(module.num_layers * D, N, HID, generator=g, dtype=dtype, requires_grad=True)
        return x, (h0, c0)
    return x, h0


def _leaves(module, x, hx):
    return [x, *(hx if isinstance(hx, tuple) else (hx,)), *module.parameters()]


def _loss(*values) -> Tensor:
    g = torch.Generator().manual_seed(99)
    flat = torch.cat([v.flatten() for v in values if v is not None])
    return (flat * torch.randn(flat.shape, generator=g, dtype=flat.dtype)).sum()


def _run_both(module, lengths=None, seed=11):
    x, hx = _inputs(module)
    torch.manual_seed(seed)
    out, state = module(x, hx, lengths=lengths)
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    torch.manual_seed(seed)
    e_out, e_h, e_c = oracle(module, x, hx, lengths)
    leaves = _leaves(module, x, hx)
    ours = torch.autograd.grad(_loss(out, h_n, c_n), leaves, allow_unused=True)
    theirs = torch.autograd.grad(_loss(e_out, e_h, e_c), leaves, allow_unused=True)
    return (out, h_n, c_n, ours), (e_out, e_h, e_c, theirs)


def _assert_same(ours, theirs):
    (out, h_n, c_n, grads), (e_out, e_h, e_c, e_grads) = ours, theirs
    torch.testing.assert_close(out, e_out)
    torch.testing.assert_close(h_n, e_h)
    if c_n is not None:
        torch.testing.assert_close(c_n, e_c)
    for got, expected in zip(grads, e_grads):
        if expected is None:
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES, ids=_case_id)
@pytest.mark.parametrize("options", OPTIONS, ids=_case_id)
@pytest.mark.parametrize("kind,extra", KINDS, ids=[k + _case_id(e) for k, e in KINDS])
def test_layer_matches_equations(kind, extra, options, shape, training):
    module = _build(kind, {**extra, **options, **shape}).train(training)
    _assert_same(*_run_both(module))


@pytest.mark.parametrize("options", OPTIONS, ids=_case_id)
@pytest.mark.parametrize("kind,extra", KINDS, ids=[k + _case_id(e) for k, e in KINDS])
def test_layer_with_lengths_matches_equations(kind, extra, options):
    module = _build(kind, {**extra, **options, "bidirectional": True})
    _assert_same(*_run_both(module, lengths=[5, 2, 4]))


@pytest.mark.parametrize("options", OPTIONS, ids=_case_id)
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_packed_and_batch_first_match_lengths(kind, options):
    module = _build(kind, {**options, "bidirectional": True, "batch_first": True})
    x = torch.randn(N, T, IN, dtype=torch.float64)
    lengths = [2, 5, 3]
    torch.manual_seed(4)
    out, state = module(x, lengths=lengths)
    torch.manual_seed(4)
    packed, packed_state = module(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    torch.testing.assert_close(pad_packed_sequence(packed, batch_first=True, total_length=T)[0], out)
    torch.testing.assert_close(packed_state, state)
    module.batch_first = False
    torch.manual_seed(4)
    time_first, _ = module(x.transpose(0, 1), lengths=lengths)
    torch.testing.assert_close(time_first.transpose(0, 1), out)


@pytest.mark.parametrize("options", OPTIONS, ids=_case_id)
def test_return_states_with_options(options):
    module = _build("LSTM", {**options, "num_layers": 2})
    x, hx = _inputs(module)
    torch.manual_seed(8)
    out, (h_n, c_n), (hs, cs) = module(x, hx, lengths=[5, 3, 1], return_states=True)
    torch.manual_seed(8)
    e_out, e_h, e_c = oracle(module, x, hx, [5, 3, 1])
    torch.testing.assert_close(out, e_out)
    torch.testing.assert_close(hs[-1], out)
    torch.testing.assert_close(h_n, e_h)
    torch.testing.assert_close(c_n, e_c)
    torch.testing.assert_close(cs[:, 4, 0], c_n[:, 0])  # a full sequence's last cell state is c_n


@pytest.mark.parametrize("bidirectional, proj_size", [(False, 0), (True, 0), (True, 3)])
@pytest.mark.parametrize("options", OPTIONS, ids=_case_id)
def test_every_steps_cells_with_options_fused_against_reference(options, bidirectional, proj_size):
    """The fused loops return every step's c_t with the options too; the
    gradient of a loss on them, as on everything else, matches the reference's."""
    module = _build("LSTM", {**options, "num_layers": 2, "bidirectional": bidirectional, "proj_size": proj_size})
    x, hx = _inputs(module)
    results = {}
    for backend in ("fused", "reference"):
        with kernels.use_backend(backend):
            torch.manual_seed(8)
            out, (h_n, c_n), (hs, cs) = module(x, hx, lengths=[5, 3, 1], return_states=True)
        loss = (out.sin().sum() + (cs * torch.linspace(-1, 1, cs.shape[-1], dtype=cs.dtype)).sum()
                + c_n.cos().sum() + hs[0].sum())
        grads = torch.autograd.grad(loss, [x, *hx, *module.parameters()])
        results[backend] = (out, h_n, c_n, hs, cs, *grads)
    for fused_result, reference_result in zip(results["fused"], results["reference"]):
        torch.testing.assert_close(fused_result, reference_result)


@pytest.mark.parametrize("kind,extra", KINDS, ids=[k + _case_id(e) for k, e in KINDS])
def test_unbatched_input_with_options(kind, extra):
    module = _build(kind, {**extra, **OPTIONS[-1]})
    x = torch.randn(T, IN, dtype=torch.float64)
    torch.manual_seed(2)
    out, _ = module(x)
    torch.manual_seed(2)
    batched, _ = module(x.unsqueeze(1))
    torch.testing.assert_close(out, batched.squeeze(1))


# -- cells -------------------------------------------------------------------------------

CELL_KINDS = [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}), ("GRUCell", {})]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind,extra", CELL_KINDS, ids=[k + _case_id(e) for k, e in CELL_KINDS])
def test_cell_layer_norm_matches_equations(kind, extra, bias):
    cell = _build(kind, {**extra, "bias": bias, "layer_norm": True})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, IN, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randn(N, HID, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(N, HID, generator=g, dtype=torch.float64, requires_grad=True)
    lstm = kind == "LSTMCell"
    ours = cell(x, (h, c) if lstm else h)
    ours = ours if lstm else (ours,)
    theirs = cell_oracle(cell, x, h, c if lstm else None)
    theirs = theirs if lstm else theirs[:1]
    for got, expected in zip(ours, theirs):
        torch.testing.assert_close(got, expected)
    leaves = [x, h, *([c] if lstm else []), *cell.parameters()]
    for got, expected in zip(
        torch.autograd.grad(_loss(*ours), leaves), torch.autograd.grad(_loss(*theirs), leaves)
    ):
        torch.testing.assert_close(got, expected)
    unbatched = cell(x[0], (h[0], c[0]) if lstm else h[0])
    torch.testing.assert_close(unbatched[0] if lstm else unbatched, ours[0][0])


# -- defaults, p = 0 and p = 1, eval ------------------------------------------------------------


@pytest.mark.parametrize("kind,extra", KINDS, ids=[k + _case_id(e) for k, e in KINDS])
def test_zero_probabilities_are_the_plain_layer(kind, extra):
    torch.manual_seed(3)
    theirs = getattr(nn, kind)(IN, HID, num_layers=2, dtype=torch.float64, **extra)
    torch.manual_seed(3)
    ours = getattr(rnnkit, kind)(
        IN, HID, num_layers=2, dtype=torch.float64, recurrent_dropout=0.0, zoneout=0.0, layer_norm=False, **extra
    )
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    x, hx = _inputs(ours)
    torch.testing.assert_close(ours(x, hx), theirs(x, hx))
    assert repr(ours) == repr(getattr(rnnkit, kind).from_torch(theirs))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_layer_norm_keeps_torch_weights_for_a_seed(kind):
    torch.manual_seed(7)
    theirs = getattr(nn, kind)(IN, HID, num_layers=2, bidirectional=True)
    torch.manual_seed(7)
    ours = getattr(rnnkit, kind)(IN, HID, num_layers=2, bidirectional=True, layer_norm=True)
    plain = {n: p for n, p in ours.named_parameters() if not n.startswith("ln_")}
    assert list(plain) == [n for n, _ in theirs.named_parameters()]
    assert all(torch.equal(plain[n], p) for n, p in theirs.named_parameters())
    for name, p in ours.named_parameters():
        if name.startswith("ln_c_bias"):
            assert torch.equal(p, torch.zeros_like(p))
        elif name.startswith("ln_"):
            assert torch.equal(p, torch.ones_like(p))
    names = [n for n, _ in ours.named_parameters()]
    # each direction's layer-norm parameters follow torch's own for that direction
    assert names.index("ln_ih_weight_l0") == names.index("bias_hh_l0") + 1
    assert names.index("ln_hh_weight_l1_reverse") > names.index("bias_hh_l1_reverse")
    gates = len(CELLS[kind.lower()].gates)
    assert ours.ln_ih_weight_l1.shape == ours.ln_hh_weight_l1_reverse.shape == (gates * HID,)
    if kind == "LSTM":
        assert ours.ln_c_weight_l0.shape == ours.ln_c_bias_l1_reverse.shape == (HID,)
    else:
        assert not any("ln_c" in n for n in names)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_dropout_is_off_in_eval(kind):
    module = _build(kind, {"recurrent_dropout": 0.7}).eval()
    plain = _build(kind, {})
    plain.load_state_dict(module.state_dict())
    x, hx = _inputs(module)
    torch.testing.assert_close(module(x, hx), plain(x, hx))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_eval_is_deterministic_and_draws_nothing(kind):
    module = _build(kind, OPTIONS[-1]).eval()
    x, hx = _inputs(module)
    torch.manual_seed(0)
    first = module(x, hx)
    after = torch.rand(1)
    torch.manual_seed(0)
    second = module(x, hx)
    torch.testing.assert_close(first, second)
    assert torch.equal(after, torch.rand(1))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_training_masks_follow_the_seed(kind):
    module = _build(kind, {"recurrent_dropout": 0.5, "zoneout": 0.5})
    x, hx = _inputs(module)
    torch.manual_seed(1)
    first = module(x, hx)[0]
    second = module(x, hx)[0]
    torch.manual_seed(1)
    again = module(x, hx)[0]
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, second)  # a fresh draw on every call


@pytest.mark.parametrize("kind,extra", KINDS, ids=[k + _case_id(e) for k, e in KINDS])
def test_recurrent_dropout_one_removes_the_recurrent_input(kind, extra):
    module = _build(kind, {**extra, "recurrent_dropout": 1.0})
    plain = _build(kind, extra)
    plain.load_state_dict(module.state_dict())
    with torch.no_grad():
        plain.weight_hh_l0.zero_()
    x, hx = _inputs(module)
    torch.testing.assert_close(module(x, hx), plain(x, hx))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind,extra", KINDS, ids=[k + _case_id(e) for k, e in KINDS])
def test_zoneout_one_keeps_h0(kind, extra, training):
    module = _build(kind, {**extra, "zoneout": 1.0, "bidirectional": True}).train(training)
    x, hx = _inputs(module)
    out, state = module(x, hx)
    h0 = hx[0] if isinstance(hx, tuple) else hx
    h_n = state[0] if isinstance(state, tuple) else state
    torch.testing.assert_close(h_n, h0)
    torch.testing.assert_close(out, torch.cat([h0[0], h0[1]], -1).expand(T, -1, -1))
    if kind == "LSTM":
        assert not torch.allclose(state[1], hx[1])  # c still updates


def test_gradcheck_float64_every_option():
    module = _build("LSTM", {"proj_size": 2, "bidirectional": True, **OPTIONS[-1]})
    x, (h0, c0) = _inputs(module)
    params = list(module.parameters())

    def run(x, h0, c0, *weights):
        torch.manual_seed(21)
        named = dict(zip([n for n, _ in module.named_parameters()], weights))
        out, (h_n, c_n) = torch.func.functional_call(module, named, (x, (h0, c0)), {"lengths": [5, 2, 4]})
        return out, h_n, c_n

    assert torch.autograd.gradcheck(run, (x, h0, c0, *params))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_gradcheck_gru_and_rnn_layer_norm(kind):
    module = _build(kind, {"layer_norm": True, "zoneout": 0.2})
    x, hx = _inputs(module)
    h0 = hx[0] if isinstance(hx, tuple) else hx

    def run(x, h0):
        torch.manual_seed(5)
        return module(x, (h0, hx[1]) if isinstance(hx, tuple) else h0)[0]

    assert torch.autograd.gradcheck(run, (x, h0))


# -- backends ----------------------------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS, ids=_case_id)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_auto_backend_equals_reference_in_training(kind, dtype, options):
    module = _build(kind, {**options, "bidirectional": True}, dtype=dtype)
    x, hx = _inputs(module, dtype=dtype)
    results = []
    for name in ("auto", "reference"):
        with kernels.use_backend(name):
            torch.manual_seed(6)
            out, _ = module(x, hx, lengths=[5, 1, 3])
            grads = torch.autograd.grad(_loss(out), _leaves(module, x, hx))
        results.append((out, grads))
    # float32: the weight gradients sum over steps and rows in another order
    tolerance = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else {}
    torch.testing.assert_close(results[0], results[1], **tolerance)


FUSED_CASES = [
    {**options, **shape}
    for options in OPTIONS + [{"layer_norm": True, "bias": False}]
    for shape in ({}, {"num_layers": 2, "bidirectional": True})
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", FUSED_CASES, ids=_case_id)
@pytest.mark.parametrize(
    "kind,extra",
    [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("LSTM", {"proj_size": 3}), ("GRU", {})],
    ids=["RNN", "RNNrelu", "LSTM", "LSTMproj", "GRU"],
)
def test_fused_equals_reference_with_the_same_seed(kind, extra, config, dtype, training):
    module = _build(kind, {**config, **extra}, dtype=dtype).train(training)
    x, hx = _inputs(module, dtype=dtype)
    results = []
    for name in ("fused", "reference"):
        with kernels.use_backend(name):
            torch.manual_seed(6)
            out, state = module(x, hx, lengths=[5, 1, 3])
            state = state if isinstance(state, tuple) else (state,)
            grads = torch.autograd.grad(_loss(out, *state), _leaves(module, x, hx))
        results.append((out, state, grads))
    tolerance = {} if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-3}  # float32 sums over steps
    torch.testing.assert_close(results[0], results[1], **tolerance)


WIDE = 12  # a batch of two pieces' rows under NORM_INSIDE_ROWS on two threads, one piece over it on one


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_input_norm_inside_the_loop_matches_reference(kind, bidirectional):
    """A piece of NORM_INSIDE_ROWS rows or more normalises its inputs inside
    the step loop (the tests above, at batch 3, run them apart): one thread
    takes the whole batch of WIDE rows as one piece."""
    from rnnkit.kernels.extension_loops import NORM_INSIDE_ROWS

    assert WIDE >= NORM_INSIDE_ROWS > WIDE // 2
    module = _build(kind, {"layer_norm": True, "bidirectional": bidirectional, "zoneout": 0.2}).train()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(T, WIDE, IN, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = [T, 2, 4, T, 1, 3, T, T, 2, 5, 4, T]
    results = []
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for name in ("fused", "reference"):
            with kernels.use_backend(name):
                torch.manual_seed(6)
                out, state = module(x, lengths=lengths)
                state = state if isinstance(state, tuple) else (state,)
                grads = torch.autograd.grad(_loss(out, *state), [x, *module.parameters()])
            results.append((out, state, grads))
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_layer_norm_is_bitwise_the_same_whatever_the_thread_count(kind):
    """One thread's piece of WIDE rows normalises the input side inside the
    loop, two threads' pieces of WIDE / 2 apart from it: the same bits."""
    from rnnkit.kernels import parallel

    torch.manual_seed(3)
    module = getattr(rnnkit, kind)(IN, 64, layer_norm=True)
    x = torch.randn(200, WIDE, IN, generator=torch.Generator().manual_seed(8), requires_grad=True)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            pieces, used = parallel.plan(1, WIDE, 200 * 64 * 64)  # the Elman layer's work; the others' is more
            assert used == threads and {p.n1 - p.n0 for p in pieces} == {WIDE // threads}
            with kernels.use_backend("fused"):
                out, state = module(x)
                state = state if isinstance(state, tuple) else (state,)
                grads = torch.autograd.grad(_loss(out, *state), [x, *module.parameters()])
            results.append((out, *state, *grads))
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("config", [OPTIONS[-1], {"zoneout": 0.3}], ids=_case_id)
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_fused_without_gradients_and_with_frozen_weights(kind, config):
    module = _build(kind, config, dtype=torch.float32)
    x = torch.randn(T, N, IN)
    with kernels.use_backend("reference"):
        torch.manual_seed(2)
        expected, _ = module(x)
    with kernels.use_backend("fused"), torch.no_grad():
        torch.manual_seed(2)
        got, _ = module(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    module.requires_grad_(False)
    x.requires_grad_(True)
    with kernels.use_backend("fused"):
        torch.manual_seed(2)
        out, _ = module(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    with kernels.use_backend("reference"):
        torch.manual_seed(2)
        (expected_grad,) = torch.autograd.grad(module(x)[0].sum(), x)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("proj_size", [0, 3])
def test_fused_lstm_gradcheck_float64(proj_size):
    module = _build("LSTM", {**OPTIONS[-1], "bidirectional": True, "proj_size": proj_size})
    x, (h0, c0) = _inputs(module)
    names = [n for n, _ in module.named_parameters()]

    def run(x, h0, c0, *weights):
        torch.manual_seed(21)
        out, (h_n, c_n) = torch.func.functional_call(
            module, dict(zip(names, weights)), (x, (h0, c0)), {"lengths": [5, 2, 4]}
        )
        return out, h_n, c_n

    with kernels.use_backend("fused"):
        assert torch.autograd.gradcheck(run, (x, h0, c0, *module.parameters()))


@pytest.mark.parametrize("kind,extra", [("GRU", {}), ("RNN", {}), ("RNN", {"nonlinearity": "relu"})])
def test_fused_gru_and_elman_gradcheck_float64(kind, extra):
    module = _build(kind, {**OPTIONS[-1], **extra, "bidirectional": True})
    x, h0 = _inputs(module)
    names = [n for n, _ in module.named_parameters()]

    def run(x, h0, *weights):
        torch.manual_seed(21)
        return torch.func.functional_call(module, dict(zip(names, weights)), (x, h0), {"lengths": [5, 2, 4]})

    with kernels.use_backend("fused"):
        assert torch.autograd.gradcheck(run, (x, h0, *module.parameters()))


def test_fused_serves_recurrent_dropout_in_eval():
    """Recurrent dropout in eval mode draws no mask: the fused loops take the call."""
    module = _build("GRU", {"recurrent_dropout": 0.5}, dtype=torch.float32).eval()
    x = torch.randn(T, N, IN)
    with kernels.use_backend("fused"):
        fused_out, _ = module(x)
    with kernels.use_backend("reference"):
        reference_out, _ = module(x)
    torch.testing.assert_close(fused_out, reference_out)


# -- errors, conversions, repr ------------------------------------------------------------


@pytest.mark.parametrize("name", ["recurrent_dropout", "zoneout"])
@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.2", math.nan])
def test_probability_out_of_range(name, value):
    with pytest.raises(ValueError, match=rf"{name} should be a number in range \[0, 1\], got"):
        rnnkit.LSTM(IN, HID, **{name: value})


def test_layer_norm_must_be_a_bool():
    with pytest.raises(TypeError, match="layer_norm should be of type bool, got: str"):
        rnnkit.GRU(IN, HID, layer_norm="yes")
    with pytest.raises(TypeError, match="layer_norm should be of type bool, got: int"):
        rnnkit.GRUCell(IN, HID, layer_norm=1)


def test_cells_take_layer_norm_only():
    with pytest.raises(TypeError):
        rnnkit.LSTMCell(IN, HID, zoneout=0.1)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        rnnkit.LSTM(IN, HID, 1, True, False, 0.0, False, 0, None, None, True)


@pytest.mark.parametrize(
    "cls,options,named",
    [(rnnkit.LSTM, {"layer_norm": True}, "layer_norm=True"),
     (rnnkit.GRU, {"recurrent_dropout": 0.25}, "recurrent_dropout=0.25"),
     (rnnkit.RNN, {"zoneout": 0.5, "layer_norm": True}, "layer_norm=True, zoneout=0.5"),
     (rnnkit.GRUCell, {"layer_norm": True}, "layer_norm=True")],
)
def test_to_torch_refuses_options_and_repr_shows_them(cls, options, named):
    module = cls(IN, HID, **options)
    with pytest.raises(ValueError, match=f"has no {named}"):
        module.to_torch()
    assert named in repr(module)


def test_from_torch_builds_the_plain_layer_and_torch_weights_load():
    theirs = nn.LSTM(IN, HID, num_layers=2)
    ours = rnnkit.LSTM.from_torch(theirs)
    assert (ours.layer_norm, ours.recurrent_dropout, ours.zoneout) == (False, 0.0, 0.0)
    normed = rnnkit.LSTM(IN, HID, num_layers=2, layer_norm=True, zoneout=0.1)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*ln_ih_weight_l0.*ln_c_bias_l1"):
        normed.load_state_dict(theirs.state_dict())
    result = normed.load_state_dict(theirs.state_dict(), strict=False)
    assert sorted(result.missing_keys) == sorted(n for n, _ in normed.named_parameters() if n.startswith("ln_"))
    assert torch.equal(normed.weight_hh_l1, theirs.weight_hh_l1)
    dropped = rnnkit.GRU(IN, HID, recurrent_dropout=0.3)
    dropped.load_state_dict(nn.GRU(IN, HID).state_dict())  # no extra parameters: strict loading works


# -- explain ------------------------------------------------------------------------------

EXPLAINED = [
    ("lstm", False, {"layer_norm": True, "num_layers": 2, "bidirectional": True, "proj_size": 2}),
    ("gru", False, {"layer_norm": True, "bias": False}),
    ("rnn", False, {"layer_norm": True, "zoneout": 0.1, "recurrent_dropout": 0.2}),
    ("lstm", True, {"layer_norm": True}),
    ("gru", True, {"layer_norm": True}),
    ("rnn", True, {"layer_norm": True, "nonlinearity": "relu"}),
]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("cell,cell_only,options", EXPLAINED)
def test_explain_names_every_extra_parameter_and_counts_it(cell, cell_only, options, lang):
    from rnnkit.explain import explain

    e = explain(IN, HID, **options, cell=cell, cell_only=cell_only, lang=lang)
    assert e.ok, e.problems
    entry = CELLS[cell]
    module = getattr(rnnkit, entry.cell_class if cell_only else entry.layer)(IN, HID, **options)
    assert [(p.name, p.shape) for p in e.parameters] == [(n, tuple(p.shape)) for n, p in module.named_parameters()]
    assert e.num_parameters == sum(p.numel() for p in module.parameters())
    lines = "\n".join(e.equations)
    assert "LN_ih(W_ih x_t)" in lines and "LN_hh(W_hh h_(t-1))" in lines
    assert ("LN_c(c_t)" in lines) == (cell == "lstm")
    if not options.get("bias", True):
        assert "b_ih" not in lines
    assert "layer_norm=True" in e.title
    assert explain(module).parameters == e.parameters if lang == "en" else True


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_explain_recurrent_dropout_and_zoneout(lang):
    from rnnkit.explain import explain

    e = explain(IN, HID, cell="lstm", recurrent_dropout=0.25, zoneout=0.5, lang=lang)
    assert e.ok
    assert "h~_t = o_t ⊙ tanh(c_t)" in e.equations
    assert any("W_hh (m ⊙ h_(t-1))" in line and "0.25" in line for line in e.equations)
    assert any(line.startswith("h_t = m_t ⊙ h_(t-1) + (1 - m_t) ⊙ h~_t") and "0.5" in line for line in e.equations)
    notes = "\n".join(e.notes)
    assert "recurrent_dropout=0.25" in notes and "zoneout=0.5" in notes
    assert e.num_parameters == sum(p.numel() for p in nn.LSTM(IN, HID).parameters())
    plain = explain(IN, HID, cell="lstm", lang=lang)
    assert "layer_norm" not in dict((a[0], a[1]) for a in plain.arguments)  # unset options stay out


@pytest.mark.parametrize(
    "options,cell_only,subject",
    [({"zoneout": 1.5}, False, "zoneout"), ({"recurrent_dropout": -1}, False, "recurrent_dropout"),
     ({"layer_norm": "yes"}, False, "layer_norm"), ({"zoneout": 0.1}, True, "zoneout"),
     ({"recurrent_dropout": 0.1}, True, "recurrent_dropout")],
)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_explain_reports_what_the_layer_rejects(options, cell_only, subject, lang):
    from rnnkit.explain import explain

    e = explain(IN, HID, cell="gru", cell_only=cell_only, **options, lang=lang)
    assert [p.subject for p in e.problems] == [subject]
    cls = rnnkit.GRUCell if cell_only else rnnkit.GRU
    with pytest.raises((TypeError, ValueError)):
        cls(IN, HID, **options)


def test_cli_explain_takes_the_options(capsys):
    from rnnkit.cli.main import main

    assert main(["explain", "--cell", "lstm", "--input-size", "3", "--hidden-size", "4", "--layer-norm",
                 "--zoneout", "0.1", "--recurrent-dropout", "0.2", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["num_parameters"] == sum(
        p.numel() for p in rnnkit.LSTM(3, 4, layer_norm=True).parameters()
    )
    assert main(["explain", "--input-size", "3", "--hidden-size", "4", "--zoneout", "2"]) == 1


# -- bench ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [dict(cell="lstm", layer_norm=True), dict(cell="gru", layer_norm=True), dict(cell="lstm", zoneout=0.2),
     dict(cell="gru", zoneout=0.2)],
    ids=_case_id,
)
def test_bench_step_loop_is_the_same_layer(config):
    """The benchmark's plain-torch side computes what rnnkit's layer computes."""
    from rnnkit import bench

    result = bench.measure_extension(bench.ExtensionConfig(steps=6, batch=2, hidden=4, **config), min_time=0)
    assert result.max_abs_diff < 1e-5
    assert result.backend == "fused"
    data = result.to_json()
    assert data["label"].startswith(CELLS[config["cell"]].layer) and data["over_plain"] > 0


def test_bench_times_the_plain_layer_as_its_plain_column(monkeypatch):
    """"x plain" divides by the plain layer's own time: here a plain layer
    made 30 ms slower must show in that column and nowhere else."""
    import time

    from rnnkit import bench

    build = bench.build

    def slow_plain(config, dtype, **kwargs):
        theirs, ours, x = build(config, dtype, **kwargs)
        forward = ours.forward

        def slow(*args, **kw):
            time.sleep(0.03)
            return forward(*args, **kw)

        ours.forward = slow
        return theirs, ours, x

    monkeypatch.setattr(bench, "build", slow_plain)
    result = bench.measure_extension(bench.ExtensionConfig(steps=6, batch=2, hidden=4, layer_norm=True), min_time=0)
    assert result.training_plain_ms > 30 > result.training_rnnkit_ms
    assert result.over_plain < 1


def test_bench_times_the_option_beside_the_plain_layer(monkeypatch):
    """"x plain" compares the option's layer and the plain one timed in one
    alternation, not the option's time beside the step loop."""
    from rnnkit import bench

    times = iter([(1.0, 2.0, 5), (3.0, 40.0, 5), (6.0, 7.0, 5)])  # inference, training, the pair
    monkeypatch.setattr(bench, "_alternate", lambda *args, **kwargs: next(times))
    result = bench.measure_extension(bench.ExtensionConfig(steps=6, batch=2, hidden=4, layer_norm=True), min_time=0)
    assert (result.training_rnnkit_ms, result.training_torch_ms) == (3.0, 40.0)
    assert (result.training_plain_ms, result.training_option_ms) == (6.0, 7.0)
    assert result.over_plain == 7.0 / 6.0


def test_bench_table_has_the_extension_rows(capsys, monkeypatch):
    from rnnkit import bench
    from rnnkit.cli.bench import extension_table
    from rich.console import Console

    results = [bench.measure_extension(bench.ExtensionConfig(steps=4, batch=1, hidden=3, layer_norm=True), min_time=0)]
    Console(width=200).print(extension_table(results))
    assert "LSTM T=4 N=1 3->3 layer_norm" in capsys.readouterr().out


def test_a_parametrized_layer_norm_gain_still_starts_at_one():
    from torch.nn.utils import parametrize

    class Same(nn.Module):
        def forward(self, weight):
            return weight

    lstm = rnnkit.LSTM(3, 4, layer_norm=True)
    for name in ("ln_ih_weight_l0", "ln_c_bias_l0"):
        parametrize.register_parametrization(lstm, name, Same())
    lstm.reset_parameters()
    assert (lstm.ln_ih_weight_l0 == 1).all() and (lstm.ln_c_bias_l0 == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_masks_are_bernoulli_draws_that_the_seed_reproduces(dtype):
    """The driver's masks: entries 0 or 1 (recurrent dropout's scaled by 1/(1-p)),
    a share p of ones within sampling error, the same for the same seed, new
    at each call, and the probabilities 0 and 1 exact."""
    from rnnkit.layers.driver import draw_masks

    x = torch.zeros(50, 40, 3, dtype=dtype)
    torch.manual_seed(3)
    (rd,), (zo,) = draw_masks(x, 1, 2, 64, True, recurrent_dropout=0.25, zoneout=0.3)
    assert rd.shape == (2, 40, 64) and zo.shape == (2, 50, 40, 64) and zo.dtype == dtype
    assert set(zo.unique().tolist()) == {0.0, 1.0}
    assert abs(zo.float().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / zo.numel())
    assert rd.unique().tolist() == [0.0, pytest.approx(1 / 0.75, rel=1e-2)]
    assert abs((rd > 0).float().mean().item() - 0.75) < 4 * math.sqrt(0.25 * 0.75 / rd.numel())
    torch.manual_seed(3)
    (rd_again,), (zo_again,) = draw_masks(x, 1, 2, 64, True, recurrent_dropout=0.25, zoneout=0.3)
    assert torch.equal(rd, rd_again) and torch.equal(zo, zo_again)
    (_,), (zo_next,) = draw_masks(x, 1, 2, 64, True, recurrent_dropout=0.25, zoneout=0.3)
    assert not torch.equal(zo, zo_next)
    (rd_all,), (zo_all,) = draw_masks(x, 1, 1, 8, True, recurrent_dropout=1.0, zoneout=1.0)
    assert not rd_all.any() and bool((zo_all == 1).all())
    (_,), (zo_none,) = draw_masks(x, 1, 1, 8, True, recurrent_dropout=0.5, zoneout=1e-300)
    assert not zo_none.any()
