"""The table of kinds against what it describes: torch's classes and modes,
the reference's step functions, the fused modules and the layer modules."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.kernels import fused, reference
from rnnkit.kinds import CELLS, CLASSES, KINDS, cell_of


@pytest.mark.parametrize("cell", CELLS.values(), ids=list(CELLS))
def test_each_cell_describes_its_torch_twins(cell):
    kind = cell.kind()
    options = {"nonlinearity": kind.nonlinearity} if kind.nonlinearity else {}
    theirs = getattr(nn, cell.layer)(3, 4, **options)
    assert theirs.mode == kind.mode
    assert theirs.weight_ih_l0.shape[0] == len(cell.gates) * 4
    _, state = theirs(torch.zeros(2, 1, 3))
    assert len(state if isinstance(state, tuple) else (state,)) == len(cell.state)
    for name, arguments in ((cell.layer, cell.layer_arguments), (cell.cell_class, cell.cell_arguments)):
        assert all(hasattr(getattr(nn, name)(3, 4), argument) for argument in arguments)
        module = importlib.import_module(cell.module)
        assert getattr(rnnkit, name) is getattr(module, name)
        assert getattr(rnnkit, name).config_names == arguments


@pytest.mark.parametrize("key", KINDS)
def test_each_kind_has_its_step_and_a_layer_that_runs_it(key):
    kind, cell = KINDS[key], cell_of(key)
    assert reference.STEPS[key].__name__ == kind.step
    assert (key in fused.LAYERS) == (kind.fused is not None)
    options = {"nonlinearity": kind.nonlinearity} if kind.nonlinearity else {}
    layer = getattr(rnnkit, cell.layer)(3, 4, **options)
    assert (layer.kind, layer.mode, layer.state_names) == (key, kind.mode, cell.state)
    assert getattr(rnnkit, cell.cell_class)(3, 4, **options).kind == key


def test_a_cell_picks_its_kind_by_nonlinearity():
    assert CELLS["rnn"].kind().key == "rnn_tanh" and CELLS["rnn"].kind("relu").key == "rnn_relu"
    with pytest.raises(ValueError, match="expected one of \\['tanh', 'relu'\\]"):
        CELLS["rnn"].kind("gelu")
    with pytest.raises(ValueError, match="GRU takes no nonlinearity argument"):
        CELLS["gru"].kind("relu")
    with pytest.raises(ValueError, match="unknown cell kind 'mgu'"):
        cell_of("mgu")


def test_every_class_rnnkit_exports_is_in_the_table():
    assert set(CLASSES) <= set(rnnkit.__all__)
    assert set(CLASSES) == {name for name in rnnkit.__all__ if hasattr(nn, name)}
