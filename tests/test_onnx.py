"""ONNX export: every layer as ONNX's own RNN/LSTM/GRU operator, run by onnxruntime.

The oracle is the same layer run eagerly by rnnkit (itself tested against
torch.nn), at sizes other than the export's example.
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.kernels import onnx_layer

onnx = pytest.importorskip("onnx", reason="the onnx extra: pip install 'rnnkit[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'rnnkit[onnx]'")
import rnnkit.onnx  # noqa: E402  (after the skip: it needs the extra)

INPUT, HIDDEN = 3, 4

CASES = {
    "rnn_tanh": dict(kind="RNN"),
    "rnn_relu_stacked_bidirectional": dict(kind="RNN", nonlinearity="relu", num_layers=2, bidirectional=True),
    "rnn_tanh_bidirectional_h0": dict(kind="RNN", bidirectional=True, with_h0=True),
    "lstm": dict(kind="LSTM"),
    "lstm_stacked_bidirectional_batch_first": dict(kind="LSTM", num_layers=2, bidirectional=True, batch_first=True),
    "lstm_stacked_bidirectional_h0": dict(kind="LSTM", num_layers=2, bidirectional=True, with_h0=True),
    "lstm_h0_no_bias": dict(kind="LSTM", bias=False, with_h0=True),
    "gru": dict(kind="GRU"),
    "gru_stacked_bidirectional_h0": dict(kind="GRU", num_layers=2, bidirectional=True, with_h0=True),
    "gru_batch_first": dict(kind="GRU", batch_first=True),
}
"""Every cell, nonlinearity, stacking, direction, layout and bias, with and without h_0."""


def layer_and_inputs(name: str, steps: int, batch: int, seed: int = 0):
    """The layer for case ``name`` and its arguments ``(x,)`` or ``(x, h_0)``, float32."""
    options = dict(CASES[name])
    kind, with_h0 = options.pop("kind"), options.pop("with_h0", False)
    torch.manual_seed(seed)
    layer = getattr(rnnkit, kind)(INPUT, HIDDEN, **options).eval()
    x = torch.randn((batch, steps, INPUT) if layer.batch_first else (steps, batch, INPUT))
    if not with_h0:
        return layer, (x,)
    shape = (layer.num_layers * layer.num_directions, batch, HIDDEN)
    h0 = torch.randn(shape) if kind != "LSTM" else (torch.randn(shape), torch.randn(shape))
    return layer, (x, h0)


def onnx_session(program) -> ort.InferenceSession:
    return ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run_onnx(session: ort.InferenceSession, args) -> list[np.ndarray]:
    flat = [a.numpy() for a in torch.utils._pytree.tree_leaves(args)]
    return session.run(None, {i.name: a for i, a in zip(session.get_inputs(), flat, strict=True)})


def eager(layer, args) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in torch.utils._pytree.tree_leaves(layer(*args))]


def assert_matches(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def operators(program) -> set[str]:
    return {node.op_type for node in program.model_proto.graph.node}


@pytest.mark.parametrize("name", list(CASES))
def test_onnxruntime_matches_eager_at_other_sizes(name):
    layer, example = layer_and_inputs(name, steps=5, batch=2)
    program = rnnkit.onnx.export(layer, example)
    expected_operator = onnx_layer.OPERATORS[layer.kind]
    assert expected_operator in operators(program)
    assert not operators(program) & {"Loop", "Scan"}
    session = onnx_session(program)
    for steps, batch in ((5, 2), (9, 3), (1, 6)):
        _, args = layer_and_inputs(name, steps=steps, batch=batch, seed=steps)
        assert_matches(run_onnx(session, args), eager(layer, args))


class WithLengths(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, lengths):
        return self.layer(x, lengths=lengths)


@pytest.mark.parametrize("name", ["lstm_stacked_bidirectional_batch_first", "gru"])
def test_onnxruntime_with_lengths_matches_eager(name):
    """Needs the layer's ``lengths=`` keyword: ONNX's ``sequence_lens``."""
    layer, (x,) = layer_and_inputs(name, steps=5, batch=3)
    model = WithLengths(layer).eval()
    session = onnx_session(rnnkit.onnx.export(model, (x, torch.tensor([5, 2, 4]))))
    _, (x2,) = layer_and_inputs(name, steps=7, batch=4, seed=1)
    args = (x2, torch.tensor([3, 7, 1, 6]))
    assert_matches(run_onnx(session, args), eager(model, args))


def test_writes_a_file_that_onnx_checks(tmp_path):
    layer, example = layer_and_inputs("gru", steps=5, batch=2)
    rnnkit.onnx.export(layer, example, tmp_path / "gru.onnx")
    model = onnx.load(tmp_path / "gru.onnx")
    onnx.checker.check_model(model, full_check=True)
    (gru,) = [node for node in model.graph.node if node.op_type == "GRU"]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in gru.attribute}
    assert attributes["linear_before_reset"] == 1


# torch's exporter itself: its capture still uses a pytree class it deprecates
@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")
def test_plain_torch_onnx_export_works_too():
    layer, example = layer_and_inputs("lstm_stacked_bidirectional_batch_first", steps=5, batch=2)
    batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
    program = torch.onnx.export(layer, example, dynamic_shapes=({0: batch, 1: steps},), verbose=False)
    assert "LSTM" in operators(program)
    _, args = layer_and_inputs("lstm_stacked_bidirectional_batch_first", steps=8, batch=3, seed=3)
    assert_matches(run_onnx(onnx_session(program), args), eager(layer, args))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_torchscript_exporter_names_the_one_that_works():
    # In a model, as layers are exported. (Given a bare layer, torch's TorchScript
    # exporter passes the defaults of its keyword-only arguments by position.)
    layer, example = layer_and_inputs("gru", steps=5, batch=2)
    model = torch.nn.Sequential(layer)
    with pytest.raises(RuntimeError, match=r"rnnkit\.onnx\.export.*dynamo=True") as error:
        torch.onnx.export(model, example, io.BytesIO(), dynamo=False)
    assert "\n" not in str(error.value)


def test_projection_is_refused_in_one_line():
    lstm = torch.nn.Sequential()
    lstm.add_module("encoder", rnnkit.LSTM(INPUT, HIDDEN, proj_size=2))
    with pytest.raises(ValueError, match=r"encoder .*proj_size=2.*ONNX") as error:
        rnnkit.onnx.export(lstm, (torch.randn(5, 2, INPUT),))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("option", [dict(layer_norm=True), dict(zoneout=0.1)], ids=["layer_norm", "zoneout"])
def test_options_beyond_onnx_are_refused_in_one_line(option):
    model = torch.nn.Sequential()
    model.add_module("encoder", rnnkit.GRU(INPUT, HIDDEN, **option).eval())
    name, value = next(iter(option.items()))
    with pytest.raises(ValueError, match=rf"encoder has {name}={value}, which ONNX's GRU operator") as error:
        rnnkit.onnx.export(model, (torch.randn(5, 2, INPUT),))
    assert "\n" not in str(error.value)


def test_recurrent_dropout_exports_in_eval_mode_as_the_plain_layer():
    layer = rnnkit.LSTM(INPUT, HIDDEN, recurrent_dropout=0.3).eval()
    program = rnnkit.onnx.export(layer, (torch.randn(5, 2, INPUT),))
    args = (torch.randn(7, 3, INPUT),)
    assert_matches(run_onnx(onnx_session(program), args), eager(layer, args))


def test_every_steps_cell_state_is_refused():
    """``return_states=True`` asks the LSTM for every c_t, which ONNX's LSTM does not give."""
    x = torch.zeros(2, 1, INPUT)
    weights = [rnnkit.kernels.DirectionWeights(torch.zeros(4 * HIDDEN, INPUT), torch.zeros(4 * HIDDEN, HIDDEN))]
    state = (torch.zeros(1, 1, HIDDEN),) * 2
    with pytest.raises(ValueError, match="every step"):
        onnx_layer.layer("lstm", x, state, weights, None, return_cells=True)


def test_missing_packages_are_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"needs onnxscript: pip install 'rnnkit\[onnx\]'"):
        rnnkit.onnx.export(rnnkit.GRU(INPUT, HIDDEN), (torch.randn(5, 2, INPUT),))


def test_import_rnnkit_loads_the_exporter_only_when_asked():
    code = (
        "import sys, rnnkit; rnnkit.GRU(2, 3); print('rnnkit.onnx' in sys.modules, 'onnx' in sys.modules); "
        "rnnkit.onnx.export; print('rnnkit.onnx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True"]


# -- rnnkit export ---------------------------------------------------------------------

TINY_RUN = ["--limit", "150", "--hidden-size", "12", "--epochs", "2", "--batch-size", "16",
            "--device", "cpu", "--no-plots"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny bidirectional GRU run on digits (8 features, 10 classes)."""
    path = tmp_path_factory.mktemp("export") / "run"
    assert cli(["train", *TINY_RUN, "--cell", "gru", "--bidirectional", "--readout", "mean", "--out", str(path)]) == 0
    return path


def cli(argv):
    from rnnkit.cli.main import main

    return main(argv)


def test_exported_run_predicts_what_rnnkit_predict_does(trained, tmp_path, capsys):
    onnx_file = tmp_path / "digits.onnx"
    assert cli(["export", str(trained), "-o", str(onnx_file)]) == 0
    assert str(onnx_file) in capsys.readouterr().err
    raw = np.random.default_rng(3).uniform(0, 16, size=(7, 11, 8)).astype(np.float32)  # unscaled, other T
    np.savez(tmp_path / "raw.npz", x=raw)
    assert cli(["predict", str(trained), str(tmp_path / "raw.npz"), "--format", "json", "-o", str(tmp_path / "p.json")]) == 0
    import json

    expected = np.array([row["probabilities"] for row in json.loads((tmp_path / "p.json").read_text())])
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    scores, probabilities = session.run(["scores", "probabilities"], {"x": raw})
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)  # predict prints 6 decimals
    np.testing.assert_array_equal(scores.argmax(1), expected.argmax(1))


def test_exported_run_with_lengths_predicts_padded_batches_as_rnnkit_predict_does(trained, tmp_path):
    onnx_file = tmp_path / "padded.onnx"
    assert cli(["export", str(trained), "-o", str(onnx_file), "--lengths"]) == 0
    raw = np.random.default_rng(4).uniform(0, 16, size=(6, 9, 8)).astype(np.float32)
    lengths = np.array([9, 3, 5, 1, 9, 7], dtype=np.int64)
    np.savez(tmp_path / "padded.npz", x=raw, lengths=lengths)
    assert cli(["predict", str(trained), str(tmp_path / "padded.npz"), "--format", "json",
                "-o", str(tmp_path / "p.json")]) == 0
    import json

    expected = np.array([row["probabilities"] for row in json.loads((tmp_path / "p.json").read_text())])
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "lengths"]
    (probabilities,) = session.run(["probabilities"], {"x": raw, "lengths": lengths})
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)
    (unpadded,) = session.run(["probabilities"], {"x": raw, "lengths": np.full(6, 9, dtype=np.int64)})
    assert not np.allclose(unpadded[1], probabilities[1], atol=1e-4)  # the padding is ignored, not read


def test_export_refuses_to_overwrite_without_being_asked(trained, tmp_path, capsys):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_text("keep me")
    assert cli(["export", str(trained), "-o", str(onnx_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rnnkit export: error: {onnx_file} exists; give --overwrite to replace it"]
    assert onnx_file.read_text() == "keep me"
    assert cli(["export", str(trained), "-o", str(onnx_file), "--overwrite"]) == 0
    onnx.checker.check_model(onnx.load(onnx_file))


@pytest.mark.parametrize("problem", ["no run", "no folder for the file"])
def test_export_errors_are_one_line(trained, tmp_path, capsys, problem):
    args = [str(tmp_path / "nothing"), "-o", str(tmp_path / "m.onnx")] if problem == "no run" else [
        str(trained), "-o", str(tmp_path / "missing" / "m.onnx")
    ]
    assert cli(["export", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnkit export: error: "), err


@pytest.mark.parametrize("option, message", [
    (["--layer-norm"], "its GRU has layer_norm=True, which ONNX's GRU operator cannot express"),
    (["--zoneout", "0.2"], "its GRU has zoneout=0.2, which ONNX's GRU operator cannot express"),
])
def test_export_of_a_run_beyond_onnx_is_refused_in_one_line(tmp_path, capsys, option, message):
    run = tmp_path / "run"
    assert cli(["train", *TINY_RUN, "--epochs", "1", "--cell", "gru", *option, "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli(["export", str(run), "-o", str(tmp_path / "m.onnx")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"rnnkit export: error: cannot export this run: {message}"
    ]
    assert not (tmp_path / "m.onnx").exists()
