"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
import torch

from rnnkit import kernels


@pytest.fixture(params=list(kernels.BACKENDS))
def backend(request):
    """Run the test once per backend (reference, fused, ...), forced: a call
    the forced backend cannot serve fails with ``kernels.UnsupportedCall``."""
    with kernels.use_backend(request.param):
        yield request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
