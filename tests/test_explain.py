"""``rnnkit.explain`` and ``rnnkit explain`` against torch.nn, the ground truth.

Every shape and count the explanation gives is compared with a real
``torch.nn`` layer: its named parameters, and the output and final state of a
forward pass on zeros whose initial state has the explained shape (torch
checks it). Every problem reported is one that torch also rejects.
"""

from __future__ import annotations

import io
import itertools
import json
import string

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

import rnnkit
from rnnkit.cli.explain import parse_shape
from rnnkit.cli.main import main
from rnnkit.explain import explain
from rnnkit.explain.result import width
from rnnkit.explain.wording import TEXT
from rnnkit.kinds import CELLS, CLASSES

L, N, H_IN, H, PROJ = 3, 2, 5, 8, 3

TORCH = {(cell.name, single): getattr(nn, name) for name, (cell, single) in CLASSES.items()}
"""The torch.nn class of each ``(cell, cell_only)``."""


def _case(cell: str, cell_only: bool, input_shape, **arguments):
    arguments = dict(input_size=H_IN, hidden_size=H) | arguments
    name = "-".join([cell + ("cell" if cell_only else "")]
                    + [f"{k}={v}" for k, v in arguments.items() if k not in ("input_size", "hidden_size")]
                    + ["x".join(map(str, input_shape))])
    return pytest.param(cell, cell_only, arguments, input_shape, id=name)


def _layer_cases():
    for cell, num_layers, bidirectional, bias, batch_first, batched in itertools.product(
        CELLS, (1, 2), (False, True), (True, False), (False, True), (True, False)
    ):
        if batched:
            input_shape = (N, L, H_IN) if batch_first else (L, N, H_IN)
        else:
            input_shape = (L, H_IN)
        for proj_size in (0, PROJ) if "proj_size" in CELLS[cell].layer_arguments else (0,):
            extra = {"proj_size": proj_size} if proj_size else {}
            yield _case(cell, False, input_shape, num_layers=num_layers, bias=bias,
                        batch_first=batch_first, bidirectional=bidirectional, **extra)
    yield _case("rnn", False, (L, N, H_IN), num_layers=3, nonlinearity="relu")


def _cell_cases():
    for cell, bias, input_shape in itertools.product(
        CELLS, (True, False), ((N, H_IN), (H_IN,))
    ):
        yield _case(cell, True, input_shape, bias=bias)
    yield _case("rnn", True, (N, H_IN), nonlinearity="relu")


CASES = list(_layer_cases()) + list(_cell_cases())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The forwards here are tiny: extra threads only add start-up cost, and
    stall badly when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _torch_run(module: nn.Module, cell: str, cell_only: bool, shapes: dict) -> dict:
    """The shapes of what ``module`` returns, by explained name, after a forward
    pass on zeros with an initial state of the explained shape."""
    parts = CELLS[cell].state
    hx = tuple(torch.zeros(shapes[f"{p}_0"]) for p in parts)
    with torch.no_grad():
        result = module(torch.zeros(shapes["input"]), hx if len(parts) > 1 else hx[0])
    final, state = ("1", result) if cell_only else ("n", result[1])
    returned = {} if cell_only else {"output": result[0]}
    returned |= dict(zip((f"{p}_{final}" for p in parts), state if len(parts) > 1 else (state,)))
    return {name: tuple(t.shape) for name, t in returned.items()}


@pytest.mark.parametrize("cell, cell_only, arguments, input_shape", CASES)
def test_shapes_and_parameters_match_torch(cell, cell_only, arguments, input_shape):
    e = explain(**arguments, cell=cell, cell_only=cell_only, input_shape=input_shape)
    assert e.ok, e.problems
    module = TORCH[cell, cell_only](**arguments)

    assert [(p.name, p.shape) for p in e.parameters] == [
        (name, tuple(p.shape)) for name, p in module.named_parameters()
    ]
    assert [p.numel for p in e.parameters] == [p.numel() for p in module.parameters()]
    assert e.num_parameters == sum(p.numel() for p in module.parameters())

    assert e.shapes["input"] == input_shape
    returned = _torch_run(module, cell, cell_only, e.shapes)
    states_in = {f"{p}_0" for p in CELLS[cell].state}
    assert set(e.shapes) == {"input"} | states_in | set(returned)
    assert {name: e.shapes[name] for name in returned} == returned
    for tensor in e.tensors:
        assert len(tensor.axes) == len(tensor.sizes) and tensor.meaning


@pytest.mark.parametrize("cell, cell_only, arguments, input_shape", CASES)
def test_without_an_input_shape_the_sizes_it_would_settle_stay_symbolic(
    cell, cell_only, arguments, input_shape
):
    symbolic = explain(**arguments, cell=cell, cell_only=cell_only)
    concrete = explain(**arguments, cell=cell, cell_only=cell_only, input_shape=input_shape)
    if len(input_shape) == len(symbolic.shapes["input"]):  # batched: fill in L and N
        sizes = {"L": L, "N": N}
        filled = {k: tuple(sizes.get(s, s) for s in v) for k, v in symbolic.shapes.items()}
        assert filled == concrete.shapes
    assert symbolic.parameters == concrete.parameters


def test_the_seed_example():
    """RNN(5, 8, 2) on a (3, 2, 5) input with h0 (2, 2, 8), as in the seed note."""
    e = rnnkit.explain(5, 8, 2, input_shape=(3, 2, 5))
    assert e.shapes == {"input": (3, 2, 5), "h_0": (2, 2, 8), "output": (3, 2, 8), "h_n": (2, 2, 8)}
    assert e.num_parameters == 8 * 5 + 8 * 8 + 8 + 8 + 8 * 8 + 8 * 8 + 8 + 8 == 264
    assert [a for a, _, _ in e.arguments] == [
        "input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first",
        "dropout", "bidirectional",
    ]
    text = str(e)
    for expected in ("input_size=5", "(L, N, H_in)", "(D*num_layers, N, H_out)", "weight_hh_l1",
                     "h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)", "264"):
        assert expected in text


def test_symbolic_shapes():
    assert explain(5, 8, 2).shapes == {
        "input": ("L", "N", 5), "h_0": (2, "N", 8), "output": ("L", "N", 8), "h_n": (2, "N", 8),
    }
    e = explain(5, 8, cell="lstm", proj_size=3, bidirectional=True, batch_first=True)
    assert e.shapes == {
        "input": ("N", "L", 5), "h_0": (2, "N", 3), "c_0": (2, "N", 8),
        "output": ("N", "L", 6), "h_n": (2, "N", 3), "c_n": (2, "N", 8),
    }
    assert explain(5, 8, cell="gru", cell_only=True).shapes == {
        "input": ("N", 5), "h_0": ("N", 8), "h_1": ("N", 8),
    }


@pytest.mark.parametrize("module", [
    nn.RNN(5, 8, 2, nonlinearity="relu", batch_first=True),
    nn.LSTM(5, 8, proj_size=3, bidirectional=True),
    nn.GRUCell(5, 8, bias=False),
    rnnkit.RNN(5, 8, 2),
    rnnkit.LSTMCell(5, 8),
    rnnkit.GRU(5, 8, bidirectional=True),
], ids=lambda m: f"{type(m).__module__.split('.')[0]}.{type(m).__name__}")
def test_a_module_explains_itself(module):
    e = explain(module)
    assert e.ok
    assert [(p.name, p.shape) for p in e.parameters] == [
        (name, tuple(p.shape)) for name, p in module.named_parameters()
    ]
    assert e.config.class_name == type(module).__name__
    for name, value in e.config.arguments().items():
        assert value == getattr(module, name)


def test_a_module_and_arguments_together_or_neither_are_refused():
    with pytest.raises(TypeError, match="not both"):
        explain(nn.RNN(5, 8), 16)
    with pytest.raises(TypeError, match="not both"):
        explain(nn.RNN(5, 8), num_layers=2)
    with pytest.raises(TypeError, match="got int"):
        explain(5)
    with pytest.raises(TypeError, match="got Linear"):
        explain(nn.Linear(5, 8))
    with pytest.raises(ValueError, match="cell"):
        explain(5, 8, cell="transformer")
    with pytest.raises(ValueError, match="lang"):
        explain(5, 8, lang="fr")


# (explain's keyword arguments, input shape, argument at fault, part of the English message)
PROBLEMS = [
    ({}, (3, 2, 4), "input_shape",
     "input_shape[-1] is 4 but input_size is 5: the last axis holds the features of each step"),
    ({}, (2, 3, 2, 5), "input_shape",
     "has 4 axes, but RNN takes 3 axes (L, N, H_in), or 2 (L, H_in) without a batch"),
    ({"batch_first": True}, (5,), "input_shape", "takes 3 axes (N, L, H_in)"),
    ({"cell": "gru", "cell_only": True}, (3, 2, 5), "input_shape",
     "GRUCell takes 2 axes (N, H_in), or 1 (H_in,) without a batch"),
    ({"cell": "lstm", "cell_only": True}, (2, 4), "input_shape", "input_shape[-1] is 4"),
    ({}, (0, 2, 5), "input_shape", "L = input_shape[0] is 0"),
    ({"batch_first": True}, (2, 0, 5), "input_shape", "L = input_shape[1] is 0"),
    ({}, (3, -2, 5), "input_shape", "negative size"),
    ({}, "3,2,5", "input_shape", "must be a sequence of integers such as (3, 2, 5), got '3,2,5'"),
    ({"hidden_size": 0}, None, "hidden_size", "hidden_size is 0, but it must be at least 1"),
    ({"input_size": 0}, None, "input_size", "input_size is 0, but it must be at least 1"),
    ({"num_layers": 0}, None, "num_layers", "num_layers is 0"),
    ({"hidden_size": 2.5}, None, "hidden_size", "hidden_size must be a Python int, got 2.5"),
    # NumPy scalars: the layers' own checks (and torch.nn's) refuse them
    ({"hidden_size": np.int64(8)}, None, "hidden_size", "hidden_size must be a Python int, got"),
    ({"bias": np.bool_(True)}, None, "bias", "bias must be True or False, got"),
    ({"dropout": 2}, None, "dropout", "dropout is 2, but it must be a probability between 0 and 1"),
    ({"dropout": -0.1}, None, "dropout", "dropout is -0.1"),
    ({"nonlinearity": "sigmoid"}, None, "nonlinearity", "must be 'tanh' or 'relu'"),
    ({"bias": "yes"}, None, "bias", "bias must be True or False, got 'yes'"),
    ({"cell": "lstm", "proj_size": 8}, None, "proj_size", "smaller than hidden_size = 8"),
    ({"cell": "lstm", "proj_size": -1}, None, "proj_size", "proj_size is -1"),
    ({"cell": "gru", "proj_size": 2}, None, "proj_size",
     "proj_size=2 is not an argument of GRU: only LSTM projects its hidden state"),
    ({"cell": "lstm", "nonlinearity": "relu"}, None, "nonlinearity",
     "nonlinearity='relu' is not an argument of LSTM"),
    ({"cell": "lstm", "cell_only": True, "proj_size": 2}, None, "proj_size",
     "not an argument of LSTMCell"),
    ({"cell_only": True, "num_layers": 2}, None, "num_layers",
     "num_layers=2 is not an argument of RNNCell: a cell computes one step"),
    ({"cell_only": True, "bidirectional": True}, None, "bidirectional", "not an argument"),
]


def _split(arguments: dict) -> tuple[dict, tuple[str, bool]]:
    arguments = dict(input_size=5, hidden_size=8) | arguments
    kind = (arguments.pop("cell", "rnn"), arguments.pop("cell_only", False))
    return arguments, kind


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("arguments, input_shape, subject, message", PROBLEMS)
def test_what_torch_rejects_is_explained(arguments, input_shape, subject, message, lang):
    layer_arguments, (cell, cell_only) = _split(arguments)
    e = explain(**layer_arguments, cell=cell, cell_only=cell_only, input_shape=input_shape, lang=lang)
    assert not e.ok
    assert [p.subject for p in e.problems] == [subject]
    if lang == "en":
        assert message in e.problems[0].message
    text = str(e)
    assert e.problems[0].message in text
    if subject == "input_shape":  # the layer is fine: say what it expects
        assert e.parameters and all(isinstance(s, str) for s in e.shapes["input"][:-1])
    else:
        assert not e.parameters and not e.tensors and not e.equations


@pytest.mark.parametrize("arguments, input_shape, subject, message", PROBLEMS)
def test_torch_rejects_what_is_explained(arguments, input_shape, subject, message):
    layer_arguments, kind = _split(arguments)
    if input_shape is None:
        with pytest.raises((TypeError, ValueError)):
            TORCH[kind](**layer_arguments)
    elif isinstance(input_shape, tuple) and min(input_shape) >= 0:
        module = TORCH[kind](**layer_arguments)
        with pytest.raises((ValueError, RuntimeError)):
            module(torch.zeros(input_shape))


def test_dropout_between_layers_and_without_layers_to_be_between():
    e = explain(5, 8, num_layers=3, dropout=0.25)
    assert e.ok
    assert any("dropout=0.25" in n and "training mode only" in n and "(2 of 3)" in n for n in e.notes)
    alone = explain(5, 8, dropout=0.5)
    assert alone.ok  # torch builds it, with a warning, which the note repeats
    assert any("no effect with num_layers=1" in n for n in alone.notes)
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        nn.RNN(5, 8, dropout=0.5)


def test_notes_follow_the_options():
    def notes(**kwargs) -> str:
        return "\n".join(explain(5, 8, **kwargs).notes)

    assert "D = 2" in notes(bidirectional=True) and "8 + 8 = 16" in notes(bidirectional=True)
    assert "h_0, h_n stay (D*num_layers, N, ...)" in notes(batch_first=True)
    assert "(h_0, c_0)" in notes(cell="lstm")
    assert "from 8 to 3 features" in notes(cell="lstm", proj_size=3)
    assert "no shape has the N axis" in notes(input_shape=(3, 5))
    assert "single step" in notes(cell_only=True)
    assert notes() == ""


def test_equations_follow_the_cell_and_bias():
    assert explain(5, 8, nonlinearity="relu").equations[0].startswith("h_t = relu(")
    lstm = explain(5, 8, cell="lstm", proj_size=3).equations
    assert "c_t = f_t ⊙ c_(t-1) + i_t ⊙ g_t" in lstm and "h_t = W_hr (o_t ⊙ tanh(c_t))" in lstm
    gru = explain(5, 8, cell="gru", bias=False).equations
    assert "n_t = tanh(W_in x_t + r_t ⊙ (W_hn h_(t-1)))" in gru
    assert not any("b_" in line for line in gru[:4])


def test_chinese():
    e = explain(5, 8, 2, input_shape=(3, 2, 5), lang="zh")
    text = str(e)
    for word in ("引數", "隱藏狀態", "序列長度", "批量大小", "特徵", "可訓練參數", "參數總數",
                 "遞迴式", "省略時為全零", "輸入序列"):
        assert word in text, word
    assert "hidden state" not in text and "the input sequence" not in text
    assert e.shapes == explain(5, 8, 2, input_shape=(3, 2, 5)).shapes
    assert "遺忘門" in str(explain(5, 8, cell="lstm", lang="zh"))
    assert "重置門" in str(explain(5, 8, cell="gru", lang="zh"))
    bad = explain(5, 8, input_shape=(3, 2, 4), lang="zh")
    assert "input_shape[-1] 是 4，但 input_size 是 5" in bad.problems[0].message


def test_both_languages_say_the_same_things():
    def placeholders(value) -> object:
        if isinstance(value, dict):
            return {k: placeholders(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return len(value)
        return sorted(name for _, name, _, _ in string.Formatter().parse(value) if name)

    assert placeholders(TEXT["zh"]) == placeholders(TEXT["en"])


def test_plain_text_columns_line_up_with_wide_characters():
    lines = str(explain(5, 8, lang="zh", input_shape=(3, 2, 5))).splitlines()
    first = next(line for line in lines if line.lstrip().startswith("weight_ih_l0"))
    total = next(line for line in lines if line.lstrip().startswith("參數總數"))
    # the numel column is right-aligned: 40 and the total end in the same column
    assert width(first[: first.index(" 40 ") + 3]) == width(total.rstrip())


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_rich_rendering(lang):
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(explain(5, 8, 2, cell="lstm", input_shape=(3, 2, 4), lang=lang))
    out = console.file.getvalue()
    assert "weight_hr_l0" not in out and "weight_hh_l1" in out and "input_shape[-1]" in out


def test_to_dict_is_json():
    data = json.loads(json.dumps(explain(5, 8, cell="lstm", proj_size=3).to_dict()))
    assert data["layer"] == "LSTM" and data["arguments"]["proj_size"] == 3
    assert data["shapes"]["h_0"]["shape"] == [1, "N", 3]
    assert data["num_parameters"] == sum(p.numel() for p in nn.LSTM(5, 8, proj_size=3).parameters())


# -- the command line ------------------------------------------------------------------

SEED = ["explain", "--input-size", "5", "--hidden-size", "8", "--num-layers", "2",
        "--input-shape", "3,2,5"]


def test_cli_the_seed_example(capsys):
    assert main(SEED) == 0
    out = capsys.readouterr().out
    assert str(explain(5, 8, 2, input_shape=(3, 2, 5))) + "\n" == out


def test_cli_in_chinese(capsys):
    assert main([*SEED, "--lang", "zh"]) == 0
    assert "隱藏狀態" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    (["--cell", "lstm", "--proj-size", "3", "--bidirectional", "--batch-first"],
     nn.LSTM(5, 8, proj_size=3, bidirectional=True, batch_first=True)),
    (["--cell", "gru", "--no-bias", "--num-layers", "3"], nn.GRU(5, 8, num_layers=3, bias=False)),
    (["--nonlinearity", "relu", "--dropout", "0.5", "--num-layers", "2"],
     nn.RNN(5, 8, 2, nonlinearity="relu", dropout=0.5)),
    (["--cell", "lstm", "--cell-only"], nn.LSTMCell(5, 8)),
], ids=["lstm", "gru", "rnn", "lstmcell"])
def test_cli_json_matches_torch(capsys, argv, expected):
    assert main(["explain", "--input-size", "5", "--hidden-size", "8", *argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layer"] == type(expected).__name__
    assert [(p["name"], tuple(p["shape"])) for p in data["parameters"]] == [
        (name, tuple(p.shape)) for name, p in expected.named_parameters()
    ]
    assert data["num_parameters"] == sum(p.numel() for p in expected.parameters())


@pytest.mark.parametrize("argv, message", [
    (["--input-shape", "3,2,4"], "input_shape[-1] is 4 but input_size is 5"),
    (["--input-shape", "3,2,5", "--dropout", "2"], "dropout is 2.0"),
    (["--hidden-size", "0"], "hidden_size is 0"),
    (["--cell", "gru", "--proj-size", "2"], "not an argument of GRU"),
    (["--cell-only", "--input-shape", "3,2,5"], "RNNCell takes 2 axes"),
])
def test_cli_explains_a_misfit_and_exits_1(capsys, argv, message):
    assert main(["explain", "--input-size", "5", "--hidden-size", "8", *argv]) == 1
    captured = capsys.readouterr()
    assert message in captured.out and "Arguments" in captured.out
    # the verdict comes first: right under the title, before the arguments; and on stderr
    lines = captured.out.splitlines()
    assert lines[2] == "Problems" and message in lines[3]
    assert captured.out.index(message) < captured.out.index("Arguments")
    assert captured.err.startswith("rnnkit explain: ") and message in captured.err


@pytest.mark.parametrize("lang, heading", [("en", "Problems"), ("zh", "問題")])
def test_problems_come_first_in_every_rendering(lang, heading):
    e = explain(5, 8, input_shape=(3, 2, 4), lang=lang)
    first = str(e).splitlines()[2:4]
    assert first == [heading, f"  - {e.problems[0]}"]
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(e)
    assert console.file.getvalue().splitlines()[2].strip() == heading


def test_cli_json_with_a_problem_exits_1(capsys):
    assert main([*SEED[:-1], "3,2,4", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["problems"][0]["subject"] == "input_shape"


def test_cli_unreadable_shape_is_a_one_line_error(capsys):
    assert main([*SEED[:-1], "3,x,5"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("rnnkit explain: error: --input-shape expects integers")


@pytest.mark.parametrize("text, shape", [
    ("3,2,5", (3, 2, 5)), ("(3, 2, 5)", (3, 2, 5)), ("[2,5]", (2, 5)), ("5", (5,)), ("5,", (5,)),
])
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


def test_cli_help_teaches(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["explain", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for expected in ("--input-shape", "--no-bias", "--cell {rnn,lstm,gru}", "--cell-only",
                     "--lang {en,zh}", "--json", "examples:", "features in the hidden state"):
        assert expected in out, expected
    assert "zh (Chinese (Traditional))" in " ".join(out.split())  # the script the text is in


# -- the forward's keywords: lengths= and return_states=True ----------------------------------


@pytest.mark.parametrize("input_shape, batch_first", [((L, N, H_IN), False), ((N, L, H_IN), True), ((L, H_IN), False)],
                         ids=["time-first", "batch-first", "unbatched"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_states_and_lengths_shapes_match_what_the_layer_returns(cell, input_shape, batch_first):
    batched = len(input_shape) == 3
    arguments = dict(input_size=H_IN, hidden_size=H, num_layers=2, bidirectional=True, batch_first=batch_first)
    if "proj_size" in CELLS[cell].layer_arguments:
        arguments["proj_size"] = PROJ
    lengths = [L, 1] if batched else None
    e = explain(**arguments, cell=cell, input_shape=input_shape, lengths=lengths, return_states=True)
    assert e.ok, e.problems
    layer = getattr(rnnkit, CELLS[cell].layer)(**arguments)
    output, _, states = layer(torch.zeros(input_shape), lengths=lengths, return_states=True)
    parts = CELLS[cell].state
    returned = dict(zip((f"{p}_states" for p in parts), states)) if len(parts) > 1 else {"states": states}
    assert {name: e.shapes[name] for name in returned} == {n: tuple(t.shape) for n, t in returned.items()}
    assert e.shapes["output"] == tuple(output.shape)
    assert ("lengths" in e.shapes) == batched and (not batched or e.shapes["lengths"] == (N,))
    assert any("return_states=True" in note for note in e.notes)
    assert any("lengths=" in note for note in e.notes) == batched


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("keywords, input_shape, message", [
    (dict(lengths=[3, 4]), (L, N, H_IN), "lengths[1] is 4, but each length must be between 1 and L = 3"),
    (dict(lengths=[3, 0]), (L, N, H_IN), "lengths[1] is 0"),
    (dict(lengths=[0, 2]), None, "lengths[0] is 0, but each length must be at least 1"),
    (dict(lengths=[3]), (L, N, H_IN), "lengths gives 1 lengths, but the batch holds N = 2 sequences"),
    (dict(lengths=True), (L, H_IN), "lengths needs a batched input, but input_shape (3, 5) is unbatched"),
    (dict(lengths="3,1"), None, "lengths must be True or a sequence of integers"),
    (dict(return_states="yes"), None, "return_states must be True or False"),
])
def test_what_the_forward_rejects_in_its_keywords_is_explained(keywords, input_shape, message, lang):
    e = explain(H_IN, H, input_shape=input_shape, lang=lang, **keywords)
    assert [p.subject for p in e.problems] == [next(iter(keywords))]
    if lang == "en":
        assert message in e.problems[0].message
    assert str(e).splitlines()[3].endswith(e.problems[0].message)


def test_what_torch_does_with_the_lengths_explain_rejects():
    with pytest.raises(RuntimeError, match=r"lengths\[1\] = 4"):
        rnnkit.RNN(H_IN, H)(torch.zeros(L, N, H_IN), lengths=[3, 4])
    with pytest.raises(ValueError, match="unbatched"):
        rnnkit.RNN(H_IN, H)(torch.zeros(L, H_IN), lengths=[3])


def test_a_cell_takes_neither_keyword():
    e = explain(H_IN, H, cell_only=True, lengths=True, return_states=True)
    assert [p.subject for p in e.problems] == ["lengths", "return_states"]
    assert "not an argument of RNNCell" in e.problems[0].message


def test_cli_lengths_and_return_states(capsys):
    argv = ["explain", "--cell", "lstm", "--input-size", "5", "--hidden-size", "8", "--input-shape", "3,2,5"]
    assert main([*argv, "--lengths", "3,1", "--return-states", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["shapes"]["c_states"]["shape"] == [1, 3, 2, 8] and data["lengths"] == [3, 1]
    assert main([*argv, "--lengths", "--lang", "zh"]) == 0
    assert "每條序列的有效長度" in capsys.readouterr().out
    assert main([*argv, "--lengths", "3,x"]) == 1
    assert capsys.readouterr().err.startswith("rnnkit explain: error: --lengths expects integers")
    assert main([*argv, "--lengths", "4,1"]) == 1
    assert "lengths[0] is 4" in capsys.readouterr().err


def test_cli_help_documents_both_keywords(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--lengths [N1,N2,...]" in out and "each padded sequence's valid length" in out
    assert "--return-states" in out and "every step's state of every layer and direction" in out
