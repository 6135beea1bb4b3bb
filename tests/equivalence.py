"""Run a torch.nn module and its rnnkit twin on the same input; collect what to compare."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit
from rnnkit.kinds import CELLS

INPUT, HIDDEN, STEPS, BATCH = 4, 5, 6, 3
"""Sizes of the equivalence tests: small, so that every configuration is cheap."""


def layer_options(proj_size: int = 2) -> dict[str, list[dict]]:
    """Each sequence layer (by class name) and the options only it has, from
    the table of kinds: one entry per ``nonlinearity`` it chooses (else one
    without options), and one with a projection where it takes one."""
    table = {}
    for cell in CELLS.values():
        variants = [dict(nonlinearity=k.nonlinearity) for k in cell.kinds if k.nonlinearity] or [dict()]
        if "proj_size" in cell.layer_arguments:
            variants.append(dict(proj_size=proj_size))
        table[cell.layer] = variants
    return table


KIND_OPTIONS = layer_options()
"""Each sequence layer and the options only it has."""


def build(config: dict, dtype=torch.float64, **more):
    """The torch.nn layer for ``config`` (``class_name`` and constructor arguments)
    and its rnnkit twin with the same weights: ``(ours, theirs)``."""
    config = dict(config, **more)
    class_name = config.pop("class_name")
    theirs = getattr(nn, class_name)(INPUT, HIDDEN, dtype=dtype, **config)
    return getattr(rnnkit, class_name).from_torch(theirs), theirs


def flat(value) -> Tensor:
    """A tensor, a PackedSequence or a tuple of tensors as one flat tensor."""
    if isinstance(value, PackedSequence):
        return value.data.flatten()
    if isinstance(value, Tensor):
        return value.flatten()
    return torch.cat([flat(v) for v in value])


def _weighted_sum(value) -> Tensor:
    """A loss that weighs every element differently, so that every gradient is tested."""
    v = flat(value)
    g = torch.Generator().manual_seed(1234)
    return (v * torch.randn(v.shape, generator=g, dtype=v.dtype)).sum()


@dataclass
class Run:
    output: Tensor
    state: Tensor
    grads: dict[str, Tensor]


def run(module: nn.Module, x: Tensor, hx=None, lengths: Tensor | None = None, batch_first=False) -> Run:
    """Forward and backward of ``module`` on copies of ``x`` and ``hx``.

    With ``lengths``, ``x`` is padded and goes in as a PackedSequence
    (``enforce_sorted=False``). Gradients are collected for the input, every
    part of ``hx`` and every parameter.
    """
    x = x.detach().clone().requires_grad_()
    leaves = {"input": x}
    if hx is not None:
        if isinstance(hx, Tensor):
            hx = hx.detach().clone().requires_grad_()
            leaves["hx"] = hx
        else:
            hx = tuple(h.detach().clone().requires_grad_() for h in hx)
            leaves.update({f"hx{i}": h for i, h in enumerate(hx)})
    input = x
    if lengths is not None:
        input = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    result = module(input) if hx is None else module(input, hx)
    is_sequence_layer = hasattr(module, "num_layers")
    output, state = result if is_sequence_layer else (result, result)
    module.zero_grad()
    (_weighted_sum(output) + _weighted_sum(state)).backward()
    grads = {name: leaf.grad for name, leaf in leaves.items()}
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return Run(flat(output).detach(), flat(state).detach(), grads)


def assert_same(ours: Run, theirs: Run, dtype: torch.dtype) -> None:
    """Outputs, states and every gradient agree within float tolerance."""
    tol = {torch.float32: dict(rtol=1e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-10)}[dtype]
    torch.testing.assert_close(ours.output, theirs.output, **tol, msg="output differs")
    torch.testing.assert_close(ours.state, theirs.state, **tol, msg="final state differs")
    assert ours.grads.keys() == theirs.grads.keys()
    for name, grad in theirs.grads.items():
        assert grad is not None, name
        torch.testing.assert_close(ours.grads[name], grad, **tol, msg=f"gradient of {name} differs")
