"""The classifier, the training loop, checkpoints and resuming (rnnkit.training)."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from rnnkit.data import DataConfig, absolute_paths
from rnnkit.errors import UserError
from rnnkit.kinds import CELLS
from rnnkit.training import (
    Callbacks, ModelConfig, OptimConfig, Progress, RunConfig, SequenceClassifier,
    load_checkpoint, train,
)
from rnnkit.training.distributed import World
from rnnkit.training.rundir import RunDir, write_atomically

# -- the model -------------------------------------------------------------------

MODEL_CASES = [
    dict(cell=cell, readout=readout, bidirectional=bidirectional, num_layers=layers)
    for cell in CELLS
    for readout in ("last", "mean", "max")
    for bidirectional, layers in ((False, 1), (True, 2))
] + [dict(cell=cell, layer_norm=True, bidirectional=True, num_layers=2) for cell in CELLS]


@pytest.mark.parametrize("options", MODEL_CASES, ids=lambda o: "-".join(map(str, o.values())))
def test_padding_never_reaches_the_classifier(options):
    """A batch of padded sequences with lengths gives each sequence the logits
    it gets alone, unpadded: the readout sees each sequence's true last step."""
    model = SequenceClassifier(ModelConfig(hidden_size=6, **options), input_size=3, num_classes=4).eval()
    lengths = torch.tensor([5, 2, 4, 1])
    x = torch.randn(4, 5, 3)
    batched = model(x, lengths)
    assert batched.shape == (4, 4)
    for n, length in enumerate(lengths.tolist()):
        alone = model(x[n : n + 1, :length])
        torch.testing.assert_close(batched[n : n + 1], alone, rtol=1e-5, atol=1e-6)


def test_last_readout_is_the_tutorial_model():
    """Without lengths, 'last' reads the last step's output, as in the tutorial."""
    model = SequenceClassifier(ModelConfig(hidden_size=8), input_size=5, num_classes=3)
    x = torch.randn(2, 7, 5)
    output, _ = model.recurrent(x)
    torch.testing.assert_close(model(x), model.classifier(output[:, -1]))


@pytest.mark.parametrize("cell", CELLS)
def test_layer_norm_classifier_reads_a_constant_feature(cell):
    """With layer norm the layer reads ``[x_t, 1]``, so two inputs that differ
    only in scale still differ once normalised; one feature alone would leave
    only its sign."""
    model = SequenceClassifier(ModelConfig(cell=cell, hidden_size=8, layer_norm=True),
                               input_size=1, num_classes=3)
    assert model.recurrent.input_size == 2
    x = torch.rand(2, 6, 1) + 0.5
    state = model.recurrent(torch.cat([x, torch.ones(2, 6, 1)], 2))[1]
    h_n = state[0] if isinstance(state, tuple) else state
    torch.testing.assert_close(model(x), model.classifier(h_n[-1]))

    plain = SequenceClassifier(ModelConfig(cell=cell, hidden_size=8), input_size=1, num_classes=3)
    assert plain.recurrent.input_size == 1
    assert not torch.allclose(model(x), model(3 * x), atol=1e-3)


@pytest.mark.parametrize("options, message", [
    (dict(dropout=0.3), "needs --num-layers 2"),
    (dict(cell="gru", nonlinearity="relu"), "nonlinearity"),
    (dict(hidden_size=0), "--hidden-size must be at least 1"),
    (dict(readout="first"), "--readout should be"),
    (dict(dropout=1.0, num_layers=2), r"--dropout must be in \[0, 1\)"),
])
def test_model_config_checks(options, message):
    with pytest.raises(UserError, match=message):
        ModelConfig(**options)


def test_optim_config_checks_and_schedule():
    with pytest.raises(UserError, match="--lr must be positive"):
        OptimConfig(lr=0)
    with pytest.raises(UserError, match="--patience stops on validation"):
        RunConfig(DataConfig(val_fraction=0), optim=OptimConfig(patience=2))
    cosine = OptimConfig(lr=1.0, epochs=4)
    assert [cosine.learning_rate(e) for e in (1, 3)] == [1.0, pytest.approx(0.5)]
    assert OptimConfig(schedule="constant").learning_rate(7) == OptimConfig().lr


# -- progress and early stopping -------------------------------------------------


def row(epoch, accuracy, loss):
    return dict(epoch=epoch, val_accuracy=accuracy, val_loss=loss)


def test_best_epoch_is_highest_accuracy_then_lowest_loss_and_patience_stops():
    config = RunConfig(optim=OptimConfig(epochs=10, patience=2))
    progress = Progress()
    assert progress.record(row(1, 0.5, 1.0))
    assert progress.record(row(2, 0.5, 0.9))  # same accuracy, lower loss
    assert not progress.record(row(3, 0.5, 0.95))
    assert progress.record(row(4, 0.6, 2.0))
    assert not progress.record(row(5, 0.6, 2.0))
    assert not progress.done(config)
    assert not progress.record(row(6, 0.1, 0.1))
    assert progress.best_epoch == 4 and progress.stopped_early(config) and progress.done(config)


def test_without_validation_the_last_epoch_is_best():
    progress = Progress()
    for epoch in (1, 2, 3):
        assert progress.record(row(epoch, None, None))
    assert progress.best_epoch == 3


# -- whole runs ------------------------------------------------------------------


def tiny_config(**optim) -> RunConfig:
    return RunConfig(
        DataConfig(limit=150),
        ModelConfig(hidden_size=12),
        OptimConfig(**{"epochs": 3, "batch_size": 16, "lr": 0.01, "device": "cpu", **optim}),
    )


def run_training(path, config, callbacks=None, resume=None, plots=False):
    return train(config, RunDir(path), World(), torch.device("cpu"), callbacks, resume=resume, plots=plots)


class StopAt(Callbacks):
    """Raises KeyboardInterrupt, as Ctrl-C does, at a batch of an epoch."""

    def __init__(self, epoch, batch):
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_start(self, epoch, batches):
        self.current = epoch

    def on_batch(self, done, loss, accuracy, rate):
        if (self.current, done) == (self.epoch, self.batch):
            raise KeyboardInterrupt


def weights(path):
    return load_checkpoint(path).model


def assert_same_run(a, b):
    """Bit-identical weights and metrics (all but wall-clock times)."""
    for name, tensor in weights(a / "last.pt").items():
        torch.testing.assert_close(weights(b / "last.pt")[name], tensor, rtol=0, atol=0)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(load_checkpoint(a / "last.pt").progress["history"]) == strip(
        load_checkpoint(b / "last.pt").progress["history"]
    )


def test_run_directory_contents(tmp_path):
    outcome = run_training(tmp_path / "run", tiny_config(), plots=True)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["config.json", "metrics.csv", "metrics.json", "last.pt", "best.pt", "results.json",
         "curves.png", "confusion.png", "samples.png"]
    )
    for plot in ("curves.png", "confusion.png", "samples.png"):
        assert (run / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds"
    assert len(lines) == 4
    import json

    results = json.loads((run / "results.json").read_text())
    assert results["test_accuracy"] == outcome.test.accuracy
    assert np.array(results["confusion_matrix"]).sum() == outcome.test.count == 30
    description = json.loads((run / "config.json").read_text())
    saved = replace(tiny_config(), data=absolute_paths(tiny_config().data))
    assert description["config"] == saved.to_dict() and description["plots"] is True
    assert description["data"] == dict(train=108, val=12, test=30, steps=8, features=8, classes=10)
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best.optimizer is None and last.optimizer is not None
    assert last.progress["epoch"] == 3 and best.progress["epoch"] == results["best_epoch"]
    # the test score is the best checkpoint's
    model = best.build_model()
    from rnnkit.training.inference import evaluation_set, score

    assert score(best, evaluation_set(best), torch.device("cpu")).accuracy == outcome.test.accuracy
    assert isinstance(model, SequenceClassifier)


def test_interrupted_run_resumes_exactly(tmp_path):
    config = tiny_config(epochs=3)
    run_training(tmp_path / "whole", config)
    with pytest.raises(KeyboardInterrupt):
        run_training(tmp_path / "cut", config, StopAt(epoch=2, batch=3))
    saved = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert saved.progress["epoch"] == 1
    assert not (tmp_path / "cut" / "results.json").exists()
    run_training(tmp_path / "cut", saved.config, resume=saved)
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


def test_interrupted_in_first_epoch_resumes_from_initial_weights(tmp_path):
    config = tiny_config(epochs=2)
    run_training(tmp_path / "whole", config)
    with pytest.raises(KeyboardInterrupt):
        run_training(tmp_path / "cut", config, StopAt(epoch=1, batch=2))
    saved = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert saved.progress["epoch"] == 0
    run_training(tmp_path / "cut", config, resume=saved)
    assert_same_run(tmp_path / "whole", tmp_path / "cut")


def test_extending_a_constant_rate_run_equals_the_longer_run(tmp_path):
    long = tiny_config(epochs=3, schedule="constant")
    run_training(tmp_path / "long", long)
    run_training(tmp_path / "short", replace(long, optim=replace(long.optim, epochs=2)))
    saved = load_checkpoint(tmp_path / "short" / "last.pt")
    run_training(tmp_path / "short", long, resume=saved)
    assert_same_run(tmp_path / "long", tmp_path / "short")


def test_variable_length_data_trains(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, 120)
    y = (lengths > 5).astype(int)  # the class is the length: only packing can see it
    x = rng.normal(size=(120, 8, 2))
    np.savez(tmp_path / "var.npz", x=x, y=y, lengths=lengths)
    config = RunConfig(
        DataConfig(data=str(tmp_path / "var.npz"), normalize="feature"),
        ModelConfig(hidden_size=8, readout="mean"),
        OptimConfig(epochs=2, batch_size=16, device="cpu"),
    )
    outcome = run_training(tmp_path / "run", config)
    assert outcome.test.count == 24


# -- the run directory -----------------------------------------------------------


@pytest.mark.parametrize("act, message", [
    (lambda d: RunDir.check_new(d / "file" / "sub", overwrite=False).create(),
     "cannot create the run directory .*/file/sub: Not a directory"),
    (lambda d: RunDir(d / "file").create(), "cannot create the run directory .*/file: File exists"),
    (lambda d: RunDir.check_new(d / "file", overwrite=False), "--out .*/file is a file"),
    (lambda d: write_atomically(d / "gone" / "x.json", lambda p: p.write_text("{}")),
     "cannot write .*/gone/x.json: No such file or directory"),
    (lambda d: RunDir(d).write_json("file/x.json", {}), "cannot write .*/file/x.json: Not a directory"),
])
def test_run_directory_errors_are_one_line(tmp_path, act, message):
    """An OSError making or writing the run directory names the path and the reason."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=message) as error:
        act(tmp_path)
    assert "\n" not in str(error.value)
    assert not list(tmp_path.rglob("*.partial"))


# -- checkpoints -----------------------------------------------------------------


class Payload:
    """Unpickling this would create a file: the marker of executed code."""

    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_checkpoints_never_execute_code(tmp_path):
    Payload.marker = str(tmp_path / "executed")
    torch.save({"format": "rnnkit.SequenceClassifier", "trap": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "executed").exists()
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"format": "x"}))
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_bad_checkpoints(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="damaged or not an rnnkit checkpoint .it holds a dictionary without"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_layer_norm_checkpoint_without_the_constant_feature_is_named():
    """A --layer-norm checkpoint whose layer reads F inputs (written before the
    classifier gave it the constant feature) is refused in one line that says so."""
    from rnnkit.data import Scaler
    from rnnkit.training.checkpoint import Checkpoint

    config = RunConfig(model=ModelConfig(cell="lstm", hidden_size=4, layer_norm=True))
    older = SequenceClassifier(config.model, input_size=1, num_classes=3).state_dict()  # the layer reads 2
    scaler = Scaler(np.zeros(2, np.float32), np.ones(2, np.float32))
    checkpoint = Checkpoint(config, input_size=2, num_classes=3, scaler=scaler, model=older, progress={})
    with pytest.raises(UserError, match="do not fit its model: .*saved by an older rnnkit.*train it again") as error:
        checkpoint.build_model()
    assert "\n" not in str(error.value)
    plain = RunConfig(model=ModelConfig(cell="lstm", hidden_size=4))
    with pytest.raises(UserError, match="do not fit its model") as error:
        Checkpoint(plain, input_size=2, num_classes=3, scaler=scaler, model=older, progress={}).build_model()
    assert "older rnnkit" not in str(error.value)


def test_curves_tick_whole_epochs(tmp_path):
    from rnnkit.training.plots import plot_curves

    history = [
        {"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5, "val_loss": None,
         "val_accuracy": None}
        for e in (1, 2)
    ]
    figure = plot_curves(history, 2, tmp_path / "curves.png")
    figure.canvas.draw()
    for axes in figure.axes:
        left, right = axes.get_xlim()
        shown = [tick for tick in axes.get_xticks() if left <= tick <= right]
        assert shown and all(float(tick).is_integer() for tick in shown), shown


@pytest.mark.parametrize("shape, labels", [
    ((4, 40), ("step", "value")),        # one feature per step (MNIST-1D): a line
    ((4, 8, 8), ("feature", "step")),    # several (the digits): an image, a row per step
])
def test_samples_label_both_axes(tmp_path, shape, labels):
    from rnnkit.data.dataset import make_sequences
    from rnnkit.training.plots import plot_samples

    data = make_sequences(np.random.default_rng(0).normal(size=shape), np.arange(4) % 2, source="t")
    figure = plot_samples(data, np.zeros(4, dtype=int), tmp_path / "samples.png")
    for axes in figure.axes:
        assert (axes.get_xlabel(), axes.get_ylabel()) == labels
