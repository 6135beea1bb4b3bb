"""The recurrences rnnkit knows: one torch-free table that every part reads.

Two levels, because torch has two:

* a :class:`Cell` is what ``--cell`` and ``explain(cell=...)`` name
  (``'rnn'``, ``'lstm'``, ``'gru'``): one pair of ``torch.nn`` classes
  (``RNN`` and ``RNNCell``), their constructor arguments, gates, state parts
  and equations;
* a :class:`Kind` is what the kernels run, under its key (``'rnn_tanh'``,
  ``'rnn_relu'``, ``'lstm'``, ``'gru'``) and torch's ``mode`` for it
  (``'RNN_TANH'``, ...). A cell has one kind, or one per ``nonlinearity``
  when it takes that argument (an Elman cell fixes its activation).

A new recurrence with a ``torch.nn`` twin adds one :class:`Cell` entry here,
its step function in :mod:`rnnkit.kernels.reference` (named by
:attr:`Kind.step`), its layer module ``rnnkit/layers/<name>.py`` holding the
classes :attr:`Cell.layer` and :attr:`Cell.cell_class`, and, optionally, its
fused layer (:attr:`Kind.fused`), and, if it likes, a ``gates.<name>`` legend
of its gate letters in :mod:`rnnkit.explain.wording`. Layers, kernels,
``explain``, ``bench``, ``train`` and the tests read the rest from here.

>>> CELLS["rnn"].kind("relu").key, KINDS["lstm"].mode, cell_of("gru").gates
('rnn_relu', 'LSTM', ('r', 'z', 'n'))
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One recurrence as the kernels run it."""

    key: str                          # the kernels' key: 'rnn_tanh', 'lstm', ...
    mode: str                         # torch's name for it: 'RNN_TANH', 'LSTM', ...
    step: str                         # its step function in rnnkit.kernels.reference
    fused: str | None = None          # the rnnkit.kernels module with its fused run_layer
    nonlinearity: str | None = None   # the activation it fixes, for a cell that takes one


@dataclass(frozen=True)
class Cell:
    """One ``torch.nn`` layer and cell pair and the kinds behind it.

    ``equations`` are one step of the recurrence as torch documents it, with
    every bias term written as `` + b_..`` (``explain`` drops them for
    ``bias=False``), ``{nonlinearity}`` where the activation is chosen, and
    ``h_t = ...`` last (``W_hr (...)`` wraps it when a projection is set).
    ``layer_norm_equations`` are the same step with ``layer_norm=True``:
    ``LN_ih`` and ``LN_hh`` normalise the whole ``G*H`` projections (a gain, no
    shift), ``LN_c`` (when ``cell_norm``) the cell state (a gain and a shift).
    """

    name: str                         # --cell: 'rnn', 'lstm', 'gru'
    layer: str                        # the sequence layer's class: 'RNN'; the cell's adds 'Cell'
    gates: tuple[str, ...]            # the blocks of hidden_size rows of weight_ih / weight_hh
    state: tuple[str, ...]            # the parts of the state: ('h',) or ('h', 'c')
    layer_arguments: tuple[str, ...]  # the layer's constructor, torch's order (device, dtype aside)
    cell_arguments: tuple[str, ...]   # the cell's constructor, likewise
    equations: tuple[str, ...]
    kinds: tuple[Kind, ...]           # the first is the default
    onnx_operator: str                # ONNX's operator for the layer: 'RNN', 'LSTM', 'GRU'
    onnx_gates: tuple[str, ...]       # ``gates`` in the order ONNX stacks them
    layer_norm_equations: tuple[str, ...] = ()  # one step with layer_norm=True, written as ``equations``
    cell_norm: bool = False           # layer_norm=True also normalises the cell state (LN_c)

    @property
    def cell_class(self) -> str:
        """The single-step class: ``'RNNCell'``, ..."""
        return self.layer + "Cell"

    @property
    def module(self) -> str:
        """The module that defines both classes."""
        return f"rnnkit.layers.{self.name}"

    def kind(self, nonlinearity: str | None = None) -> Kind:
        """The kind this cell runs, given its ``nonlinearity`` argument if it takes one
        (``None``: the default, the first kind)."""
        if nonlinearity is None:
            return self.kinds[0]
        for kind in self.kinds:
            if kind.nonlinearity == nonlinearity:
                return kind
        choices = [k.nonlinearity for k in self.kinds if k.nonlinearity]
        raise ValueError(
            f"{self.layer} takes no nonlinearity {nonlinearity!r}; expected one of {choices}"
            if choices else f"{self.layer} takes no nonlinearity argument, got {nonlinearity!r}"
        )


LAYER_EXTENSIONS = ("layer_norm", "recurrent_dropout", "zoneout")
"""The sequence layers' keyword-only options beyond torch.nn, in their constructor's order."""

CELL_EXTENSIONS = ("layer_norm",)
"""The cells' keyword-only options beyond torch.nn."""

RECURRENT_DROPOUT_EQUATION = "W_hh h_(t-1) → W_hh (m ⊙ h_(t-1)),  m ~ Bernoulli(1 - p) / (1 - p)"
"""What ``recurrent_dropout=p`` changes in a step (training mode; one ``m`` per sequence and call)."""

ZONEOUT_EQUATION = "h_t = m_t ⊙ h_(t-1) + (1 - m_t) ⊙ h~_t,  m_t ~ Bernoulli(p)"
"""What ``zoneout=p`` adds after a step, ``h~_t`` the cell's new ``h`` (training; eval: ``m_t = p``)."""

_SEQUENCE = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")
_CELL = ("input_size", "hidden_size", "bias")

CELLS: dict[str, Cell] = {
    cell.name: cell
    for cell in (
        Cell(
            name="rnn",
            layer="RNN",
            gates=("h",),  # an Elman cell's one block is the new state itself
            state=("h",),
            layer_arguments=(*_SEQUENCE[:3], "nonlinearity", *_SEQUENCE[3:]),
            cell_arguments=(*_CELL, "nonlinearity"),
            equations=("h_t = {nonlinearity}(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)",),
            layer_norm_equations=(
                "h_t = {nonlinearity}(LN_ih(W_ih x_t) + b_ih + LN_hh(W_hh h_(t-1)) + b_hh)",
            ),
            kinds=(
                Kind("rnn_tanh", "RNN_TANH", step="rnn_tanh_step", fused="fused_rnn", nonlinearity="tanh"),
                Kind("rnn_relu", "RNN_RELU", step="rnn_relu_step", fused="fused_rnn", nonlinearity="relu"),
            ),
            onnx_operator="RNN",
            onnx_gates=("h",),
        ),
        Cell(
            name="lstm",
            layer="LSTM",
            gates=("i", "f", "g", "o"),
            state=("h", "c"),
            layer_arguments=(*_SEQUENCE, "proj_size"),
            cell_arguments=_CELL,
            equations=(
                "i_t = σ(W_ii x_t + b_ii + W_hi h_(t-1) + b_hi)",
                "f_t = σ(W_if x_t + b_if + W_hf h_(t-1) + b_hf)",
                "g_t = tanh(W_ig x_t + b_ig + W_hg h_(t-1) + b_hg)",
                "o_t = σ(W_io x_t + b_io + W_ho h_(t-1) + b_ho)",
                "c_t = f_t ⊙ c_(t-1) + i_t ⊙ g_t",
                "h_t = o_t ⊙ tanh(c_t)",
            ),
            kinds=(Kind("lstm", "LSTM", step="lstm_step", fused="fused_lstm"),),
            onnx_operator="LSTM",
            onnx_gates=("i", "o", "f", "g"),  # ONNX's i, o, f, c
            layer_norm_equations=(
                "(i_t, f_t, g_t, o_t) = LN_ih(W_ih x_t) + b_ih + LN_hh(W_hh h_(t-1)) + b_hh",
                "c_t = σ(f_t) ⊙ c_(t-1) + σ(i_t) ⊙ tanh(g_t)",
                "h_t = σ(o_t) ⊙ tanh(LN_c(c_t))",
            ),
            cell_norm=True,
        ),
        Cell(
            name="gru",
            layer="GRU",
            gates=("r", "z", "n"),
            state=("h",),
            layer_arguments=_SEQUENCE,
            cell_arguments=_CELL,
            equations=(
                "r_t = σ(W_ir x_t + b_ir + W_hr h_(t-1) + b_hr)",
                "z_t = σ(W_iz x_t + b_iz + W_hz h_(t-1) + b_hz)",
                "n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_(t-1) + b_hn))",
                "h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_(t-1)",
            ),
            kinds=(Kind("gru", "GRU", step="gru_step", fused="fused_gru"),),
            onnx_operator="GRU",
            onnx_gates=("z", "r", "n"),  # ONNX's z, r, h
            layer_norm_equations=(
                "(a_r, a_z, a_n) = LN_ih(W_ih x_t) + b_ih",
                "(b_r, b_z, b_n) = LN_hh(W_hh h_(t-1)) + b_hh",
                "r_t = σ(a_r + b_r)",
                "z_t = σ(a_z + b_z)",
                "n_t = tanh(a_n + r_t ⊙ b_n)",
                "h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_(t-1)",
            ),
        ),
    )
}
"""Every cell, by its ``--cell`` name."""

KINDS: dict[str, Kind] = {kind.key: kind for cell in CELLS.values() for kind in cell.kinds}
"""Every kind, by its kernel key."""

_CELL_OF = {kind.key: cell for cell in CELLS.values() for kind in cell.kinds}

CLASSES: dict[str, tuple[Cell, bool]] = {
    name: (cell, single)
    for cell in CELLS.values()
    for name, single in ((cell.layer, False), (cell.cell_class, True))
}
"""Every ``torch.nn`` class name rnnkit mirrors -> ``(its cell, whether it is the single-step class)``."""


def cell_of(kind: str) -> Cell:
    """The cell a kernel key belongs to: ``cell_of('rnn_relu').name == 'rnn'``."""
    try:
        return _CELL_OF[kind]
    except KeyError:
        raise ValueError(f"unknown cell kind {kind!r}; expected one of {', '.join(KINDS)}") from None

