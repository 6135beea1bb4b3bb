"""PyTorch's own test samples for its recurrent modules, run against rnnkit.

``torch.testing._internal.common_modules.module_db`` holds, for each
``torch.nn`` module, the constructor arguments and inputs that PyTorch tests
it with, and the inputs it must refuse. Each sample builds the ``torch.nn``
module and its rnnkit twin with the same arguments and weights: outputs and
the gradients of inputs and parameters must match, and a refused input must
raise the exception type torch raises, with a message that names the values
torch's does. So a new sample in torch, or a drift in rnnkit, shows here.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import rnnkit

with warnings.catch_warnings():
    # common_utils, imported by common_modules, warns that it cannot derandomise
    # torch's own hypothesis-based tests; nothing here uses hypothesis
    warnings.filterwarnings("ignore", "Fail to import hypothesis", ImportWarning)
    common_modules = pytest.importorskip(
        "torch.testing._internal.common_modules",
        reason="torch's test helpers need the expecttest package (pip install -e '.[test]')",
    )

TWINS = {
    torch.nn.RNN: rnnkit.RNN, torch.nn.LSTM: rnnkit.LSTM, torch.nn.GRU: rnnkit.GRU,
    torch.nn.RNNCell: rnnkit.RNNCell, torch.nn.LSTMCell: rnnkit.LSTMCell,
    torch.nn.GRUCell: rnnkit.GRUCell,
}
"""Each torch.nn class and the rnnkit class that replaces it."""

MODULES = [info for info in common_modules.module_db if info.module_cls in TWINS]
WITH_ERRORS = [info for info in MODULES if info.module_error_inputs_func is not None]
DTYPES = (torch.float32, torch.float64)
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {}}
"""float32: the fused kernels add in another order than torch's ATen loops."""


def test_module_db_covers_every_class():
    assert {info.module_cls for info in MODULES} == set(TWINS)
    assert {info.module_cls for info in WITH_ERRORS} == set(TWINS)


def _twins(info, constructor, dtype: torch.dtype, training: bool):
    """The torch.nn module and the rnnkit one, built alike, with torch's weights."""
    ours_class = TWINS[info.module_cls]
    theirs = info.module_cls(*constructor.args, **constructor.kwargs).to(dtype).train(training)
    ours = ours_class(*constructor.args, **constructor.kwargs).to(dtype).train(training)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _copy(value):
    """A fresh copy of a sample's argument: tensors cloned (leaves again, with
    their ``requires_grad``), tuples and lists copied item by item."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, (tuple, list)):
        return type(value)(_copy(item) for item in value)
    return value


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in a (nested) tuple or list, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _tensors(item)]
    return []


def _run(module, forward_input, grad_outputs=None):
    """The module's outputs on a copy of the sample, and the gradients of its
    input tensors and parameters (``None`` where one does not depend on them)
    for ``grad_outputs``, drawn here when not given."""
    args, kwargs = _copy(forward_input.args), _copy(forward_input.kwargs)
    torch.manual_seed(0)  # dropout, if a sample asks for it, draws the same masks
    outputs = _tensors(module(*args, **kwargs))
    if grad_outputs is None:
        grad_outputs = [torch.randn_like(output) for output in outputs]
    leaves = [t for t in _tensors((args, list(kwargs.values()))) if t.requires_grad]
    leaves += list(module.parameters())
    differentiable = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    grads = [None] * len(leaves)
    if differentiable:
        grads = torch.autograd.grad(
            [o for o, _ in differentiable], leaves, [g for _, g in differentiable],
            allow_unused=True,
        )
    return outputs, grad_outputs, list(grads)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("info", MODULES, ids=lambda info: info.name)
def test_samples_match_torch(info, dtype, training, backend):
    samples = info.module_inputs_func(
        info, device="cpu", dtype=dtype, requires_grad=True, training=training
    )
    assert samples
    for sample in samples:
        theirs, ours = _twins(info, sample.constructor_input, dtype, training)
        expected, grad_outputs, expected_grads = _run(theirs, sample.forward_input)
        got, _, got_grads = _run(ours, sample.forward_input, grad_outputs)
        where = f"{info.name}{sample.constructor_input.kwargs or sample.constructor_input.args}"
        assert len(got) == len(expected), where
        for ours_tensor, torch_tensor in zip(got, expected):
            torch.testing.assert_close(ours_tensor, torch_tensor, **TOLERANCE[dtype], msg=where)
        for ours_grad, torch_grad in zip(got_grads, expected_grads, strict=True):
            assert (ours_grad is None) == (torch_grad is None), where
            if torch_grad is not None:
                torch.testing.assert_close(ours_grad, torch_grad, **TOLERANCE[dtype], msg=where)


def _numbers(text: str) -> list[str]:
    return re.findall(r"(?<![A-Za-z_])\d+", text)  # not "hidden0"


@pytest.mark.parametrize("info", WITH_ERRORS, ids=lambda info: info.name)
def test_error_samples_raise_torchs_exception(info, backend):
    """Every input torch refuses, rnnkit refuses at the same stage (construction
    or forward) with the same exception type, and its message holds every
    number torch's does (the sizes expected and given)."""
    samples = info.module_error_inputs_func(
        info, device="cpu", dtype=torch.float64, requires_grad=True, training=True
    )
    assert samples
    for sample in samples:
        constructor = sample.module_error_input.constructor_input
        forward = sample.module_error_input.forward_input
        where = f"{info.name}{constructor.args}{constructor.kwargs}: {sample.error_regex}"
        ours_class = TWINS[info.module_cls]
        if sample.error_on == common_modules.ModuleErrorEnum.CONSTRUCTION_ERROR:
            with pytest.raises(Exception) as raised:
                ours_class(*constructor.args, **constructor.kwargs)
        else:  # built outside pytest.raises: refusing the arguments would be the wrong stage
            module = ours_class(*constructor.args, **constructor.kwargs).to(torch.float64)
            with pytest.raises(Exception) as raised:
                module(*_copy(forward.args), **_copy(forward.kwargs))
        assert type(raised.value) is sample.error_type, f"{where}: raised {raised.value!r}"
        message = str(raised.value)
        missing = [n for n in _numbers(sample.error_regex) if n not in _numbers(message)]
        assert not missing, f"{where}: rnnkit's message {message!r} lacks {missing}"
