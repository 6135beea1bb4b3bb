"""The parameters of a recurrent layer: ``torch.nn``'s names, order and shapes.

Plain Python, no torch: the layers register their parameters from it and
``rnnkit explain`` describes them from it.
"""

from __future__ import annotations

Shapes = dict[str, tuple[int, ...]]


def parameter_shapes(
    gates: int,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
    proj_size: int = 0,
    layer_norm: bool = False,
    cell_norm: bool = False,
) -> list[tuple[int, int, Shapes]]:
    """For each layer ``k`` and direction ``d``, in torch's order, ``(k, d,
    shapes)``: each parameter's name without its :func:`suffix` (``weight_ih``,
    ``weight_hh``, then ``bias_ih``, ``bias_hh`` with ``bias`` and
    ``weight_hr`` with a projection) and its shape; with ``layer_norm``, after
    torch's own, the gains ``ln_ih_weight`` and ``ln_hh_weight`` ``(G*H,)`` and,
    with ``cell_norm`` (an LSTM), ``ln_c_weight`` and ``ln_c_bias`` ``(H,)``.

    ``gates`` is how many blocks of ``hidden_size`` rows the weights stack
    (1 for an RNN, 4 for an LSTM, 3 for a GRU). Layer ``k > 0`` reads the
    previous layer's output, both directions of ``proj_size`` (if set) or
    ``hidden_size`` features each.
    """
    rows = gates * hidden_size
    output_size = proj_size or hidden_size
    directions = 2 if bidirectional else 1
    blocks = []
    for k in range(num_layers):
        inputs = input_size if k == 0 else directions * output_size
        for d in range(directions):
            shapes: Shapes = {"weight_ih": (rows, inputs), "weight_hh": (rows, output_size)}
            if bias:
                shapes |= {"bias_ih": (rows,), "bias_hh": (rows,)}
            if proj_size:
                shapes["weight_hr"] = (proj_size, hidden_size)
            if layer_norm:
                shapes |= layer_norm_shapes(gates, hidden_size, cell_norm)
            blocks.append((k, d, shapes))
    return blocks


def suffix(layer: int, direction: int) -> str:
    """What torch appends to a parameter's name: ``_l0``, ``_l1_reverse``, ..."""
    return f"_l{layer}" + ("_reverse" if direction else "")


def layer_norm_shapes(gates: int, hidden_size: int, cell_norm: bool) -> Shapes:
    """The layer-norm parameters of one layer and direction (or of a cell),
    names without a suffix: the gains over the ``G*H`` projections and, with
    ``cell_norm``, the cell state's gain and shift."""
    rows = gates * hidden_size
    shapes: Shapes = {"ln_ih_weight": (rows,), "ln_hh_weight": (rows,)}
    if cell_norm:
        shapes |= {"ln_c_weight": (hidden_size,), "ln_c_bias": (hidden_size,)}
    return shapes
