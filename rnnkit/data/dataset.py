"""The in-memory form of a labelled sequence data set, and the checks that build it.

Every source (built-in sets, IDX, npz, CSV) ends in :func:`make_sequences`, so
a mistake in the data is reported the same way whatever the file format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnkit.errors import UserError


@dataclass(frozen=True)
class Sequences:
    """``N`` sequences of ``T`` steps of ``F`` features, with their labels.

    Attributes:
        x: float32 ``(N, T, F)``. Steps at ``t >= lengths[n]`` are padding, zeros.
        y: int64 ``(N,)`` labels in ``0..C-1``, or ``None`` for unlabelled input.
        lengths: int64 ``(N,)`` valid steps, each in ``1..T``, or ``None`` when
            every sequence has all ``T`` steps.
        source: where the data came from, for messages (``'digits'``, ``'train.npz'``).

    Example::

        >>> s = make_sequences(np.zeros((4, 3)), np.array([0, 1, 0, 1]), source="demo")
        >>> s.x.shape, len(s), s.steps, s.features
        ((4, 3, 1), 4, 3, 1)
    """

    x: np.ndarray
    y: np.ndarray | None
    lengths: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def steps(self) -> int:
        """``T``, the padded length."""
        return self.x.shape[1]

    @property
    def features(self) -> int:
        """``F``, the features per step."""
        return self.x.shape[2]

    def subset(self, index: np.ndarray) -> Sequences:
        """The sequences at ``index`` (an int array), in that order."""
        return Sequences(
            self.x[index],
            None if self.y is None else self.y[index],
            None if self.lengths is None else self.lengths[index],
            self.source,
        )

    def with_x(self, x: np.ndarray) -> Sequences:
        """The same sequences with new values ``x`` of the same shape."""
        return Sequences(x, self.y, self.lengths, self.source)


def make_sequences(
    x: object,
    y: object | None,
    lengths: object | None = None,
    *,
    source: str,
) -> Sequences:
    """Check user arrays and build :class:`Sequences` from them.

    Args:
        x: ``(N, T, F)``, or ``(N, T)`` for one feature per step; any real dtype.
            Values in padding (steps past a sequence's length) are ignored and
            may be NaN.
        y: ``(N,)`` integer labels, ``>= 0`` (whole floats such as ``3.0`` are
            accepted); ``None`` for unlabelled data.
        lengths: ``(N,)`` integers in ``1..T``, or ``None`` for full sequences.
        source: the file or set name, used in error messages.

    Raises:
        UserError: for a wrong shape or dtype, no sequences, NaN/inf values in
            valid steps, or labels that are not non-negative integers.
    """
    x = _numeric(x, "x", source)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise UserError(
            f"x in {source} should have shape (N, T, F) or (N, T), got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise UserError(f"{source} holds no sequences (x has shape {x.shape})")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise UserError(f"sequences in {source} are empty (x has shape {x.shape})")
    n, t = x.shape[:2]
    x = x.astype(np.float32)

    if lengths is not None:
        lengths = _integers(lengths, "lengths", source, n)
        bad = np.flatnonzero((lengths < 1) | (lengths > t))
        if bad.size:
            raise UserError(
                f"lengths in {source} must be in 1..{t} (the steps in x), "
                f"got {lengths[bad[0]]} for sequence {bad[0]}"
            )
        padding = np.arange(t)[None, :] >= lengths[:, None]  # (N, T)
        x[padding] = 0.0
        if (lengths == t).all():
            lengths = None

    bad_values = ~np.isfinite(x)
    if bad_values.any():
        seq, step, feature = np.argwhere(bad_values)[0]
        raise UserError(
            f"x in {source} holds {int(bad_values.sum())} NaN/inf values (first at "
            f"sequence {seq}, step {step}, feature {feature}); remove or fill them"
        )

    if y is not None:
        y = _integers(y, "labels", source, n)
        if (y < 0).any():
            raise UserError(
                f"labels in {source} must be integers 0..C-1, got {y.min()} "
                f"(sequence {int(np.argmin(y))})"
            )
    return Sequences(x, y, lengths, source)


def check_classes(train: Sequences) -> int:
    """The class count ``C`` of a training set whose labels cover every one of
    ``0..C-1``, with at least two classes.

    Labels are class numbers, so ``C`` cannot exceed the number of examples:
    a larger label (a value, an ID, a typo) is refused before anything is
    sized by it.
    """
    assert train.y is not None
    present = np.unique(train.y)  # sorted, each label once
    if present.size < 2:
        raise UserError(
            f"{train.source} has a single class (every label is {present[0]}); "
            "a classifier needs examples of at least two classes"
        )
    largest, count = int(present[-1]), len(train)
    expected = f"labels in {train.source} must be the integers 0..C-1 with an example of each class"
    if largest >= count:
        raise UserError(
            f"{expected}, but the largest label is {largest} (sequence "
            f"{int(np.argmax(train.y))}), which would make {largest + 1} classes for "
            f"{count} examples; labels must be class numbers, not values or IDs"
        )
    missing = largest + 1 - present.size
    if missing:
        raise UserError(
            f"{expected}; labels go up to {largest} but {missing} of those {largest + 1} "
            f"classes never occur{'s' * (missing == 1)} ({_few(_first_missing(present), missing)})"
        )
    return largest + 1


def _first_missing(present: np.ndarray, shown: int = 5) -> list[int]:
    """The first ``shown`` integers of ``0..present[-1]`` not in ``present``
    (sorted, unique), found without listing the whole range."""
    missing: list[int] = []
    expected = 0
    for label in present.tolist():
        missing += range(expected, min(label, expected + shown - len(missing)))
        if len(missing) >= shown:
            break
        expected = label + 1
    return missing


def plural(count: int, noun: str) -> str:
    """A count and its noun, singular or plural: ``'1 feature'``, ``'8 features'``."""
    return f"{count} {noun}{'s' * (count != 1)}"


def check_compatible(data: Sequences, features: int, num_classes: int, role: str) -> None:
    """``data`` can be read by a model of ``features`` inputs and scored
    against ``num_classes`` classes; ``role`` names it in messages ("test set")."""
    if data.features != features:
        raise UserError(
            f"the {role} ({data.source}) has {plural(data.features, 'feature')} per step, "
            f"but the model reads {features}"
        )
    if data.y is not None and data.y.max() >= num_classes:
        raise UserError(
            f"the {role} ({data.source}) has label {data.y.max()}, but the model knows "
            f"classes 0..{num_classes - 1} only"
        )


def _numeric(values: object, name: str, source: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == bool
    ) or np.issubdtype(array.dtype, np.complexfloating):
        raise UserError(f"{name} in {source} should hold real numbers, got dtype {array.dtype}")
    return array


def _integers(values: object, name: str, source: str, n: int) -> np.ndarray:
    """A 1-D array of ``n`` whole numbers, as int64."""
    array = _numeric(values, name, source)
    if array.ndim != 1 or array.shape[0] != n:
        raise UserError(
            f"{name} in {source} should have shape ({n},), one per sequence, "
            f"got shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(array) | (array != np.round(array)))
        if bad.size:
            raise UserError(
                f"{name} in {source} must be integers, got {array[bad[0]]} (sequence {bad[0]})"
            )
    if array.size and array.dtype != bool:
        limit = np.iinfo(np.int64)
        outside = np.flatnonzero((array < limit.min) | (array > limit.max))
        if outside.size:
            raise UserError(
                f"{name} in {source} should be 64-bit integers, got {array[outside[0]]} "
                f"(sequence {outside[0]})"
            )
    return array.astype(np.int64)


def _few(values: list[int], total: int | None = None, shown: int = 5) -> str:
    """``'2, 6, 8'``, or ``'1, 2, 3, 4, 5 and 95 more'`` for ``total`` values of
    which ``values`` are the first."""
    total = len(values) if total is None else total
    text = ", ".join(map(str, values[:shown]))
    return text + (f" and {total - shown} more" if total > shown else "")
