"""Backends that run one recurrent layer over a sequence, chosen per call.

A backend implements :func:`rnnkit.kernels.reference.run_layer`'s interface.
``fused`` runs compiled loops over whole sequences (CPU, float32/float64,
the kinds it knows); ``reference`` is the plain-torch implementation
every other backend is tested against, and serves every call. The choice
is ``auto`` by default (the first backend that supports the call, except
that a one-step call goes to the reference, or, when small, to the fused
backend's one-step loops: :data:`REFERENCE_MAX_STEPS`; cells too);
``RNNKIT_BACKEND=reference`` (or ``fused``) in the environment when
``rnnkit.kernels`` is imported, or ``with rnnkit.kernels.use_backend("reference"):``,
forces one.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, NamedTuple

import torch
from torch import Tensor

from rnnkit.kernels import fused, fused_step, ops, reference
from rnnkit.kernels.ops import tracing
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


_ENVIRONMENT = os.environ.get("RNNKIT_BACKEND", "auto")
"""``RNNKIT_BACKEND``, read once on import: every layer and cell call asks
for the backend, and reading the environment costs 0.7 us, a tenth of a
cell's call. Inside a running process, :func:`use_backend` changes it."""


def _requested() -> str:
    name = _forced or _ENVIRONMENT
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
One threshold for all keeps the rule simple; it errs towards the fused loops.

A small one-step call goes to the fused backend's one-step loops instead
(:mod:`rnnkit.kernels.fused_step`, which also serves the cells): one compiled
loop, none of the layer Function's set-up; under autograd an LSTM or GRU
step only, in an autograd Function of its own."""


def select_backend(
    kind: str,
    x: Tensor,
    weights: list[DirectionWeights],
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> Backend:
    """The backend that will run this call (see the module docstring and
    :data:`REFERENCE_MAX_STEPS`)."""
    name = _requested()
    call = (kind, x, weights, return_cells, recurrent_mask, zoneout_mask)
    if name == "auto":
        if x.shape[0] <= REFERENCE_MAX_STEPS:
            return BACKENDS["reference"]
        return next(b for b in BACKENDS.values() if b.refusal(*call) is None)
    backend = BACKENDS[name]
    reason = backend.refusal(*call)
    if reason is not None:
        raise UnsupportedCall(
            f"rnnkit backend {name!r} cannot run this {kind} call: {reason}; "
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
    (``recurrent_mask`` and ``zoneout_mask`` are drawn by the driver).

    A call that torch is tracing into a graph (``torch.compile``,
    ``torch.export``, ``torch.jit.trace``) becomes one ``rnnkit::layer``
    operator (:mod:`rnnkit.kernels.ops`), or ONNX's own operator during
    ONNX export (:mod:`rnnkit.kernels.onnx_layer`), rather than the
    backend's Python: the fused loops cannot be traced, and the reference's
    loop over time steps would unroll into a graph as long as the sequence."""
    masks = (recurrent_mask, zoneout_mask)
    if tracing():
        if _exporting_to_onnx():
            from rnnkit.kernels import onnx_layer

            return onnx_layer.layer(kind, x, state, weights, lengths, return_cells, *masks)
        return ops.layer(kind, x, state, weights, lengths, return_cells, *masks)
    return run_selected(kind, x, state, weights, lengths, return_cells, *masks)


def run_selected(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> tuple[Tensor, State] | tuple[Tensor, State, Tensor]:
    """Run one layer with the selected backend, as it is, never through an operator.
    Under ``auto``, a one-step call goes to the fused backend's one-step
    loops where they take it (:mod:`rnnkit.kernels.fused_step`)."""
    masks = (recurrent_mask, zoneout_mask)
    if x.shape[0] == 1 and _requested() == "auto":
        planned = fused_step.plan(kind, x, state, weights, lengths, return_cells, *masks)
        if not isinstance(planned, str):
            return fused_step.run_layer(kind, x, state, weights, planned)
    backend = select_backend(kind, x, weights, return_cells, recurrent_mask, zoneout_mask)
    return backend.run_layer(
        kind, x, state, weights, lengths,
        return_cells=return_cells, recurrent_mask=recurrent_mask, zoneout_mask=zoneout_mask,
    )


def run_cell(kind: str, x: Tensor, state: State, w: DirectionWeights) -> State:
    """One step of a cell (``rnnkit.RNNCell``, ...): ``x (N, H_in)``, ``state``
    a tuple of ``(N, ·)`` tensors, as :data:`reference.STEPS` take them, checked
    against the weights (shapes, dtypes, devices) by the cell. The
    reference's step, except that under ``auto`` a call goes to the fused
    backend's one-step loops where they take it."""
    if not tracing() and _requested() == "auto":  # a graph holds the reference's ops, not a loop
        planned = fused_step.plan(kind, x, state, [w], checked=True)
        if not isinstance(planned, str):
            return fused_step.run_cell(kind, x, state, w, planned)
    return reference.STEPS[kind](reference.input_projection(x, w), state, w)


def _exporting_to_onnx() -> bool:
    """``torch.onnx.is_in_onnx_export()``, also where torch.compile's tracer
    (which the ONNX exporter uses for ``strict=True``) folds that call to ``False``."""
    try:
        from torch.onnx._internal.exporter import _flags
    except ImportError:  # an older torch: the public call is all there is
        return torch.onnx.is_in_onnx_export()
    return _flags._is_onnx_exporting or torch.onnx.is_in_onnx_export()
