"""Export models that hold rnnkit layers to ONNX, each layer as ONNX's own operator.

:func:`export` is ``torch.onnx.export`` (its dynamo exporter) with the
batch and sequence axes of the inputs dynamic by default; every rnnkit
layer becomes ONNX's ``RNN``, ``LSTM`` or ``GRU`` operator (see
:mod:`rnnkit.kernels.onnx_layer`), so any ONNX runtime runs it with its own
kernels. Needs the ``onnx`` extra: ``pip install 'rnnkit[onnx]'``.

This module loads on ``import rnnkit.onnx``, not on ``import rnnkit``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from rnnkit.kernels import onnx_layer

REQUIRED = ("onnx", "onnxscript")
"""What torch's ONNX exporter imports; ``onnxruntime`` runs the result."""


def export(model: nn.Module, args: tuple, f: Any = None, **kwargs: Any):
    """Write ``model`` (called as ``model(*args)``) as an ONNX model.

    Args:
        model: any module; its rnnkit layers become ONNX ``RNN``/``LSTM``/``GRU``
            operators, the rest is exported by torch as usual.
        args: example inputs, a tuple. Give examples whose batch and
            sequence sizes are above 1 and differ from each other: an axis
            of size 1 stays fixed, and axes of equal size may be taken as one.
        f: a path (or ``None`` to only return the program).
        kwargs: passed to ``torch.onnx.export`` (``input_names``,
            ``output_names``, ``opset_version``, ``dynamic_shapes``, ...).
            Without ``dynamic_shapes`` (or ``dynamic_axes``) every axis of
            each tensor input but the last (features) is dynamic where the
            model allows: batch and sequence, not ``h_0``'s layers; so is a
            1-D tensor's one axis (``lengths``).

    Returns:
        The ``torch.onnx.ONNXProgram`` (saved to ``f`` when given).

    Raises:
        ModuleNotFoundError: ``onnx`` or ``onnxscript`` is not installed.
        ValueError: the model holds a layer that ONNX's operators cannot
            express (an LSTM with ``proj_size``).

    Example::

        >>> lstm = rnnkit.LSTM(5, 8, batch_first=True)
        >>> rnnkit.onnx.export(lstm, (torch.randn(3, 4, 5),), "lstm.onnx")
    """
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(
            f"rnnkit.onnx.export needs {' and '.join(missing)}: pip install 'rnnkit[onnx]'"
        )
    _check_layers(model)
    if not isinstance(args, tuple):
        args = (args,)
    if "dynamic_shapes" not in kwargs and "dynamic_axes" not in kwargs:
        kwargs["dynamic_shapes"] = default_dynamic_shapes(args)
    kwargs.setdefault("opset_version", onnx_layer.OPSET)
    kwargs.setdefault("verbose", False)
    return torch.onnx.export(model, args, f, dynamo=True, **kwargs)


def default_dynamic_shapes(args: Any) -> Any:
    """``args``'s structure with, for each tensor, every axis but the last
    (the features) as ``Dim.AUTO``, dynamic unless the model fixes it; the
    one axis of a 1-D tensor (such as ``lengths``) too. Anything else static."""
    if isinstance(args, torch.Tensor):
        return {axis: torch.export.Dim.AUTO for axis in range(max(args.dim() - 1, 1))}
    if isinstance(args, (tuple, list)):
        return type(args)(default_dynamic_shapes(a) for a in args)
    return None


def _check_layers(model: nn.Module) -> None:
    """Refuse, before tracing, a layer that ONNX's operators cannot express."""
    from rnnkit.layers.base import RecurrentLayer

    for name, module in model.named_modules():
        if isinstance(module, RecurrentLayer) and module.proj_size:
            raise ValueError(
                f"rnnkit.onnx.export: {name or type(module).__name__} is an LSTM with "
                f"proj_size={module.proj_size}, which ONNX's LSTM operator cannot express "
                f"(it has no projection)"
            )
