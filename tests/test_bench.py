"""``rnnkit bench`` runs and says what it measured; how fast is the benchmark's
business, not the tests'."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit import bench
from rnnkit.bench import (
    REGIMES, STREAMING_MODULES, BenchConfig, build_streaming, floor_ms, output_tensors, peak_memory_mb,
    regime_of,
)
from rnnkit.cli.main import main
from rnnkit.kernels import blas
from rnnkit.kernels.numba_ops import padded_width
from rnnkit.kinds import CELLS


@pytest.fixture
def keep_threads():
    """``--threads`` sets torch's thread count for the process: put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_json_run(capsys, keep_threads):
    assert main(["bench", "--config", "T=6,N=2,H=4,I=3,L=2,bi", "--no-memory",
                 "--min-time", "0", "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["environment"]["threads"] == 1
    (result,) = report["results"]
    assert result["label"] == "RNN T=6 N=2 3->4 x2 layers bidir"
    assert result["backend"] == "fused"
    assert result["max_abs_diff"] < 1e-5
    for key in ("inference_speedup", "training_speedup", "inference_torch_ms", "training_rnnkit_ms",
                "floor_ms"):
        assert result[key] > 0
    assert result["floor_multiple"] == pytest.approx(result["inference_rnnkit_ms"] / result["floor_ms"])
    assert report["environment"]["blas"] in blas.available()
    assert result["products"] in ("numba", *blas.available())


@pytest.mark.parametrize(
    "spec, products",
    [
        # (a, w, times) of each per-step product, per round: one (N, P) @ (P, G*H) per layer
        # and direction, and with a projection one (N, H) @ (H, P) more
        ("T=30,N=3,H=5", [((3, 5), (5, 5), 30)]),
        ("T=7,N=3,H=5,P=2,L=2,bi,lstm", [((3, 2), (2, 20), 7), ((3, 5), (5, 2), 7)] * 4),
        ("T=9,N=4,H=6,I=2,gru", [((4, 6), (6, 18), 9)]),
    ],
)
def test_the_floor_does_the_products_of_each_layer_and_direction(spec, products, monkeypatch):
    from rnnkit import bench

    done = []
    real = bench.products_repeatedly

    def record(a, w, res, times, gemm):
        done.append((a.shape, w.shape, times))
        real(a, w, res, times, gemm)

    monkeypatch.setattr(bench, "products_repeatedly", record)
    assert floor_ms(BenchConfig.parse(spec), torch.float32, 0.0, min_rounds=1) > 0
    # w as the loops' product takes it: (K, M), its columns padded to whole vectors
    products = [(a, (k, padded_width(m, 4)), times) for a, (k, m), times in products]
    rounds = len(done) // len(products)
    assert rounds >= 2 and done == products * rounds  # a warm-up round and the timed ones


def test_the_table_says_how_the_products_ran(capsys, monkeypatch):
    monkeypatch.setenv("RNNKIT_BLAS", "none")
    assert main(["bench", "--config", "T=5,N=1,H=3", "--no-memory", "--min-time", "0"]) == 0
    out = capsys.readouterr().out
    assert "fused (numba)" in out and "BLAS none" in out and "floor ms" in out


def test_table_run(capsys):
    assert main(["bench", "--config", "T=5,N=1,H=3,relu", "--config", "T=4,N=2,H=3,P=2,lstm",
                 "--config", "T=4,N=2,H=3,I=2,gru", "--no-memory", "--min-time", "0"]) == 0
    out = capsys.readouterr().out
    assert "RNN T=5 N=1 3->3 relu" in out and "speedup" in out
    assert "LSTM T=4 N=2 3->3->2" in out and "GRU T=4 N=2 2->3" in out


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("T=200,N=32,H=64", BenchConfig(200, 32, 64)),
        ("T=10, N=1, H=8, I=3, L=2, bi, relu", BenchConfig(10, 1, 8, 3, 2, True, "relu")),
        ("T=10,N=1,H=8,gru", BenchConfig(10, 1, 8, cell="gru")),
        ("lstm,T=10,N=2,H=8,P=4,bi", BenchConfig(10, 2, 8, bidirectional=True, cell="lstm", proj_size=4)),
    ],
)
def test_config_syntax(spec, expected):
    assert BenchConfig.parse(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["T=200,N=32", "T=0,N=1,H=4", "T=1,N=1,H=4,bidir", "T=x,N=1,H=2", "T=5,N=1,H=4,gru,relu",
     "T=5,N=1,H=4,P=2", "T=5,N=1,H=4,lstm,P=4"],
)
def test_bad_config_is_a_one_line_error(spec, capsys):
    assert main(["bench", "--config", spec]) == 1
    assert capsys.readouterr().err.startswith("rnnkit bench: error: ")


@pytest.mark.parametrize("seconds", ["-1", "nan"])
def test_bad_min_time_is_a_one_line_error(seconds, capsys):
    assert main(["bench", "--quick", "--min-time", seconds]) == 1
    assert capsys.readouterr().err.startswith("rnnkit bench: error: --min-time must be at least 0")


def test_peak_memory_is_measured_in_a_child_process():
    assert peak_memory_mb(BenchConfig(steps=50, batch=8, hidden=16), torch.float32, "rnnkit") >= 0


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_regime_has_a_default_configuration_for_every_cell(cell):
    from rnnkit.bench import DEFAULT_CONFIGS

    assert {c.cell for c in DEFAULT_CONFIGS[cell]} == {cell}
    lstm_only = {REGIMES["lstm-long"], REGIMES["lstm"]}
    expected = lstm_only if cell == "lstm" else set(REGIMES.values()) - lstm_only
    assert {regime_of(c) for c in DEFAULT_CONFIGS[cell]} == expected


# -- padded batches: lengths= against torch's packed route ---------------------------------


def test_padded_lengths_are_varied_unsorted_and_within_the_sequence():
    lengths = bench.padded_lengths(steps=20, batch=7)
    assert lengths.shape == (7,) and lengths.max() == 20 and lengths.min() >= 10
    assert not (lengths.diff() <= 0).all() and not (lengths.diff() >= 0).all()
    assert bench.padded_lengths(steps=1, batch=3).tolist() == [1, 1, 1]


@pytest.mark.parametrize("cell", list(CELLS))
def test_padded_forward_is_the_same_on_both_sides(cell):
    config = BenchConfig(steps=9, batch=5, hidden=4, layers=2, bidirectional=True, cell=cell, lengths=True)
    theirs, ours, x = bench.build(config, torch.float64)
    side = bench.forward(config)
    (output, state), (expected_output, expected_state) = side(ours, x), side(theirs, x)
    torch.testing.assert_close(output, expected_output)
    torch.testing.assert_close(state, expected_state)
    lengths = bench.padded_lengths(9, 5)
    assert all(not output[length:, n].any() for n, length in enumerate(lengths.tolist()))


def test_a_lengths_row_runs_and_says_so(capsys):
    assert main(["bench", "--config", "T=6,N=3,H=4,gru,lengths", "--no-memory", "--min-time", "0",
                 "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["label"] == "GRU T=6 N=3 4->4 lengths" and result["max_abs_diff"] < 1e-5
    assert BenchConfig.parse("T=6,N=3,H=4,lengths") == BenchConfig(6, 3, 4, lengths=True)
    assert all(c.lengths for configs in bench.LENGTHS_CONFIGS.values() for c in configs)
    assert set(bench.LENGTHS_CONFIGS) == set(CELLS)


def test_cuda_without_a_device_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "--device", "cuda", "--quick", "--no-memory"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rnnkit bench: error: --device cuda: no CUDA device")
    assert err.count("\n") == 1


@pytest.mark.parametrize("module", STREAMING_MODULES)
def test_the_streaming_set_compares_the_same_call(module):
    """Both modules get the same weights and the same one-step arguments, and agree."""
    theirs, ours, args = build_streaming(module, torch.float64)
    assert args[0].shape == ((1, 8) if module.endswith("Cell") else (1, 1, 8))
    with torch.no_grad():
        for got, expected in zip(output_tensors(ours(*args)), output_tensors(theirs(*args)), strict=True):
            torch.testing.assert_close(got, expected)


def test_streaming_rows_come_with_the_default_configurations(capsys):
    assert main(["bench", "--quick", "--cell", "gru", "--no-memory", "--min-time", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["environment"]["device"] == "cpu"
    labels = [row["label"] for row in report["streaming"]]
    assert labels == ["GRU T=1 N=1 8->16", "GRUCell N=1 8->16"]
    for row in report["streaming"]:
        for key in ("inference_speedup", "training_speedup", "inference_rnnkit_us", "training_torch_us"):
            assert row[key] > 0


def test_streaming_table_and_opting_out(capsys):
    assert main(["bench", "--quick", "--cell", "lstm", "--no-memory", "--min-time", "0"]) == 0
    out = capsys.readouterr().out
    assert "streaming: one step per call" in out and "LSTMCell N=1 8->16" in out
    assert main(["bench", "--quick", "--no-streaming", "--no-memory", "--min-time", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["streaming"] == []
    assert main(["bench", "--config", "T=3,N=1,H=2", "--no-memory", "--min-time", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["streaming"] == []  # --config: those only


def test_the_environment_names_no_blas_when_the_loops_are_told_to_use_none(monkeypatch):
    monkeypatch.setenv("RNNKIT_BLAS", "none")
    assert bench.environment()["blas"] == "none"
