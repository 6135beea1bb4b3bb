"""Every bad argument or input gets torch.nn's exception type and a message that
names what was expected and what was given."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.kinds import CELLS
from equivalence import layer_options

CELL_CLASSES = [cell.cell_class for cell in CELLS.values()]

BAD_CONSTRUCTIONS = [
    (dict(input_size=5, hidden_size=0), ValueError, "hidden_size must be greater than zero, got 0"),
    (dict(input_size=0, hidden_size=8), ValueError, "input_size must be greater than zero, got 0"),
    (dict(input_size=5, hidden_size=8, num_layers=0), ValueError, "num_layers must be greater than zero"),
    (dict(input_size=5, hidden_size=8.0), TypeError, "hidden_size should be of type int, got: float"),
    (dict(input_size=5, hidden_size=8, num_layers=1.5), TypeError, "num_layers should be of type int"),
    (dict(input_size=5, hidden_size=8, num_layers=2, dropout=-0.1), ValueError, r"range \[0, 1\].*got -0.1"),
    (dict(input_size=5, hidden_size=8, num_layers=2, dropout=1.5), ValueError, r"got 1.5"),
    (dict(input_size=5, hidden_size=8, num_layers=2, dropout="a"), ValueError, "got 'a'"),
    (dict(input_size=5, hidden_size=8, num_layers=2, dropout=True), ValueError, "got True"),
    (dict(input_size=5, hidden_size=8, nonlinearity="gelu"), ValueError, "Unknown nonlinearity 'gelu'"),
    (dict(input_size=5, hidden_size=8, bias=1), TypeError, "bias should be of type bool, got: int"),
    (dict(input_size=5, hidden_size=8, batch_first="yes"), TypeError, "batch_first should be of type bool"),
    (dict(input_size=5, hidden_size=8, bidirectional=1), TypeError, "bidirectional should be of type bool"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_CONSTRUCTIONS)
def test_bad_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        rnnkit.RNN(**kwargs)


@pytest.mark.parametrize("kwargs, error, message", BAD_CONSTRUCTIONS)
def test_bad_construction_raises_what_torch_raises(kwargs, error, message):
    """torch raises the same exception type: at construction, or for a
    non-bool ``bidirectional``, which it stores unchecked, at the first forward
    (rnnkit says so at once)."""
    with pytest.raises(error) as theirs, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's dropout warning comes before some of its errors
        layer = nn.RNN(**kwargs)
        layer(torch.randn(3, 2, kwargs["input_size"]))
    assert theirs.type is error


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(input_size=5, hidden_size=-1), ValueError, "hidden_size must be zero or greater, got -1"),
        (dict(input_size=-2, hidden_size=8), ValueError, "input_size must be zero or greater, got -2"),
        (dict(input_size=5, hidden_size=8.0), TypeError, "hidden_size should be of type int, got: float"),
        (dict(input_size=5, hidden_size=8, nonlinearity="sigmoid"), ValueError, "Unknown nonlinearity"),
    ],
)
def test_bad_cell_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        rnnkit.RNNCell(**kwargs)


@pytest.mark.parametrize("name", CELL_CLASSES)
@pytest.mark.parametrize(
    "kwargs",
    [dict(input_size=0, hidden_size=8), dict(input_size=5, hidden_size=0), dict(input_size=5, hidden_size=8, bias=1),
     dict(input_size=5, hidden_size=8, bias=0)],
    ids=["no input features", "no hidden features", "bias=1", "bias=0"],
)
def test_cells_accept_what_torch_cells_accept(name, kwargs):
    torch.manual_seed(0)
    ours = getattr(rnnkit, name)(**kwargs)
    torch.manual_seed(0)
    theirs = getattr(nn, name)(**kwargs)
    assert repr(ours) == repr(theirs)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    x = torch.randn(3, kwargs["input_size"])
    for got, expected in zip(_states(ours(x)), _states(theirs(x))):
        torch.testing.assert_close(got, expected)


RNN = dict(input_size=5, hidden_size=8, num_layers=2)
BAD_INPUTS = [
    ("4-D input", RNN, lambda: (torch.randn(3, 2, 5, 1),), ValueError, r"Expected input to be 2D.*or 3D.*got 4D tensor of shape \[3, 2, 5, 1\]"),
    ("1-D input", RNN, lambda: (torch.randn(5),), ValueError, "got 1D"),
    ("feature size", RNN, lambda: (torch.randn(3, 2, 4),), RuntimeError, "must be equal to input_size. Expected 5, got 4"),
    ("hx layers", RNN, lambda: (torch.randn(3, 2, 5), torch.randn(1, 2, 8)), RuntimeError, r"Expected hx size \(2, 2, 8\), got \[1, 2, 8\]"),
    ("hx batch", RNN, lambda: (torch.randn(3, 2, 5), torch.randn(2, 3, 8)), RuntimeError, r"Expected hx size \(2, 2, 8\), got \[2, 3, 8\]"),
    ("hx hidden", RNN, lambda: (torch.randn(3, 2, 5), torch.randn(2, 2, 7)), RuntimeError, r"Expected hx size \(2, 2, 8\), got \[2, 2, 7\]"),
    ("2-D hx for batched input", RNN, lambda: (torch.randn(3, 2, 5), torch.randn(2, 8)), RuntimeError, r"Expected hx size \(2, 2, 8\), got \[2, 8\]"),
    ("3-D hx for unbatched input", RNN, lambda: (torch.randn(3, 5), torch.randn(2, 1, 8)), RuntimeError, r"Expected hx size \(2, 8\), got \[2, 1, 8\]"),
    ("bidirectional hx", dict(RNN, bidirectional=True), lambda: (torch.randn(3, 2, 5), torch.randn(2, 2, 8)), RuntimeError, r"Expected hx size \(4, 2, 8\)"),
    ("input dtype", RNN, lambda: (torch.randn(3, 2, 5, dtype=torch.float64),), ValueError, r"input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)"),
    ("integer input", RNN, lambda: (torch.ones(3, 2, 5, dtype=torch.long),), ValueError, "torch.int64"),
    ("hx dtype", RNN, lambda: (torch.randn(3, 2, 5), torch.randn(2, 2, 8, dtype=torch.float64)), ValueError, r"hx dtype \(torch.float64\) does not match input dtype \(torch.float32\)"),
    ("empty sequence", RNN, lambda: (torch.randn(0, 2, 5),), RuntimeError, "sequence length to be larger than 0"),
    ("not a tensor", RNN, lambda: ([[1.0] * 5],), TypeError, "input should be a Tensor or a PackedSequence, got list"),
    ("hx not a tensor", RNN, lambda: (torch.randn(3, 2, 5), [0.0]), TypeError, "hx should be a Tensor, got list"),
    ("packed hx batch", RNN, lambda: (pack_padded_sequence(torch.randn(4, 3, 5), torch.tensor([4, 2, 3]), enforce_sorted=False), torch.randn(2, 2, 8)), RuntimeError, r"Expected hx size \(2, 3, 8\), got \[2, 2, 8\]"),
    ("batch_first feature size", dict(RNN, batch_first=True), lambda: (torch.randn(2, 3, 6),), RuntimeError, "Expected 5, got 6"),
]


@pytest.mark.parametrize("name, config, inputs, error, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(name, config, inputs, error, message):
    layer = rnnkit.RNN(**config)
    with pytest.raises(error, match=message):
        layer(*inputs())


CELL = dict(input_size=5, hidden_size=8)
BAD_CELL_INPUTS = [
    ("3-D input", lambda: (torch.randn(2, 3, 5),), ValueError, r"Expected input to be 1D.*or 2D.*got 3D"),
    ("feature size", lambda: (torch.randn(3, 4),), RuntimeError, "inconsistent input_size: got 4, expected 5"),
    ("hx batch", lambda: (torch.randn(3, 5), torch.randn(2, 8)), RuntimeError, r"Expected hx size \(3, 8\), got \[2, 8\]"),
    ("hx hidden", lambda: (torch.randn(3, 5), torch.randn(3, 7)), RuntimeError, r"Expected hx size \(3, 8\), got \[3, 7\]"),
    ("2-D hx for 1-D input", lambda: (torch.randn(5), torch.randn(1, 8)), RuntimeError, r"Expected hx size \(8,\), got \[1, 8\]"),
    ("1-D hx for 2-D input", lambda: (torch.randn(3, 5), torch.randn(8)), RuntimeError, r"Expected hx size \(3, 8\), got \[8\]"),
    ("input dtype", lambda: (torch.randn(3, 5, dtype=torch.float64),), ValueError, "does not match weight dtype"),
    ("hx dtype", lambda: (torch.randn(3, 5), torch.randn(3, 8, dtype=torch.float64)), ValueError, "hx dtype"),
]


@pytest.mark.parametrize("name, inputs, error, message", BAD_CELL_INPUTS, ids=[c[0] for c in BAD_CELL_INPUTS])
def test_bad_cell_input(name, inputs, error, message):
    with pytest.raises(error, match=message):
        rnnkit.RNNCell(**CELL)(*inputs())


@pytest.mark.parametrize(
    "name, options",
    [(layer, options) for layer, variants in layer_options(proj_size=3).items() for options in variants],
)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_empty_batch_is_allowed_like_torch(backend, name, options, bidirectional):
    ours = getattr(rnnkit, name)(5, 8, 2, bidirectional=bidirectional, **options)
    theirs = getattr(nn, name)(5, 8, 2, bidirectional=bidirectional, **options)
    x = torch.randn(4, 0, 5, requires_grad=True)
    output, state = ours(x)
    expected_output, expected_state = theirs(x)
    assert output.shape == expected_output.shape
    assert _shapes(state) == _shapes(expected_state)
    output.sum().backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is not None and not p.grad.any() for p in ours.parameters())


@pytest.mark.parametrize("name", CELL_CLASSES)
def test_empty_batch_cell_is_allowed_like_torch(name):
    ours, theirs = getattr(rnnkit, name)(5, 8), getattr(nn, name)(5, 8)
    got, expected = ours(torch.randn(0, 5)), theirs(torch.randn(0, 5))
    assert _shapes(got) == _shapes(expected)


def _states(state):
    """A state as a tuple: one tensor, or LSTM's ``(h, c)``."""
    return state if isinstance(state, tuple) else (state,)


def _shapes(state):
    return [t.shape for t in _states(state)]


# -- LSTM and GRU ------------------------------------------------------------------------

LSTM = dict(input_size=5, hidden_size=8, num_layers=2)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(LSTM, proj_size=-1), ValueError, "proj_size should be a positive integer or zero.*got -1"),
        (dict(LSTM, proj_size=8), ValueError, "proj_size has to be smaller than hidden_size, got proj_size=8 and hidden_size=8"),
        (dict(LSTM, proj_size=2.0), TypeError, "proj_size should be of type int, got: float"),
        (dict(LSTM, dropout=2), ValueError, r"range \[0, 1\]"),
        (dict(LSTM, hidden_size=0), ValueError, "hidden_size must be greater than zero"),
    ],
)
def test_bad_lstm_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        rnnkit.LSTM(**kwargs)
    with pytest.raises(error):
        nn.LSTM(**kwargs)


BAD_LSTM_INPUTS = [
    ("hx not a tuple", dict(LSTM), lambda: (torch.randn(3, 2, 5), torch.randn(2, 2, 8)), TypeError, r"hx should be a tuple \(h, c\) of 2 tensors, got Tensor"),
    ("hx of one tensor", dict(LSTM), lambda: (torch.randn(3, 2, 5), (torch.randn(2, 2, 8),)), TypeError, "got tuple"),
    ("c_0 shape", dict(LSTM), lambda: (torch.randn(3, 2, 5), (torch.randn(2, 2, 8), torch.randn(2, 2, 7))), RuntimeError, r"Expected hx\[1\] \(c\) size \(2, 2, 8\), got \[2, 2, 7\]"),
    ("h_0 with projection", dict(LSTM, proj_size=3), lambda: (torch.randn(3, 2, 5), (torch.randn(2, 2, 8), torch.randn(2, 2, 8))), RuntimeError, r"Expected hx\[0\] \(h\) size \(2, 2, 3\), got \[2, 2, 8\]"),
    ("unbatched c_0", dict(LSTM), lambda: (torch.randn(3, 5), (torch.randn(2, 8), torch.randn(2, 1, 8))), RuntimeError, r"Expected hx\[1\] \(c\) size \(2, 8\), got \[2, 1, 8\]"),
    ("feature size", dict(LSTM), lambda: (torch.randn(3, 2, 4),), RuntimeError, "Expected 5, got 4"),
]


@pytest.mark.parametrize("name, config, inputs, error, message", BAD_LSTM_INPUTS, ids=[c[0] for c in BAD_LSTM_INPUTS])
def test_bad_lstm_input(name, config, inputs, error, message):
    with pytest.raises(error, match=message):
        rnnkit.LSTM(**config)(*inputs())


@pytest.mark.parametrize("class_name", ["LSTM", "GRU"])
def test_gated_layers_check_inputs_like_rnn(class_name):
    layer = getattr(rnnkit, class_name)(5, 8, 2)
    with pytest.raises(ValueError, match=f"{class_name}: Expected input to be 2D"):
        layer(torch.randn(3, 2, 5, 1))
    with pytest.raises(ValueError, match="does not match weight dtype"):
        layer(torch.randn(3, 2, 5, dtype=torch.float64))


def test_gru_has_no_projection():
    with pytest.raises(TypeError, match="proj_size"):
        rnnkit.GRU(5, 8, proj_size=2)


@pytest.mark.parametrize(
    "inputs, error, message",
    [
        (lambda: (torch.randn(3, 5), torch.randn(3, 8)), TypeError, r"hx should be a tuple \(h, c\)"),
        (lambda: (torch.randn(3, 5), (torch.randn(3, 8), torch.randn(2, 8))), RuntimeError, r"Expected hx\[1\] \(c\) size \(3, 8\), got \[2, 8\]"),
        (lambda: (torch.randn(2, 3, 5),), ValueError, "LSTMCell: Expected input to be 1D"),
    ],
)
def test_bad_lstm_cell_input(inputs, error, message):
    with pytest.raises(error, match=message):
        rnnkit.LSTMCell(5, 8)(*inputs())
