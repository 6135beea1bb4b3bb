"""Validation of constructor arguments, shared by every layer and cell.

Each check raises the exception ``torch.nn`` raises for the same mistake
(``TypeError`` for a wrong type, ``ValueError`` for a wrong value), with a
message that names what was expected and what was given.
"""

from __future__ import annotations

import numbers
import warnings


def check_size(name: str, value: object, zero_allowed: bool = False) -> int:
    """An integer size such as ``input_size``, ``hidden_size`` or ``num_layers``:
    positive, or not negative with ``zero_allowed`` (torch's cells accept a
    size of zero)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < 0 or (value == 0 and not zero_allowed):
        least = "zero or greater" if zero_allowed else "greater than zero"
        raise ValueError(f"{name} must be {least}, got {value}")
    return value


def check_flag(name: str, value: object) -> bool:
    """A boolean option such as ``bias``, ``batch_first`` or ``bidirectional``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    return value


def check_nonlinearity(value: object) -> str:
    """``'tanh'`` or ``'relu'``."""
    if value not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity {value!r}. Select from 'tanh' or 'relu'.")
    return value  # type: ignore[return-value]


def check_dropout(value: object, num_layers: int) -> float:
    """A probability in [0, 1]; warns, as torch does, when it can have no effect."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= value <= 1
    ):
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability "
            f"of an element being zeroed, got {value!r}"
        )
    if value > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero "
            f"dropout expects num_layers greater than 1, but got dropout={value} and "
            f"num_layers={num_layers}",
            stacklevel=4,
        )
    return float(value)


def check_proj_size(value: object, hidden_size: int) -> int:
    """An LSTM projection size: 0 (none) or a positive integer below ``hidden_size``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"proj_size should be of type int, got: {type(value).__name__}")
    if value < 0:
        raise ValueError(
            f"proj_size should be a positive integer or zero to disable projections, got {value}"
        )
    if value >= hidden_size:
        raise ValueError(
            f"proj_size has to be smaller than hidden_size, got proj_size={value} "
            f"and hidden_size={hidden_size}"
        )
    return value


def check_probability(name: str, value: object) -> float:
    """A probability in [0, 1] such as ``recurrent_dropout`` or ``zoneout``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} should be a number in range [0, 1], got {value!r}")
    return float(value)
