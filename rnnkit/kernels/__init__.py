"""Backends that run one recurrent layer over a sequence, chosen per call.

A backend implements :func:`rnnkit.kernels.reference.run_layer`'s interface.
``fused`` runs compiled loops over whole sequences (CPU, float32/float64,
the kinds it knows); ``reference`` is the plain-torch implementation
every other backend is tested against, and serves every call. The choice
is ``auto`` by default (the first backend that supports the call);
``RNNKIT_BACKEND=reference`` (or ``fused``) in the environment, or
``with rnnkit.kernels.use_backend("reference"):``, forces one.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import Tensor

from rnnkit.kernels import fused, reference
from rnnkit.kernels.reference import DirectionWeights, State


class Backend(NamedTuple):
    """A way to run a layer: ``refusal(kind, x, weights, return_cells,
    recurrent_mask, zoneout_mask)`` says why it cannot take the call (``None``
    when it can), ``run_layer`` does it (same interface as the reference)."""

    name: str
    refusal: Callable[..., str | None]
    run_layer: Callable[..., tuple[Tensor, State]]


BACKENDS: dict[str, Backend] = {
    "fused": Backend("fused", fused.refusal, fused.run_layer),
    "reference": Backend("reference", lambda *call: None, reference.run_layer),
}
"""Every backend, in order of preference for ``auto``: the last is the fallback."""

_forced: str | None = None


class UnsupportedCall(ValueError):
    """The forced backend cannot run this call (another device, dtype or kind)."""


def _requested() -> str:
    name = _forced or os.environ.get("RNNKIT_BACKEND", "auto")
    if name != "auto" and name not in BACKENDS:
        raise ValueError(
            f"unknown rnnkit backend {name!r}; expected 'auto' or one of {sorted(BACKENDS)}"
        )
    return name


def select_backend(
    kind: str,
    x: Tensor,
    weights: list[DirectionWeights],
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> Backend:
    """The backend that will run this call (see the module docstring)."""
    name = _requested()
    call = (kind, x, weights, return_cells, recurrent_mask, zoneout_mask)
    if name != "auto":
        backend = BACKENDS[name]
        reason = backend.refusal(*call)
        if reason is not None:
            raise UnsupportedCall(
                f"rnnkit backend {name!r} cannot run this {kind} call: {reason}; "
                f"'auto' picks the first backend that can"
            )
        return backend
    return next(b for b in BACKENDS.values() if b.refusal(*call) is None)


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
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> tuple[Tensor, State] | tuple[Tensor, State, Tensor]:
    """Run one layer with the selected backend; see :func:`reference.run_layer`
    (``recurrent_mask`` and ``zoneout_mask``, drawn by the driver, are passed
    on only when given, so a backend without them still serves plain calls).

    torch.compile does not trace into it: the fused loops are compiled
    already, and the reference's loop over time steps would unroll into a
    graph as long as the sequence. It runs as it is, between the compiled
    graphs around it."""
    backend = select_backend(kind, x, weights, return_cells, recurrent_mask, zoneout_mask)
    options: dict[str, Any] = {"return_cells": True} if return_cells else {}
    if recurrent_mask is not None:
        options["recurrent_mask"] = recurrent_mask
    if zoneout_mask is not None:
        options["zoneout_mask"] = zoneout_mask
    return backend.run_layer(kind, x, state, weights, lengths, **options)
