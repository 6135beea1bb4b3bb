"""One recurrent layer as torch custom operators, for graphs that torch builds;
and the options' random masks as one more (``rnnkit::bernoulli``).

``torch.compile``, ``torch.export`` and ``torch.jit.trace`` record operators,
not Python: :func:`layer` is the whole layer as one operator,
``rnnkit::layer``, whose fake (meta) function gives the output shapes from
the input's and the weights', so a graph holds one node per layer whatever
the sequence length. Its implementation runs the selected backend (see
:func:`rnnkit.kernels.select_backend`) with autograd off; its backward is a
second operator, ``rnnkit::layer_backward``, which runs the layer again
with autograd on and returns the gradients. Both backends serve, and
neither needs to know it is being traced.

Eager calls do not come here (the backends' own autograd is faster: it
keeps what the forward pass computed): :func:`rnnkit.kernels.run_layer`
routes only traced calls through these operators.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from rnnkit.kernels.numba_ops import bernoulli_fill
from rnnkit.kernels.reference import DirectionWeights, State


def flatten_weights(weights: Sequence[DirectionWeights]) -> tuple[list[Tensor], str]:
    """``D`` :class:`DirectionWeights` as one list of the tensors present,
    direction by direction, and the names of the fields they fill (the same
    for every direction of a layer), comma-separated: an operator's
    arguments can be lists of tensors and strings, not lists of strings."""
    fields = [name for name, t in weights[0]._asdict().items() if t is not None]
    return [getattr(w, name) for w in weights for name in fields], ",".join(fields)


def unflatten_weights(flat: Sequence[Tensor], fields: str) -> list[DirectionWeights]:
    """The inverse of :func:`flatten_weights`."""
    names = fields.split(",")
    n = len(names)
    return [DirectionWeights(**dict(zip(names, flat[i : i + n]))) for i in range(0, len(flat), n)]


def first_bad_length(lengths: Tensor, steps: int) -> int | None:
    """The index of the first of ``lengths (N,)`` outside ``1..steps``, or ``None``."""
    bad = ((lengths < 1) | (lengths > steps)).nonzero()
    return int(bad[0]) if bad.numel() else None


def _run_backend(
    kind: str, x: Tensor, state: State, weights: list[DirectionWeights],
    lengths: Tensor | None, return_cells: bool, masks: tuple[Tensor | None, Tensor | None],
) -> list[Tensor]:
    """The selected backend's results as one list: output, each state part,
    then the cells if asked. ``masks``: the recurrent-dropout and zoneout masks.

    The lengths are checked here, where a traced graph has their values (the
    layer checks them before tracing begins only in an eager call)."""
    from rnnkit.kernels import run_selected  # here: rnnkit.kernels imports this module

    bad = None if lengths is None else first_bad_length(lengths, x.shape[0])
    if bad is not None:
        raise RuntimeError(
            f"rnnkit::layer: Expected each length in 1..{x.shape[0]}; got lengths[{bad}] = {int(lengths[bad])}"
        )

    output, state_n, *cells = run_selected(kind, x, state, weights, lengths, return_cells, *masks)
    return [output, *state_n, *cells]


@torch.library.custom_op("rnnkit::layer", mutates_args=())
def _layer_op(
    kind: str,
    x: Tensor,
    state: list[Tensor],
    weights: list[Tensor],
    fields: str,
    lengths: Optional[Tensor],
    return_cells: bool,
    recurrent_mask: Optional[Tensor],
    zoneout_mask: Optional[Tensor],
) -> list[Tensor]:
    with torch.no_grad():
        results = _run_backend(
            kind, x, tuple(state), unflatten_weights(weights, fields), lengths, return_cells,
            (recurrent_mask, zoneout_mask),
        )
    return _unaliased(results, [x, *state, *weights])


def _unaliased(results: list[Tensor], inputs: list[Tensor]) -> list[Tensor]:
    """``results``, each sharing memory with no input and no other result (a
    custom operator's rule), copied where it would."""
    seen = {t.untyped_storage().data_ptr() for t in inputs}
    owned = []
    for r in results:
        if r.untyped_storage().data_ptr() in seen:
            r = r.clone()
        seen.add(r.untyped_storage().data_ptr())
        owned.append(r)
    return owned


@_layer_op.register_fake
def _layer_fake(kind, x, state, weights, fields, lengths, return_cells, recurrent_mask, zoneout_mask):
    steps, batch, _ = x.shape
    directions = unflatten_weights(weights, fields)
    output_size = directions[0].w_hh.shape[1]  # H_out: proj_size with a projection, else H
    results = [x.new_empty(steps, batch, len(directions) * output_size)]
    results += [s.new_empty(s.shape) for s in state]
    if return_cells:
        results.append(x.new_empty(steps, batch, len(directions) * state[1].shape[2]))
    return results


@torch.library.custom_op("rnnkit::layer_backward", mutates_args=())
def _layer_backward_op(
    kind: str,
    x: Tensor,
    state: list[Tensor],
    weights: list[Tensor],
    fields: str,
    lengths: Optional[Tensor],
    return_cells: bool,
    recurrent_mask: Optional[Tensor],
    zoneout_mask: Optional[Tensor],
    grads: list[Tensor],
) -> list[Tensor]:
    """Gradients of ``sum(grads[i] * results[i])`` for ``x``, each state part
    and each weight, in that order (zeros where one has no effect)."""
    leaves = [t.detach().requires_grad_() for t in (x, *state, *weights)]
    parts = len(state)
    # An operator's implementation runs below autograd (the dispatcher
    # excludes its keys); this one records the layer again to differentiate it.
    with torch.enable_grad(), torch._C._SetExcludeDispatchKeyGuard(
        torch._C.DispatchKey.AutogradFunctionality, False
    ):
        results = _run_backend(
            kind, leaves[0], tuple(leaves[1 : 1 + parts]),
            unflatten_weights(leaves[1 + parts :], fields), lengths, return_cells,
            (recurrent_mask, zoneout_mask),
        )
    found = torch.autograd.grad(results, leaves, grads, allow_unused=True)
    found = [torch.zeros_like(t) if g is None else g for g, t in zip(found, leaves)]
    return _unaliased(found, [x, *state, *weights, *grads])


@_layer_backward_op.register_fake
def _layer_backward_fake(kind, x, state, weights, fields, lengths, return_cells, recurrent_mask, zoneout_mask, grads):
    return [t.new_empty(t.shape) for t in (x, *state, *weights)]


def _setup_context(ctx, inputs, output):
    kind, x, state, weights, fields, lengths, return_cells, recurrent_mask, zoneout_mask = inputs
    ctx.kind, ctx.fields, ctx.return_cells, ctx.parts = kind, fields, return_cells, len(state)
    ctx.save_for_backward(lengths, recurrent_mask, zoneout_mask, x, *state, *weights)


def _backward(ctx, grads):
    lengths, recurrent_mask, zoneout_mask, x, *rest = ctx.saved_tensors
    state, weights = rest[: ctx.parts], rest[ctx.parts :]
    found = _layer_backward_op(
        ctx.kind, x, state, weights, ctx.fields, lengths, ctx.return_cells,
        recurrent_mask, zoneout_mask, list(grads),
    )
    grad_x, grad_state, grad_weights = found[0], found[1 : 1 + ctx.parts], found[1 + ctx.parts :]
    # One per argument of the operator: kind, x, state, weights, fields, lengths,
    # return_cells and the two masks.
    return None, grad_x, grad_state, grad_weights, None, None, None, None, None


_layer_op.register_autograd(_backward, setup_context=_setup_context)


def layer(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> tuple:
    """:func:`rnnkit.kernels.run_layer` as the ``rnnkit::layer`` operator: the
    same arguments and results."""
    flat, fields = flatten_weights(weights)
    results = _layer_op(kind, x, list(state), flat, fields, lengths, return_cells, recurrent_mask, zoneout_mask)
    parts = len(state)
    output, state_n = results[0], tuple(results[1 : 1 + parts])
    return (output, state_n, results[1 + parts]) if return_cells else (output, state_n)


def tracing() -> bool:
    """Whether torch is recording this call into a graph rather than running it
    (``torch.compile``, ``torch.export``, ``torch.jit.trace``)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _draw(seed: Tensor, shape: list[int], p: float, double: bool) -> Tensor:
    mask = torch.empty(shape, dtype=torch.float64 if double else torch.float32)
    bernoulli_fill(mask.view(-1).numpy(), p, int(seed))
    return mask


_bernoulli_op = torch.library.custom_op("rnnkit::bernoulli", _draw, mutates_args=())


@_bernoulli_op.register_fake
def _bernoulli_fake(seed, shape, p, double):
    return seed.new_empty(shape, dtype=torch.float64 if double else torch.float32)


def bernoulli(shape: Sequence[int], p: float, dtype: torch.dtype) -> Tensor:
    """A CPU tensor of ``shape`` whose entries are 1 with probability ``p``,
    else 0 (:func:`~rnnkit.kernels.numba_ops.bernoulli_fill`), from one seed
    drawn from torch's default generator. In a graph torch builds it is the
    ``rnnkit::bernoulli`` operator, so that the graph draws what an eager
    call does for the same seed; eager calls skip the operator's dispatch
    (17 µs a call against 6.5)."""
    seed = torch.randint(0, 2**63 - 1, (), dtype=torch.int64)
    mask = (_bernoulli_op if tracing() else _draw)(seed, list(shape), float(p), dtype == torch.float64)
    return mask if dtype in (torch.float32, torch.float64) else mask.to(dtype)
