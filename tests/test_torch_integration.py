"""rnnkit's layers inside the rest of PyTorch's machinery: autocast, in-place ops
on outputs, double backward, torch.func and torch.compile, on every backend."""

from __future__ import annotations

import warnings

import pytest
import torch

import rnnkit
from rnnkit import kernels
from equivalence import BATCH, HIDDEN, INPUT, KIND_OPTIONS, STEPS, build


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_autocast_runs_like_torch(class_name):
    ours, theirs = build(dict(class_name=class_name, num_layers=2), dtype=torch.float32)
    x = torch.randn(STEPS, BATCH, INPUT)
    if class_name == "LSTM":  # torch.nn.LSTM's oneDNN path fails under bfloat16 autocast on CPU
        expected, _ = theirs(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual, _ = ours(x)
        if class_name != "LSTM":
            expected, _ = theirs(x)
            assert actual.dtype == expected.dtype
    torch.testing.assert_close(actual.float(), expected.float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_in_place_changes_to_the_output_keep_backward_working(backend, class_name):
    ours, theirs = build(dict(class_name=class_name, num_layers=2, bidirectional=True))
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    grads = []
    for module in (ours, theirs):
        output, _ = module(x)
        output.relu_()
        output.sum().backward()
        grads.append([p.grad for p in module.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_double_backward_matches_torch(backend, class_name):
    """A gradient penalty differentiates the gradient itself (create_graph=True)."""
    ours, theirs = build(dict(class_name=class_name, num_layers=2))
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64, requires_grad=True)
    grads = []
    for module in (ours, theirs):
        output, _ = module(x)
        (g,) = torch.autograd.grad(output.sum(), x, create_graph=True)
        (output.pow(2).sum() + 10 * g.pow(2).sum()).backward()
        grads.append([p.grad for p in module.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_torch_func_grad_matches_autograd(backend, class_name):
    layer = getattr(rnnkit, class_name)(INPUT, HIDDEN, dtype=torch.float64)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    params = dict(layer.named_parameters())

    def loss(params):
        return torch.func.functional_call(layer, params, (x,))[0].pow(2).sum()

    if backend == "fused":  # the fused loops read raw memory; torch.func's tensors are wrappers
        with pytest.raises(kernels.UnsupportedCall, match="torch.func transform"):
            torch.func.grad(loss)(params)
        return
    grads = torch.func.grad(loss)(params)
    loss(params).backward()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(grads[name], p.grad)


@pytest.mark.parametrize("class_name", list(KIND_OPTIONS))
def test_torch_compile_runs_the_layer(class_name):
    layer = getattr(rnnkit, class_name)(INPUT, HIDDEN, num_layers=2)
    x = torch.randn(STEPS, BATCH, INPUT)
    compiled = torch.compile(layer, backend="eager")
    torch.testing.assert_close(compiled(x)[0], layer(x)[0])


AUTOCAST_CASES = [
    ("RNN", dict(nonlinearity="tanh")), ("RNN", dict(nonlinearity="relu")),
    ("LSTM", dict()), ("LSTM", dict(proj_size=2)), ("LSTM", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict()), ("GRU", dict(num_layers=2, bidirectional=True)),
    ("RNNCell", dict()), ("LSTMCell", dict()), ("GRUCell", dict()),
]
"""Every layer and cell, and the options that change torch's path under autocast."""


def _result_dtypes(result) -> list[torch.dtype]:
    return [t.dtype for t in torch.utils._pytree.tree_leaves(result)]


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "no_onednn"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "hx"])
@pytest.mark.parametrize("kind,options", AUTOCAST_CASES)
def test_autocast_result_dtypes_are_torchs(kind, options, with_state, onednn):
    theirs = getattr(torch.nn, kind)(INPUT, HIDDEN, **options)
    ours = getattr(rnnkit, kind).from_torch(theirs)
    is_cell = kind.endswith("Cell")
    x = torch.randn(BATCH, INPUT) if is_cell else torch.randn(STEPS, BATCH, INPUT)
    args = (x,)
    if with_state:
        _, state = (None, theirs(x)) if is_cell else theirs(x)
        args = (x, torch.utils._pytree.tree_map(torch.randn_like, state))
    # flags() rather than setting the flag: torch.testing's helpers (another test module)
    # forbid that once imported; flags() warns about TF32 on every CPU build.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN", UserWarning)
        with torch.backends.mkldnn.flags(enabled=onednn), torch.autocast("cpu", dtype=torch.bfloat16):
            expected, actual = _result_dtypes(theirs(*args)), _result_dtypes(ours(*args))
    assert actual == expected


@pytest.mark.parametrize("kind,options", [case for case in AUTOCAST_CASES if not case[0].endswith("Cell")])
def test_flat_weights_are_torchs_and_stay_current(kind, options):
    theirs = getattr(torch.nn, kind)(INPUT, HIDDEN, **options)
    ours = getattr(rnnkit, kind).from_torch(theirs)
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert all(a is getattr(ours, n) for a, n in zip(ours._flat_weights, ours._flat_weights_names, strict=True))
    for module in (ours, theirs):
        module.weight_hh_l0 = torch.nn.Parameter(torch.full_like(module.weight_hh_l0, 2.0))
        module.to(torch.float64)
    for a, b in zip(ours._flat_weights, theirs._flat_weights, strict=True):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_every_steps_states_take_the_output_s_dtype_under_autocast(kind):
    layer = getattr(rnnkit, kind)(INPUT, HIDDEN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, _, states = layer(torch.randn(STEPS, BATCH, INPUT), return_states=True)
    for part in states if isinstance(states, tuple) else (states,):
        assert part.dtype == output.dtype


def test_functional_call_tensors_are_not_kept_between_calls():
    layer = rnnkit.GRU(INPUT, HIDDEN)
    stand_ins = {name: p.detach().clone() * 2 for name, p in layer.named_parameters()}
    x = torch.randn(STEPS, BATCH, INPUT)
    changed, _ = torch.func.functional_call(layer, stand_ins, (x,))
    plain, _ = layer(x)
    assert not torch.allclose(changed, plain)
    kept = layer._weights_cache
    assert kept is not None and all(isinstance(t, torch.nn.Parameter) for t in kept[0] if t is not None)
