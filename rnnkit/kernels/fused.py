"""The ``fused`` backend: compiled CPU loops for whole sequences, forward and backward.

It serves float32 and float64 CPU tensors for every cell type in
:data:`LAYERS` (Elman with tanh or ReLU, LSTM with or without a projection,
GRU); :func:`refusal` says why not for anything else (another device or dtype),
and ``auto`` then falls back to the reference. A new cell type joins by
adding its ``run_layer`` to :data:`LAYERS`; the driver does not change.

The loops compile on first use for each cell type and dtype (seconds each
on a 2-core machine; README's Speed section has the numbers) and numba
caches the result on disk, so later processes only load it. ``python -m
rnnkit.kernels`` compiles them ahead, e.g. right after installing.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from rnnkit.kernels import fused_common as common
from rnnkit.kernels import fused_gru, fused_lstm, fused_rnn
from rnnkit.kernels.reference import GATES, DirectionWeights, State

LAYERS: dict[str, Callable[..., tuple[Tensor, State]]] = {
    "rnn_tanh": fused_rnn.run_layer,
    "rnn_relu": fused_rnn.run_layer,
    "lstm": fused_lstm.run_layer,
    "gru": fused_gru.run_layer,
}
"""The fused layer of each cell type (``mode``) this backend serves."""

DTYPES = (torch.float32, torch.float64)


def refusal(mode: str, x: Tensor, weights: list[DirectionWeights]) -> str | None:
    """Why the fused loops cannot run this call, or ``None`` when they can.

    They run a known cell type on CPU float32 or float64 tensors, every
    weight with the input's dtype and device; and not under torch machinery
    that the loops, reading raw memory, would escape: autocast (whose
    products would change the dtype under them) and torch.func's transforms
    (whose tensors are wrappers). The reference, plain tensor ops, serves
    all of those."""
    if mode not in LAYERS:
        return f"no fused loops for cell type {mode!r}"
    dtype = x.dtype
    if not x.is_cpu or dtype not in DTYPES:
        return f"it runs float32 and float64 on the CPU, got {dtype} on {x.device}"
    if _autocast_enabled("cpu"):
        return "autocast is on"
    if _transforms_active():
        return "a torch.func transform (grad, vmap, ...) is running"
    for w in weights:
        for t in w:
            if t is not None and (not t.is_cpu or t.dtype != dtype):
                return f"a weight is {t.dtype} on {t.device}, the input {dtype} on {x.device}"
    return None


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _transforms_active() -> bool:
    """Whether a torch.func transform (grad, vmap, ...) is running: its
    tensors, the state's included, are wrappers, not plain memory."""
    check = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(check and check())


def run_layer(
    mode: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
) -> tuple[Tensor, State]:
    """Run one layer; the interface of :func:`rnnkit.kernels.reference.run_layer`."""
    return LAYERS[mode](mode, x, state, weights, common.clean_lengths(lengths, x.shape[0]))


def warm_up(dtypes: tuple[torch.dtype, ...] = DTYPES) -> None:
    """Compile (or load from numba's cache) the loops for ``dtypes`` now rather
    than on first use: a forward and backward pass through a tiny layer of
    each cell type (ReLU and a projection use the same loops)."""
    for dtype in dtypes:
        for mode in ("rnn_tanh", "lstm", "gru"):
            gates = GATES[mode]
            x = torch.zeros(2, 1, 1, dtype=dtype, requires_grad=True)
            w = torch.zeros(gates, 1, dtype=dtype, requires_grad=True)
            state = tuple(torch.zeros(1, 1, 1, dtype=dtype) for _ in range(2 if mode == "lstm" else 1))
            output, _ = run_layer(mode, x, state, [DirectionWeights(w, w, None, None)], None)
            output.sum().backward()
