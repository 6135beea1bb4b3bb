"""The ``fused`` backend: compiled CPU loops for whole sequences, forward and backward.

It serves float32 and float64 CPU tensors for every kind whose table entry
names a fused module (:attr:`rnnkit.kinds.Kind.fused`: Elman with tanh or
ReLU, LSTM with or without a projection, GRU); :func:`refusal` says why not
for anything else (another device or dtype), and ``auto`` then falls back to
the reference. A new kind joins by naming its module, which defines
``run_layer``, in its table entry; the driver does not change.

The loops compile on first use for each kind and dtype (seconds each
on a 2-core machine; README's Speed section has the numbers) and numba
caches the result on disk, so later processes only load it. ``python -m
rnnkit.kernels`` compiles them ahead, e.g. right after installing.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch
from torch import Tensor

from rnnkit.kernels import fused_common as common
from rnnkit.kernels import fused_extension, fused_step, ops
from rnnkit.kernels.reference import DirectionWeights, State
from rnnkit.kinds import KINDS, cell_of

LAYERS: dict[str, Callable[..., tuple[Tensor, State]]] = {
    key: importlib.import_module(f"rnnkit.kernels.{kind.fused}").run_layer
    for key, kind in KINDS.items()
    if kind.fused
}
"""The fused layer of each kind this backend serves, by kernel key."""

DTYPES = (torch.float32, torch.float64)


def refusal(
    kind: str,
    x: Tensor,
    weights: list[DirectionWeights],
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> str | None:
    """Why the fused loops cannot run this call, or ``None`` when they can.

    They run a known cell kind on CPU float32 or float64 tensors, every
    weight with the input's dtype and device; and not under torch machinery
    that the loops, reading raw memory, would escape: autocast (whose
    products would change the dtype under them) and torch.func's transforms
    (whose tensors are wrappers). The reference, plain tensor ops, serves
    all of those. The layer options beyond torch.nn (layer norm, recurrent
    dropout, zoneout) run fused for every kind
    (:mod:`rnnkit.kernels.fused_extension`); the reference runs the rest."""
    if kind not in LAYERS:
        return f"no fused loops for cell kind {kind!r}"
    dtype = x.dtype
    if not x.is_cpu or dtype not in DTYPES:
        return f"it runs float32 and float64 on the CPU, got {dtype} on {x.device}"
    if common.cpu_autocast_enabled():
        return "autocast is on"
    if common.transforms_active():
        return "a torch.func transform (grad, vmap, ...) is running"
    if common.forward_ad_active():
        return "forward-mode AD (a dual level) is on"
    for w in weights:
        for t in w:
            if t is not None and (not t.is_cpu or t.dtype != dtype):
                return f"a weight is {t.dtype} on {t.device}, the input {dtype} on {x.device}"
    return None


def extension_options(
    weights: list[DirectionWeights], recurrent_mask: Tensor | None, zoneout_mask: Tensor | None
) -> list[str]:
    """The options beyond torch.nn a call uses, by their layer argument's name."""
    used = ["layer_norm"] if weights and weights[0].ln_hh_weight is not None else []
    return used + [
        name for name, mask in (("recurrent_dropout", recurrent_mask), ("zoneout", zoneout_mask))
        if mask is not None
    ]


def run_layer(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> tuple[Tensor, State] | tuple[Tensor, State, Tensor]:
    """Run one layer; the interface of :func:`rnnkit.kernels.reference.run_layer`
    (``return_cells``, every step's ``c_t`` as a third result, is the LSTM's only)."""
    lengths = common.clean_lengths(lengths, x.shape[0])
    if return_cells and kind != "lstm":
        raise ValueError(f"return_cells=True is for the LSTM only (its cells c_t), not {kind!r}")
    if extension_options(weights, recurrent_mask, zoneout_mask):
        return fused_extension.run_layer(
            kind, x, state, weights, lengths, recurrent_mask, zoneout_mask, return_cells=return_cells
        )
    if return_cells:
        return LAYERS[kind](kind, x, state, weights, lengths, return_cells=True)
    return LAYERS[kind](kind, x, state, weights, lengths)


def warm_up(dtypes: tuple[torch.dtype, ...] = DTYPES) -> None:
    """Compile (or load from numba's cache) the loops for ``dtypes`` now rather
    than on first use: a forward and backward pass through a tiny layer of
    each fused module (kinds that share one, such as tanh and ReLU, share
    its loops, and so does an LSTM's projection) and its one-step loop
    (:mod:`rnnkit.kernels.fused_step`), and through an Elman layer,
    an LSTM and a GRU with layer norm and masks (:mod:`rnnkit.kernels.fused_extension`),
    and the masks' draw (:func:`rnnkit.kernels.ops.bernoulli`)."""
    first_of_module: dict[str, str] = {}
    for key, kind in KINDS.items():
        if kind.fused:
            first_of_module.setdefault(kind.fused, key)
    for dtype in dtypes:
        for key in first_of_module.values():
            cell = cell_of(key)
            x = torch.zeros(2, 1, 1, dtype=dtype, requires_grad=True)
            w = torch.zeros(len(cell.gates), 1, dtype=dtype, requires_grad=True)
            state = tuple(torch.zeros(1, 1, 1, dtype=dtype) for _ in cell.state)
            output, _ = run_layer(key, x, state, [DirectionWeights(w, w, None, None)], None)
            output.sum().backward()
            one = [DirectionWeights(w, w, None, None)]
            for grad in (False, True) if key in fused_step.BACKWARDS else (False,):  # the one-step loops
                with torch.set_grad_enabled(grad):
                    planned = fused_step.plan(key, x[:1], state, one)
                    assert not isinstance(planned, str), planned
                    output, _ = fused_step.run_layer(key, x[:1], state, one, planned)
                if grad:  # and their backward loops
                    output.sum().backward()
        # the LSTM's loops for the options beyond torch.nn (layer norm, masks)
        x = torch.zeros(2, 1, 1, dtype=dtype, requires_grad=True)
        w, gain = torch.zeros(4, 1, dtype=dtype, requires_grad=True), torch.ones(4, dtype=dtype)
        normed = DirectionWeights(w, w, ln_ih_weight=gain, ln_hh_weight=gain, ln_c_weight=gain[:1],
                                  ln_c_bias=gain[:1])
        state = (torch.zeros(1, 1, 1, dtype=dtype), torch.zeros(1, 1, 1, dtype=dtype))
        mask = torch.ones(1, 1, 1, dtype=dtype)
        output, _ = run_layer("lstm", x, state, [normed], None, recurrent_mask=mask, zoneout_mask=mask[None])
        output.sum().backward()
        w = torch.zeros(3, 1, dtype=dtype, requires_grad=True)
        normed = DirectionWeights(w, w, ln_ih_weight=gain[:3], ln_hh_weight=gain[:3])
        output, _ = run_layer("gru", x, state[:1], [normed], None, recurrent_mask=mask, zoneout_mask=mask[None])
        output.sum().backward()
        w = torch.zeros(1, 1, dtype=dtype, requires_grad=True)
        normed = DirectionWeights(w, w, ln_ih_weight=gain[:1], ln_hh_weight=gain[:1])
        output, _ = run_layer("rnn_tanh", x, state[:1], [normed], None, recurrent_mask=mask, zoneout_mask=mask[None])
        output.sum().backward()
        ops.bernoulli((1,), 0.5, dtype)  # and the masks' draw
