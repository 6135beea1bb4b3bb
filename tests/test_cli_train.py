"""``rnnkit train``, ``evaluate`` and ``predict`` on the command line, bad input included."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rnnkit.cli.main import main
from rnnkit.training import load_checkpoint

TINY = ["--limit", "150", "--hidden-size", "12", "--epochs", "2", "--batch-size", "16",
        "--device", "cpu", "--no-plots"]


def train(*args):
    return main(["train", *TINY, *args])


def error_line(capsys, command="train"):
    """The single stderr line of a failed command, checked for form."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rnnkit {command}: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run on digits, shared by the read-only tests."""
    path = tmp_path_factory.mktemp("cli") / "run"
    assert train("--out", str(path)) == 0
    return path


@pytest.fixture
def sequences(tmp_path):
    """A small npz of 3-feature, 3-class sequences whose class is easy to see."""
    rng = np.random.default_rng(1)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 6, 3)) + y[:, None, None]
    np.savez(tmp_path / "seq.npz", x=x, y=y)
    return tmp_path / "seq.npz"


# -- train -----------------------------------------------------------------------


def test_train_reports_and_writes_the_run(trained, capsys, tmp_path):
    assert train("--out", str(tmp_path / "again"), "--plots") == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and str(tmp_path / "again") in out
    assert "epoch 2/2" in out
    assert (tmp_path / "again" / "samples.png").is_file()
    results = json.loads((trained / "results.json").read_text())
    assert results["epochs_completed"] == 2 and 0 <= results["test_accuracy"] <= 1


def test_default_run_directory_is_under_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train() == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("digits-rnn-") and (run / "best.pt").is_file()


def test_existing_run_directory_needs_overwrite(trained, capsys, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "notes.txt").write_text("mine")
    assert train("--out", str(copy)) == 1
    line = error_line(capsys)
    assert "already exists" in line and "--overwrite" in line
    assert train("--out", str(copy), "--overwrite", "--epochs", "1") == 0
    assert load_checkpoint(copy / "last.pt").progress["epoch"] == 1
    assert (copy / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_a_directory_of_other_files_is_not_called_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert train("--out", str(tmp_path)) == 1
    line = error_line(capsys)
    assert f"{tmp_path} is not empty and holds no rnnkit run" in line
    assert "another --out" in line and "--overwrite" in line
    assert "run directory" not in line and "--resume" not in line
    assert train("--out", str(tmp_path), "--overwrite", "--epochs", "1") == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_own_npz_data_with_every_model_option(sequences, tmp_path, capsys):
    args = ["--data", str(sequences), "--normalize", "feature", "--num-layers", "2",
            "--dropout", "0.1", "--bidirectional", "--readout", "max", "--no-bias",
            "--nonlinearity", "relu", "--weight-decay", "1e-4", "--clip-grad", "0",
            "--patience", "1", "--schedule", "constant", "--seed", "3",
            "--layer-norm", "--recurrent-dropout", "0.2", "--zoneout", "0.1"]
    assert train(*args, "--out", str(tmp_path / "run")) == 0
    config = load_checkpoint(tmp_path / "run" / "best.pt").config
    assert config.model.bidirectional and config.model.readout == "max" and not config.model.bias
    assert config.optim.seed == 3 and config.data.normalize == "feature"
    assert config.model.layer_norm and config.model.recurrent_dropout == 0.2 and config.model.zoneout == 0.1
    recurrent = load_checkpoint(tmp_path / "run" / "best.pt").build_model().recurrent
    assert (recurrent.layer_norm, recurrent.recurrent_dropout, recurrent.zoneout) == (True, 0.2, 0.1)


def test_mnist_from_idx_files(tmp_path, capsys):
    from test_data import write_mnist

    write_mnist(tmp_path / "data" / "MNIST" / "raw", train=60, test=20, compress=True)
    assert train("--data", "mnist", "--data-dir", str(tmp_path / "data"), "--limit", "60",
                 "--out", str(tmp_path / "run")) == 0
    description = json.loads((tmp_path / "run" / "config.json").read_text())
    assert description["data"] == dict(train=54, val=6, test=20, steps=28, features=28, classes=10)


def test_resume_continues_and_refuses_what_it_cannot_do(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert main(["train", "--resume", str(run)]) == 1
    assert "is complete (2 of 2 epochs); give --epochs above 2" in error_line(capsys)
    assert main(["train", "--resume", str(run), "--epochs", "1"]) == 1
    assert ("has already trained 2 epochs, so --epochs 1 cannot be its length; give --epochs "
            "above 2") in error_line(capsys)
    assert main(["train", "--resume", str(run), "--hidden-size", "5"]) == 1
    line = error_line(capsys)
    assert "--hidden-size cannot be given with it" in line
    assert line.endswith("(only --epochs, --device, --threads, --plots)")
    assert main(["train", "--resume", str(run), "--out", str(tmp_path / "elsewhere")]) == 1
    assert "--out cannot be given with it" in error_line(capsys)
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 1
    assert "no run directory" in error_line(capsys)
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 2" in out
    assert "s this session (" in out and "over all 3 epochs" in out
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    description = json.loads((run / "config.json").read_text())
    assert len(description["commands"]) == 2 and "--resume" in description["commands"][1]
    # the run was made with --no-plots, and its continuation keeps that choice
    assert description["plots"] is False and not list(run.glob("*.png"))


def test_a_run_reads_its_data_from_any_directory(sequences, tmp_path, monkeypatch, capsys):
    """The data path is saved absolute: evaluate and --resume work from elsewhere."""
    monkeypatch.chdir(sequences.parent)
    run = tmp_path / "run"
    assert train("--data", sequences.name, "--epochs", "1", "--out", str(run)) == 0
    assert load_checkpoint(run / "last.pt").config.data.data == str(sequences.resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 18
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0


# -- evaluate and predict --------------------------------------------------------


def test_evaluate_rebuilds_the_test_set(trained, capsys):
    assert main(["evaluate", str(trained), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    results = json.loads((trained / "results.json").read_text())
    assert scores["accuracy"] == results["test_accuracy"]
    assert scores["confusion_matrix"] == results["confusion_matrix"]
    assert main(["evaluate", str(trained), "--checkpoint", "last"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_evaluate_other_data(trained, tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "d.npz", x=digits.images[:50], y=digits.target[:50])
    assert main(["evaluate", str(trained), "--data", str(tmp_path / "d.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 50
    np.savez(tmp_path / "wide.npz", x=np.zeros((5, 8, 9)), y=np.zeros(5))
    assert main(["evaluate", str(trained), "--data", str(tmp_path / "wide.npz")]) == 1
    assert "has 9 features per step, but the model reads 8" in error_line(capsys, "evaluate")


def test_evaluate_a_file_reads_only_that_file(sequences, tmp_path, capsys):
    """--test-data FILE (or --data FILE) is scored whole with the run's saved
    scaling: no training data is read and the run's --limit does not apply."""
    from rnnkit.data import prepare

    run = tmp_path / "run"
    assert train("--data", str(sequences), "--limit", "60", "--epochs", "1", "--out", str(run)) == 0
    best = load_checkpoint(run / "best.pt")
    learned = prepare(best.config.data).scaler  # on the run's training split
    np.testing.assert_array_equal(best.scaler.mean, learned.mean)
    np.testing.assert_array_equal(best.scaler.std, learned.std)
    other = sequences.rename(tmp_path / "other.npz")  # the training file is gone
    capsys.readouterr()
    for option in ("--test-data", "--data"):
        assert main(["evaluate", str(run), option, str(other), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["examples"] == 90  # all, not --limit's 60
    assert main(["evaluate", str(run), "--data", str(other), "--test-data", str(other)]) == 1
    assert "give one of them" in error_line(capsys, "evaluate")
    assert main(["evaluate", str(run)]) == 1  # its own test set is drawn from its data
    assert f"no such file: {sequences}" in error_line(capsys, "evaluate")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_help_their_own_options(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Execution: --device {auto,cpu,cuda} where to run the model" in out
    assert "Training" not in out and "where to train" not in out
    if command == "evaluate":
        assert "--test-data FILE a labelled .npz/.csv file to score, all of it" in out
        assert "default: digits" not in out


def test_predict_csv_and_json(trained, tmp_path, capsys):
    from sklearn.datasets import load_digits

    images = load_digits().images[:7]
    np.savez(tmp_path / "in.npz", x=images)
    assert main(["predict", str(trained), str(tmp_path / "in.npz")]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 7 and list(rows[0])[:3] == ["index", "predicted", "probability"]
    probabilities = np.array([[float(r[f"p_{c}"]) for c in range(10)] for r in rows])
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-4)
    assert [int(r["predicted"]) for r in rows] == probabilities.argmax(1).tolist()

    # the same sequences as CSV rows of 64 values, 8 per step, to a JSON file
    with open(tmp_path / "in.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(images.reshape(7, 64).tolist())
    out = tmp_path / "predictions.json"
    assert main(["predict", str(trained), str(tmp_path / "in.csv"), "-o", str(out)]) == 0
    predictions = json.loads(out.read_text())
    assert [p["predicted"] for p in predictions] == [int(r["predicted"]) for r in rows]
    # the run's own features per step are the default, so the same value may be given
    assert main(["predict", str(trained), str(tmp_path / "in.csv"), "--csv-features", "8"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8


def test_evaluate_csv_rows_as_the_model_reads_them(trained, tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    with open(tmp_path / "test.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(np.column_stack([digits.target[:50], digits.data[:50]]).tolist())
    assert main(["evaluate", str(trained), "--test-data", str(tmp_path / "test.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 50
    assert main(["evaluate", str(trained), "--test-data", str(tmp_path / "test.csv"),
                 "--csv-features", "4"]) == 1
    assert error_line(capsys, "evaluate").endswith(
        "--csv-features 4 does not fit the run: its model reads 8 features per step "
        "(leave --csv-features out to read CSV rows that way)"
    )
    assert main(["evaluate", str(trained), "--csv-features", "2"]) == 1  # the run's own test set
    assert "--csv-features 2 does not fit the run" in error_line(capsys, "evaluate")


@pytest.mark.parametrize("make, args, message", [
    (lambda d: None, ["missing.npz"], "no such file"),
    (lambda d: np.savez(d / "x.npz", x=np.zeros((3, 8, 5))), ["x.npz"], "has 5 features per step, but the model reads 8"),
    (lambda d: np.savez(d / "x.npz", x=np.zeros((3, 8))), ["x.npz"], "has 1 feature per step, but the model reads 8"),
    (lambda d: (d / "x.csv").write_text("1,2,3,4\n"), ["x.csv", "--csv-features", "4"],
     "--csv-features 4 does not fit the run: its model reads 8 features per step"),
    (lambda d: np.savez(d / "x.npz", x=np.full((3, 8, 8), np.nan)), ["x.npz"], "NaN/inf"),
    (lambda d: np.savez(d / "x.npz", x=np.zeros((3, 8, 8))), ["x.npz", "-o", "out.txt"], "give a .csv or .json"),
    (lambda d: None, ["x.csv", "--csv-features", "0"], "--csv-features must be at least 1, got 0"),
    # a typo in the first row: an error, not a header that drops the row
    (lambda d: (d / "x.csv").write_text(",".join(["1", "2", "x"] + ["1"] * 61) + "\n" + "1," * 63 + "1\n"),
     ["x.csv", "--csv-features", "8"], "line 1, column 3 of x.csv: 'x' is not a number"),
])
def test_predict_bad_input(trained, tmp_path, monkeypatch, capsys, make, args, message):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    assert main(["predict", str(trained), *args]) == 1
    assert message in error_line(capsys, "predict")


# -- bad input to train: one line, exit 1, no traceback ------------------------


def _npz(name, **arrays):
    return lambda d: np.savez(d / name, **arrays)


def _text(name, content):
    return lambda d: (d / name).write_bytes(content)


BAD_TRAIN = [
    ("missing file", None, ["--data", "nope.npz"], "no such file: nope.npz"),
    ("unknown data", None, ["--data", "cifar10"], "--data should be digits, mnist1d, mnist"),
    ("corrupt npz", _text("c.npz", b"garbage"), ["--data", "c.npz"], "cannot read c.npz"),
    ("corrupt csv", _text("c.csv", b"\xff\xfe\x00bad"), ["--data", "c.csv"], "cannot read c.csv as CSV"),
    ("wrong shape", _npz("s.npz", x=np.zeros((9, 2, 2, 2)), y=np.zeros(9)), ["--data", "s.npz"], "should have shape (N, T, F)"),
    ("NaN", _npz("n.npz", x=np.full((9, 3), np.nan), y=np.arange(9) % 3), ["--data", "n.npz"], "NaN/inf"),
    ("inf", _npz("i.npz", x=np.full((9, 3), np.inf), y=np.arange(9) % 3), ["--data", "i.npz"], "NaN/inf"),
    ("float labels", _npz("f.npz", x=np.zeros((9, 3)), y=np.arange(9) / 2), ["--data", "f.npz"], "must be integers"),
    ("label gap", _npz("g.npz", x=np.zeros((9, 3)), y=np.arange(9) % 3 * 2), ["--data", "g.npz"], "never occur"),
    ("negative label", _npz("m.npz", x=np.zeros((9, 3)), y=np.arange(9) - 1), ["--data", "m.npz"], "integers 0..C-1"),
    ("string labels", _npz("t.npz", x=np.zeros((2, 3)), y=np.array(["a", "b"])), ["--data", "t.npz"], "real numbers"),
    ("empty", _npz("e.npz", x=np.zeros((0, 3)), y=np.zeros(0)), ["--data", "e.npz"], "holds no sequences"),
    ("single class", _npz("o.npz", x=np.zeros((9, 3)), y=np.zeros(9)), ["--data", "o.npz"], "single class"),
    ("empty csv", _text("e.csv", b""), ["--data", "e.csv"], "holds no sequences"),
    ("no mnist", None, ["--data", "mnist", "--data-dir", "nowhere"], "no MNIST file"),
    ("dropout one layer", None, ["--dropout", "0.2"], "needs --num-layers 2"),
    ("bad size", None, ["--hidden-size", "0"], "--hidden-size must be at least 1"),
    ("recurrent dropout above one", None, ["--recurrent-dropout", "1.5"], "--recurrent-dropout must be in [0, 1], got 1.5"),
    ("negative zoneout", None, ["--zoneout", "-0.1"], "--zoneout must be in [0, 1], got -0.1"),
    ("out is a file", _text("f", b""), ["--out", "f"], "is a file"),
    ("out under a file", _text("f", b""), ["--out", "f/sub"], "cannot create the run directory f/sub: Not a directory"),
    ("huge label", _npz("h.npz", x=np.zeros((3, 3)), y=np.array([0, 1, 10**9])), ["--data", "h.npz"],
     "the largest label is 1000000000"),
    ("limit too small", None, ["--limit", "12"], "--limit 12 keeps too few examples per class"),
    ("text as npz", _text("t.npz", b"x,y\n1,2\n"), ["--data", "t.npz"], "not a zip archive of .npy arrays"),
    ("string labels csv", _text("s.csv", b"cat,1,2\ndog,3,4\n"), ["--data", "s.csv"],
     "line 1, column 1 of s.csv: the label 'cat' is not a number"),
    ("test data with builtin", None, ["--test-data", "t.npz"], "--test-data is for your own"),
]


@pytest.mark.parametrize("make, args, message", [c[1:] for c in BAD_TRAIN], ids=[c[0] for c in BAD_TRAIN])
def test_bad_train_input(tmp_path, monkeypatch, capsys, make, args, message):
    monkeypatch.chdir(tmp_path)
    if make:
        make(tmp_path)
    assert main(["train", *TINY, *args]) == 1
    assert message in error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_bad_option_values_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--lr", "nan"])
    assert exit_info.value.code == 2
    assert "expected a finite number" in capsys.readouterr().err


REQUIRED = {"explain": ["--input-size", "5", "--hidden-size", "8"], "evaluate": ["RUN"],
            "predict": ["RUN", "IN.npz"], "train": [], "bench": [], "export": ["RUN"]}
"""What each subcommand needs before an unknown option is the only mistake left."""


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_an_unknown_option_is_reported_by_its_command(command, capsys):
    from rnnkit.cli.main import SUBCOMMANDS

    assert set(REQUIRED) == set(SUBCOMMANDS)
    with pytest.raises(SystemExit) as exit_info:
        main([command, *REQUIRED[command], "--frobnicate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: rnnkit {command} ")
    assert err.strip().endswith(f"rnnkit {command}: error: unrecognized arguments: --frobnicate")


def test_one_feature_and_one_step_are_singular(tmp_path, capsys):
    np.savez(tmp_path / "one.npz", x=np.random.default_rng(0).normal(size=(60, 1)), y=np.arange(60) % 2)
    assert train("--data", str(tmp_path / "one.npz"), "--out", str(tmp_path / "run"),
                 "--patience", "1", "--epochs", "1") == 0
    out = capsys.readouterr().out
    assert "sequences of 1 step x 1 feature, 2 classes" in out
    assert main(["train", "--resume", str(tmp_path / "run")]) == 1
    assert "(1 of 1 epoch)" in error_line(capsys)


def _damaged_checkpoints(good: bytes) -> dict[str, bytes]:
    """Files that ``last.pt`` or ``best.pt`` can become, none of them readable."""
    import pickle
    from types import SimpleNamespace

    import torch

    def saved(value, **options) -> bytes:
        buffer = io.BytesIO()
        torch.save(value, buffer, **options)
        return buffer.getvalue()

    flipped = bytearray(good)
    # a byte of the first name in the zip's central directory (46 bytes of header
    # before it): a byte flipped in raw tensor data loads unnoticed, since torch's
    # format keeps no checksums, so where a flip lands must not depend on the layout
    flipped[good.find(b"PK\x01\x02") + 50] ^= 0x01  # still ASCII: another name
    not_utf8 = bytearray(good)
    not_utf8[good.find(b"PK\x01\x02") + 50] = 0xFF  # a name that is no UTF-8
    payload = torch.load(io.BytesIO(good), weights_only=True)
    return {
        "empty": b"",
        "garbage": b"garbage\n",
        "cut before the directory": good[:600],
        "cut in the middle": good[: len(good) // 2],
        "cut by one byte": good[:-1],
        "one byte flipped": bytes(flipped),
        "a name that is no UTF-8": bytes(not_utf8),
        "a plain pickle": pickle.dumps({"format": "rnnkit.SequenceClassifier"}),
        "an object": saved(SimpleNamespace(epochs=3)),
        "other tensors": saved({"weights": torch.zeros(2)}),
        "a list": saved([1, 2]),
        "no version": saved({key: value for key, value in payload.items() if key != "version"}),
        "no model": saved({key: value for key, value in payload.items() if key != "model"}),
    }


def test_damaged_checkpoints_are_named_in_one_line(trained, tmp_path, capsys):
    """evaluate (best.pt) and train --resume (last.pt) alike: one line that calls
    the file damaged, status 1, and never torch's advice to load it unsafely."""
    for name, content in _damaged_checkpoints((trained / "last.pt").read_bytes()).items():
        for command, checkpoint in (["evaluate", "best.pt"], ["train", "last.pt"]):
            run = tmp_path / f"{command}-{name}".replace(" ", "-")
            shutil.copytree(trained, run)
            (run / checkpoint).write_bytes(content)
            argv = ["evaluate", str(run)] if command == "evaluate" else ["train", "--resume", str(run), "--epochs", "3"]
            assert main(argv) == 1, name
            line = error_line(capsys, command)
            assert f"cannot read checkpoint {run / checkpoint}: it is damaged or not an rnnkit checkpoint (" in line, name
            assert "weights_only" not in line and "Errno" not in line, line


def test_cuda_without_gpu(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["train", *TINY, "--device", "cuda", "--out", str(tmp_path / "r")]) == 1
    assert "no CUDA GPU" in error_line(capsys)


def test_bad_run_directories(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 1
    assert "not an rnnkit run directory" in error_line(capsys, "evaluate")
    (tmp_path / "last.pt").write_bytes(b"junk")
    (tmp_path / "best.pt").write_bytes(b"junk")
    assert main(["predict", str(tmp_path), "x.npz"]) == 1
    assert "cannot read checkpoint" in error_line(capsys, "predict")


# -- output into a closed pipe (`| head`) ----------------------------------------


class ClosedPipe:
    """Standard output whose reader has gone: every write fails, as with EPIPE."""

    def __init__(self, fd):
        self.fd = fd

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass

    def fileno(self):
        return self.fd

    def isatty(self):
        return False


@pytest.mark.parametrize("command", [
    ["explain", "--input-size", "5", "--hidden-size", "8"],
    ["predict", "RUN", "in.npz"],
])
def test_closed_pipe_ends_quietly(trained, tmp_path, monkeypatch, capsys, command):
    np.savez(tmp_path / "in.npz", x=np.zeros((3, 8, 8)))
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "stdout", "w") as stdout:
        monkeypatch.setattr(sys, "stdout", ClosedPipe(stdout.fileno()))
        assert main([str(trained) if word == "RUN" else word for word in command]) == 141
    assert capsys.readouterr().err == ""


def test_closed_pipe_leaves_no_message_at_exit():
    """Nothing is left to fail when Python flushes standard output on the way out."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rnnkit", "explain", "--input-size", "5", "--hidden-size", "8"],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


# -- Ctrl-C ----------------------------------------------------------------------


def test_ctrl_c_leaves_a_resumable_run(tmp_path, capsys):
    run = tmp_path / "run"
    process = subprocess.Popen(
        # more epochs than it could finish before the signal, however slow the machine
        [sys.executable, "-m", "rnnkit", "train", *TINY, "--epochs", "1000000", "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and f"rnnkit train --resume {run}" in err
    done = load_checkpoint(run / "last.pt").progress["epoch"]
    assert done >= 1
    assert main(["train", "--resume", str(run), "--epochs", str(done + 1)]) == 0
    assert json.loads((run / "results.json").read_text())["epochs_completed"] == done + 1


def test_interruption_message_says_what_last_pt_holds(tmp_path):
    from types import SimpleNamespace

    from rnnkit.cli.train import _interruption

    run = tmp_path / "run"
    assert _interruption(None, None, None) == "interrupted before training started; nothing was written"
    assert "nothing was written" in _interruption(run, None, SimpleNamespace(last_epoch=None))
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    resumed_at_3 = SimpleNamespace(progress={"epoch": 3})
    not_started, started = SimpleNamespace(last_epoch=None), SimpleNamespace(last_epoch=5)
    assert f"{run / 'last.pt'} holds the initial weights" in _interruption(run, None, not_started)
    assert f"holds epoch 3: continue with rnnkit train --resume {run}" in _interruption(run, resumed_at_3, not_started)
    assert "holds epoch 5" in _interruption(run, resumed_at_3, started)


def test_the_command_line_and_explain_start_without_torch():
    """torch loads when a layer is built, not for parsing options or explaining one."""
    code = (
        "import sys\n"
        "from rnnkit.cli.main import build_parser\n"
        "build_parser().parse_args(['train', '--cell', 'gru'])\n"
        "import rnnkit\n"
        "rnnkit.explain(input_size=5, hidden_size=8, num_layers=2, input_shape=(3, 2, 5))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "rnnkit.RNN\n"
        "assert 'torch' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
