"""Backends that run one recurrent layer over a sequence, chosen per call.

A backend implements :func:`rnnkit.kernels.reference.run_layer`'s interface.
``fused`` runs compiled loops over whole sequences (CPU, float32/float64,
the cell types it knows); ``reference`` is the plain-torch implementation
every other backend is tested against, and serves every call. The choice
is ``auto`` by default (the first backend that supports the call, except
that a one-step call goes to the reference: :data:`REFERENCE_MAX_STEPS`);
``RNNKIT_BACKEND=reference`` (or ``fused``) in the environment, or
``with rnnkit.kernels.use_backend("reference"):``, forces one.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, NamedTuple

import torch
from torch import Tensor

from rnnkit.kernels import fused, reference
from rnnkit.kernels.reference import DirectionWeights, State


class Backend(NamedTuple):
    """A way to run a layer: ``refusal(mode, x, weights)`` says why it cannot
    take the call (``None`` when it can), ``run_layer`` does it (same
    interface as the reference)."""

    name: str
    refusal: Callable[[str, Tensor, list[DirectionWeights]], str | None]
    run_layer: Callable[..., tuple[Tensor, State]]


BACKENDS: dict[str, Backend] = {
    "fused": Backend("fused", fused.refusal, fused.run_layer),
    "reference": Backend("reference", lambda mode, x, weights: None, reference.run_layer),
}
"""Every backend, in order of preference for ``auto``: the last is the fallback."""

_forced: str | None = None


class UnsupportedCall(ValueError):
    """The forced backend cannot run this call (another device, dtype or cell type)."""


def _requested() -> str:
    name = _forced or os.environ.get("RNNKIT_BACKEND", "auto")
    if name != "auto" and name not in BACKENDS:
        raise ValueError(
            f"unknown rnnkit backend {name!r}; expected 'auto' or one of {sorted(BACKENDS)}"
        )
    return name


REFERENCE_MAX_STEPS = 1
"""``auto`` gives a sequence of at most this many steps to the reference
(streaming and decoding call a layer one step at a time). The fused
Function's fixed cost (the autograd Function, numpy views of every tensor,
the threads' plan; about 20 us) is then more than the reference's few tensor
ops. Measured on a 2-core CPU for every cell type at N = 1, 8, 64 and
H = 16, 128, with and without autograd: one step ran 1.0-1.8x faster through
the reference (the GRU at H = 128, N = 8 without autograd about even); at two
steps the fused loops won for most LSTM and GRU sizes (the Elman layer's
still lost, by up to 1.3x), and at four for nearly every size and cell type.
One threshold for all keeps the rule simple; it errs towards the fused loops."""


def select_backend(mode: str, x: Tensor, weights: list[DirectionWeights]) -> Backend:
    """The backend that will run this call (see the module docstring and
    :data:`REFERENCE_MAX_STEPS`)."""
    name = _requested()
    if name == "auto":
        if x.shape[0] <= REFERENCE_MAX_STEPS:
            return BACKENDS["reference"]
        return next(b for b in BACKENDS.values() if b.refusal(mode, x, weights) is None)
    backend = BACKENDS[name]
    reason = backend.refusal(mode, x, weights)
    if reason is not None:
        raise UnsupportedCall(
            f"rnnkit backend {name!r} cannot run this {mode} call: {reason}; "
            f"'auto' picks the first backend that can"
        )
    return backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend (``'reference'``, ``'auto'``, ...) inside a ``with`` block,
    for the whole process (like ``torch.backends`` flags), not one thread."""
    global _forced
    previous, _forced = _forced, name
    try:
        _requested()
        yield
    finally:
        _forced = previous


@torch.compiler.disable
def run_layer(
    mode: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
) -> tuple[Tensor, State]:
    """Run one layer with the selected backend; see :func:`reference.run_layer`.

    torch.compile does not trace into it: the fused loops are compiled
    already, and the reference's loop over time steps would unroll into a
    graph as long as the sequence. It runs as it is, between the compiled
    graphs around it."""
    return select_backend(mode, x, weights).run_layer(mode, x, state, weights, lengths)
