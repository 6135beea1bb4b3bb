"""From a source to the three sets a run uses: train, validation and test.

The test set is the source's own when it has one, else a stratified share of
its examples; validation is a stratified share of what remains. Both splits
and ``--limit`` draw from ``split_seed`` only, so every run on the same data
and split seed is scored on the same examples. Scaling is learned on the
training split alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnkit.data.config import DataConfig
from rnnkit.data.dataset import Sequences, check_classes, check_compatible
from rnnkit.data.sources import load_source
from rnnkit.errors import UserError


@dataclass(frozen=True)
class Scaler:
    """``x -> (x - mean) / std``, feature by feature; padding stays zero.

    Attributes:
        mean, std: float32 ``(F,)``.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, data: Sequences, how: str) -> Scaler:
        """Statistics of the valid steps of ``data``: one mean and deviation for
        all values (``'global'``), one per feature (``'feature'``), or none."""
        features = data.features
        if how == "none":
            return cls(np.zeros(features, np.float32), np.ones(features, np.float32))
        values = data.x.reshape(-1, features) if data.lengths is None else data.x[_valid(data)]
        axis = None if how == "global" else 0
        mean = np.broadcast_to(values.mean(axis=axis, dtype=np.float64), (features,))
        std = np.broadcast_to(values.std(axis=axis, dtype=np.float64), (features,))
        std = np.where(std > 1e-8, std, 1.0)  # a constant feature is only centred
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def __call__(self, data: Sequences) -> Sequences:
        x = (data.x - self.mean) / self.std
        if data.lengths is not None:
            x[~_valid(data)] = 0.0
        return data.with_x(x.astype(np.float32))


@dataclass(frozen=True)
class Splits:
    """The data of one run, and the scaler fitted on its training split.

    ``val`` is ``None`` when ``val_fraction`` is 0. ``num_classes`` is ``C``:
    labels are ``0..C-1``.
    """

    train: Sequences
    val: Sequences | None
    test: Sequences
    num_classes: int
    scaler: Scaler

    def scaled(self) -> Splits:
        """The three sets passed through :attr:`scaler`."""
        scale = self.scaler
        return Splits(
            scale(self.train), None if self.val is None else scale(self.val), scale(self.test),
            self.num_classes, scale,
        )


def prepare(config: DataConfig) -> Splits:
    """Load the data named by ``config``, split it, and fit its scaler.

    Raises:
        UserError: for unusable data (see :func:`rnnkit.data.make_sequences`),
            labels that are not ``0..C-1``, a single class, too few examples
            to split, or a test set that does not match the training data.
    """
    train, test, num_classes, advice = _train_and_test(config)
    val = None
    if config.val_fraction > 0:
        train, val = stratified_split(
            train, config.val_fraction, _rng(config, "val"), "validation", advice
        )
    return Splits(train, val, test, num_classes, Scaler.fit(train, config.normalize))


def prepare_test(config: DataConfig) -> Sequences:
    """The test set :func:`prepare` would give, without the validation split
    and the scaler it also makes (unscaled)."""
    return _train_and_test(config)[1]


def _train_and_test(config: DataConfig) -> tuple[Sequences, Sequences, int, str]:
    """``(train, test, num_classes, advice)``: the data named by ``config``,
    limited, with the test set split off unless the source has its own;
    ``advice`` ends the message of a split that is impossible."""
    source = load_source(config)
    num_classes = check_classes(source.train)
    train, test = source.train, source.test
    advice = "use more data or another fraction"
    if config.limit is not None:
        train = _sample(train, config.limit, _rng(config, "limit-train"))
        test = None if test is None else _sample(test, config.limit, _rng(config, "limit-test"))
        _check_limit(train, source.train, num_classes, config.limit)
        advice = "give a larger --limit"
    if test is None:
        train, test = stratified_split(
            train, config.test_fraction, _rng(config, "test"), "test", advice
        )
    else:  # a split of the training data needs no check
        check_compatible(test, train.features, num_classes, "test set")
    return train, test, num_classes, advice


def stratified_split(
    data: Sequences,
    fraction: float,
    rng: np.random.Generator,
    role: str,
    advice: str = "use more data or another fraction",
) -> tuple[Sequences, Sequences]:
    """``(rest, held_out)`` with ``round(fraction * N)`` examples held out, each
    class in proportion (largest remainders get the rounding) and every class
    keeping at least one example in ``rest``. ``advice`` ends the message when
    the split is impossible."""
    assert data.y is not None
    n = len(data)
    wanted = round(fraction * n)
    if wanted < 1 or wanted >= n:
        raise UserError(
            f"cannot hold out a {role} set of {fraction:g} of {n} examples from {data.source}; "
            f"{advice}"
        )
    classes, counts = np.unique(data.y, return_counts=True)
    share = fraction * counts
    take = np.minimum(np.floor(share).astype(int), counts - 1)
    short = wanted - take.sum()
    for index in np.argsort(-(share - take), kind="stable"):
        if short <= 0:
            break
        if take[index] < counts[index] - 1:
            take[index] += 1
            short -= 1
    if short > 0:
        raise UserError(
            f"cannot hold out a {role} set of {fraction:g} of {n} examples from {data.source} "
            f"and keep an example of each of its {len(classes)} classes for training; {advice}"
        )
    held: list[np.ndarray] = []
    for label, count in zip(classes, take):
        members = np.flatnonzero(data.y == label)
        held.append(rng.permutation(members)[:count])
    held_out = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(n), held_out)
    return data.subset(rest), data.subset(held_out)


def _check_limit(kept: Sequences, full: Sequences, num_classes: int, limit: int) -> None:
    """``--limit``'s random sample still has an example of every class (the
    full data has: :func:`check_classes` passed)."""
    assert kept.y is not None
    absent = num_classes - np.unique(kept.y).size
    if absent:
        raise UserError(
            f"--limit {limit} keeps too few examples per class: {len(kept)} of the "
            f"{len(full)} training examples of {full.source} leave {absent} of its "
            f"{num_classes} classes without an example; give a larger --limit "
            f"(say {min(10 * num_classes, len(full))})"
        )


def _sample(data: Sequences, limit: int, rng: np.random.Generator) -> Sequences:
    if len(data) <= limit:
        return data
    return data.subset(np.sort(rng.choice(len(data), limit, replace=False)))


def _rng(config: DataConfig, purpose: str) -> np.random.Generator:
    """An independent generator per purpose, all drawn from ``split_seed``."""
    return np.random.default_rng([config.split_seed, *purpose.encode()])


def _valid(data: Sequences) -> np.ndarray:
    """``(N, T)`` bool: the steps within each sequence's length."""
    assert data.lengths is not None
    return np.arange(data.steps)[None, :] < data.lengths[:, None]
