"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
import torch

from rnnkit import kernels


@pytest.fixture(params=list(kernels.BACKENDS))
def backend(request):
    """Run the test once per backend (reference, fused, ...), forced.

    A call the forced backend does not serve (say an LSTM before the fused
    LSTM exists) skips the test for that backend: see the hook below.
    """
    with kernels.use_backend(request.param):
        yield request.param


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    try:
        return (yield)
    except kernels.UnsupportedCall as error:
        if "backend" not in pyfuncitem.fixturenames:
            raise
        pytest.skip(str(error))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
