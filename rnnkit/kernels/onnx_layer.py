"""One recurrent layer as ONNX's own ``RNN``, ``LSTM`` or ``GRU`` operator.

During ``torch.onnx.export`` (the dynamo exporter, which
:func:`rnnkit.onnx.export` drives) :func:`rnnkit.kernels.run_layer` comes
here: :func:`layer` records the ONNX operator with
``torch.onnx.ops.symbolic_multi_out``, the weights rearranged to ONNX's
layout, so that any ONNX runtime runs the layer with its own kernels.

ONNX's layout, with ``D`` directions, ``G`` gates and hidden size ``H``:
``W (D, G*H, H_in)``, ``R (D, G*H, H)``, ``B (D, 2*G*H)`` (input biases then
recurrent biases), ``Y (T, D, N, H)``; gates in the order LSTM ``i, o, f, c``
(torch: ``i, f, g, o``) and GRU ``z, r, h`` (torch: ``r, z, n``). torch's GRU
applies the reset gate after the recurrent product, which is ONNX's
``linear_before_reset=1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.kernels.reference import DirectionWeights, State
from rnnkit.kinds import KINDS, cell_of

OPERATORS = {key: cell_of(key).onnx_operator for key in KINDS}
"""The ONNX operator of each cell kind."""

GATE_ORDER = {key: tuple(map(cell_of(key).gates.index, cell_of(key).onnx_gates)) for key in KINDS}
"""For each kind, torch's index of each of ONNX's gates, in ONNX's order."""

OPSET = 18
"""The ONNX opset the operators are recorded for (RNN, LSTM and GRU are unchanged since 14)."""


def refusal(
    kind: str, weights: list[DirectionWeights], return_cells: bool, zoneout_mask: Tensor | None = None
) -> str | None:
    """Why ONNX's operators cannot express this layer, or ``None`` when they can
    (recurrent dropout, which does nothing in eval mode, needs no refusal)."""
    if kind not in OPERATORS:
        return f"no ONNX operator for cell kind {kind!r}"
    if weights[0].w_hr is not None:
        return "an LSTM with proj_size > 0 has no ONNX equivalent (ONNX's LSTM has no projection)"
    if return_cells:
        return "ONNX's LSTM returns the last cell state only, not every step's (return_states=True)"
    if weights[0].ln_hh_weight is not None:
        return "ONNX's recurrent operators have no layer norm (layer_norm=True)"
    if zoneout_mask is not None:
        return "ONNX's recurrent operators have no zoneout (zoneout > 0)"
    return None


def _reordered(t: Tensor, kind: str) -> Tensor:
    """``t``'s gate blocks (along its first axis) in ONNX's order: one gather
    with a constant index, which the exporter folds into the initialiser."""
    blocks = t.unflatten(0, (len(GATE_ORDER[kind]), -1))
    order = torch.tensor(GATE_ORDER[kind], device=t.device)
    return blocks.index_select(0, order).flatten(0, 1)


def _attributes(kind: str, hidden_size: int, directions: int) -> dict:
    attrs = {"hidden_size": hidden_size, "direction": "bidirectional" if directions == 2 else "forward"}
    if kind.startswith("rnn_"):
        attrs["activations"] = ["Relu" if kind == "rnn_relu" else "Tanh"] * directions
    if kind == "gru":
        attrs["linear_before_reset"] = 1
    return attrs


def layer(
    kind: str,
    x: Tensor,
    state: State,
    weights: list[DirectionWeights],
    lengths: Tensor | None,
    return_cells: bool = False,
    recurrent_mask: Tensor | None = None,
    zoneout_mask: Tensor | None = None,
) -> tuple[Tensor, State]:
    """:func:`rnnkit.kernels.run_layer` recorded as one ONNX operator: same
    arguments and results (``x (T, N, H_in)`` -> ``output (T, N, D*H)``)."""
    if torch.jit.is_tracing():  # the TorchScript-based exporter
        raise RuntimeError(
            "rnnkit layers export to ONNX with rnnkit.onnx.export (or torch.onnx.export "
            "with dynamo=True, its default), not with dynamo=False"
        )
    if recurrent_mask is not None:
        raise ValueError("rnnkit: export a model with recurrent_dropout in eval mode (model.eval())")
    reason = refusal(kind, weights, return_cells, zoneout_mask)
    if reason is not None:
        raise ValueError(f"rnnkit: cannot export this layer to ONNX: {reason}")
    steps, batch, _ = x.shape
    directions = len(weights)
    hidden_size = weights[0].w_hh.shape[1]
    w = torch.stack([_reordered(d.w_ih, kind) for d in weights])
    r = torch.stack([_reordered(d.w_hh, kind) for d in weights])
    b = None
    if weights[0].b_ih is not None:
        b = torch.stack([torch.cat([_reordered(d.b_ih, kind), _reordered(d.b_hh, kind)]) for d in weights])
    sequence_lens = None if lengths is None else lengths.to(torch.int32)
    inputs = [x, w, r, b, sequence_lens, *state]
    state_shape = (directions, batch, hidden_size)
    y, *state_n = torch.onnx.ops.symbolic_multi_out(
        OPERATORS[kind],
        inputs,
        _attributes(kind, hidden_size, directions),
        dtypes=[x.dtype] * (1 + len(state)),
        shapes=[(steps, directions, batch, hidden_size)] + [state_shape] * len(state),
        version=OPSET,
    )
    # (T, D, N, H) -> (T, N, D*H): forward features first, as the backends give them.
    output = y.permute(0, 2, 1, 3).reshape(steps, batch, directions * hidden_size)
    return output, tuple(state_n)
