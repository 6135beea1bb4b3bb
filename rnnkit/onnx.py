"""Export models that hold rnnkit layers to ONNX, each layer as ONNX's own operator.

:func:`export` is ``torch.onnx.export`` (its dynamo exporter) with the
batch and sequence axes of the inputs dynamic by default; every rnnkit
layer becomes ONNX's ``RNN``, ``LSTM`` or ``GRU`` operator (see
:mod:`rnnkit.kernels.onnx_layer`), so any ONNX runtime runs it with its own
kernels. Needs the ``onnx`` extra: ``pip install 'rnnkit[onnx]'``.

This module loads on first use (``import rnnkit.onnx`` or the attribute
``rnnkit.onnx``), not on ``import rnnkit``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from typing import Any, Iterator

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
        args: example inputs, a tuple (one tensor is taken as ``(tensor,)``). Give examples whose batch and
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
            express (an LSTM with ``proj_size``, ``layer_norm=True``, ``zoneout``).

    Example::

        >>> lstm = rnnkit.LSTM(5, 8, batch_first=True)
        >>> rnnkit.onnx.export(lstm, (torch.randn(3, 4, 5),), "lstm.onnx")
    """
    missing = missing_requirements()
    if missing:
        raise ModuleNotFoundError(f"rnnkit.onnx.export {missing}")
    reason = refusal(model)
    if reason:
        raise ValueError(f"rnnkit.onnx.export: {reason}")
    if not isinstance(args, tuple):
        args = (args,)
    if "dynamic_shapes" not in kwargs and "dynamic_axes" not in kwargs:
        kwargs["dynamic_shapes"] = default_dynamic_shapes(args)
    kwargs.setdefault("opset_version", onnx_layer.OPSET)
    kwargs.setdefault("verbose", False)
    with _without_exporter_noise():
        return torch.onnx.export(model, args, f, dynamo=True, **kwargs)


@contextlib.contextmanager
def _without_exporter_noise() -> Iterator[None]:
    """Silence what torch's exporter says about itself, which no caller can act
    on: that torchvision's operators are not registered (torchvision is not
    needed), and a deprecation inside its own use of pytrees."""
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
            yield
    finally:
        registry_log.setLevel(level)


def missing_requirements() -> str | None:
    """What to install before exporting (``"needs onnxscript: pip install ..."``), or ``None``."""
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"needs {' and '.join(missing)}: pip install 'rnnkit[onnx]'"


def default_dynamic_shapes(args: Any) -> Any:
    """``args``'s structure with, for each tensor, every axis but the last
    (the features) as ``Dim.AUTO``, dynamic unless the model fixes it; the
    one axis of a 1-D tensor (such as ``lengths``) too. Anything else static."""
    if isinstance(args, torch.Tensor):
        return {axis: torch.export.Dim.AUTO for axis in range(max(args.dim() - 1, 1))}
    if isinstance(args, (tuple, list)):
        return type(args)(default_dynamic_shapes(a) for a in args)
    return None


def refusal(model: nn.Module) -> str | None:
    """Why ONNX's operators cannot express a layer of ``model`` (``"recurrent
    has layer_norm=True, which ONNX's LSTM operator cannot express"``), or
    ``None`` when they can express every one."""
    from rnnkit.kinds import cell_of
    from rnnkit.layers.base import RecurrentLayer

    for name, module in model.named_modules():
        if not isinstance(module, RecurrentLayer):
            continue
        what = name or type(module).__name__
        if module.proj_size:
            return (
                f"{what} is an LSTM with proj_size={module.proj_size}, which ONNX's LSTM "
                f"operator cannot express (it has no projection)"
            )
        for option, value in (("layer_norm", module.layer_norm), ("zoneout", module.zoneout)):
            if value:
                return (
                    f"{what} has {option}={value}, which ONNX's "
                    f"{cell_of(module.kind).onnx_operator} operator cannot express"
                )
    return None
