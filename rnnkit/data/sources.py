"""Where sequences come from: the built-in sets and the user's own files.

Built-in sets are named by ``--data``: ``digits`` (scikit-learn's bundled 8x8
digits), ``mnist1d`` (generated offline by the ``mnist1d`` package) and
``mnist`` (the original IDX files). Any other ``--data`` is a ``.npz`` or
``.csv`` file read by :func:`read_file`. Nothing here touches the network.
"""

from __future__ import annotations

import csv
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rnnkit.data.config import DataConfig
from rnnkit.data.dataset import Sequences, make_sequences
from rnnkit.data.idx import read_idx
from rnnkit.errors import UserError


@dataclass(frozen=True)
class Source:
    """A data set as it is shipped: training examples, and the test set when
    the data set fixes one (``None``: one is held out of ``train``)."""

    train: Sequences
    test: Sequences | None


def load_source(config: DataConfig) -> Source:
    """The built-in set or the user's files named by ``config``."""
    if config.data in BUILTIN:
        if config.test_data is not None:
            raise UserError(
                f"--test-data is for your own .npz/.csv data; {config.data} has a fixed "
                "test set or holds one out by --test-fraction"
            )
        return BUILTIN[config.data](config)
    if Path(config.data).suffix.lower() not in READERS:
        raise UserError(
            f"--data should be {', '.join(BUILTIN)}, or a {' or '.join(READERS)} file; "
            f"got {config.data!r}"
        )
    train = read_file(config.data, labelled=True, csv_features=config.csv_features)
    test = None
    if config.test_data is not None:
        test = read_file(config.test_data, labelled=True, csv_features=config.csv_features)
    return Source(train, test)


# -- built-in sets -------------------------------------------------------------


def load_digits(config: DataConfig) -> Source:
    """scikit-learn's 1797 8x8 digit images, pixel values 0..16, read row by
    row: 8 steps of 8 features. No fixed test set."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return Source(make_sequences(bunch.images, bunch.target, source="digits"), None)


def load_mnist1d(config: DataConfig) -> Source:
    """MNIST-1D with its authors' default arguments: 4000 training and 1000
    test sequences of 40 steps, one feature, generated offline."""
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset seeds the global numpy and Python generators; leave them as found.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return Source(
        make_sequences(data["x"], data["y"], source="mnist1d"),
        make_sequences(data["x_test"], data["y_test"], source="mnist1d test"),
    )


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""The four IDX files of MNIST, by their original names."""


def load_mnist(config: DataConfig) -> Source:
    """MNIST's 60000 training and 10000 test images from ``config.data_dir``,
    pixels scaled to 0..1, read row by row: 28 steps of 28 features."""
    folder = Path(config.data_dir)
    files = {role: _find_mnist_file(folder, name) for role, name in MNIST_FILES.items()}

    def split(images_role: str, labels_role: str, name: str) -> Sequences:
        images, labels = read_idx(files[images_role]), read_idx(files[labels_role])
        if images.ndim != 3:
            raise UserError(
                f"{files[images_role]} should hold images (N, rows, columns), got shape {images.shape}"
            )
        if labels.shape != images.shape[:1]:
            raise UserError(
                f"{files[labels_role]} should hold {images.shape[0]} labels, one per image "
                f"of {files[images_role].name}, got shape {labels.shape}"
            )
        return make_sequences(images.astype(np.float32) / 255.0, labels, source=name)

    return Source(
        split("train_images", "train_labels", "mnist"),
        split("test_images", "test_labels", "mnist test"),
    )


def _find_mnist_file(folder: Path, name: str) -> Path:
    """``name`` in ``folder`` or ``folder/MNIST/raw``, plain or ``.gz``, also
    spelled with a dot before ``idx`` as some mirrors do."""
    spellings = (name, name.replace("-idx", ".idx"))
    for directory in (folder, folder / "MNIST" / "raw"):
        for spelling in spellings:
            for candidate in (directory / spelling, directory / f"{spelling}.gz"):
                if candidate.is_file():
                    return candidate
    raise UserError(
        f"no MNIST file {name}[.gz] in {folder} or {folder / 'MNIST' / 'raw'}; put the four "
        f"IDX files ({', '.join(MNIST_FILES.values())}) there or give --data-dir"
    )


BUILTIN: dict[str, Callable[[DataConfig], Source]] = {
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "mnist": load_mnist,
}
"""The data sets named by ``--data``, each a loader of a :class:`DataConfig`."""


# -- the user's files ----------------------------------------------------------


def read_file(path: str | Path, *, labelled: bool, csv_features: int = 1) -> Sequences:
    """The sequences in a ``.npz`` or ``.csv`` file (see :func:`read_npz` and
    :func:`read_csv`). With ``labelled=False`` labels are not read, even when present."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UserError(f"{path}: expected a {' or '.join(READERS)} file")
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    return reader(path, labelled, csv_features)


def read_npz(path: Path, labelled: bool, csv_features: int) -> Sequences:
    """A NumPy archive with ``x`` ``(N, T, F)`` or ``(N, T)``, ``y`` ``(N,)`` integer
    labels, and optionally ``lengths`` ``(N,)`` for variable-length sequences
    (``x`` padded to the longest). ``csv_features`` is not used."""
    try:
        # np.load is given an open file so that it is closed even when numpy fails
        with path.open("rb") as handle:
            archive = np.load(handle, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not named arrays")
            with archive:
                arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"cannot read {path} as a NumPy .npz archive: {error}") from None
    needed = ("x", "y") if labelled else ("x",)
    for name in needed:
        if name not in arrays:
            raise UserError(
                f"{path} has no array {name!r} (it holds: {', '.join(arrays) or 'nothing'}); "
                "expected x (N, T, F), y (N,) and optionally lengths (N,)"
            )
    return make_sequences(
        arrays["x"], arrays["y"] if labelled else None, arrays.get("lengths"), source=path.name
    )


LABEL_COLUMNS = ("label", "y")
"""Header names that mark a CSV file's label column."""


def read_csv(path: Path, labelled: bool, csv_features: int) -> Sequences:
    """One sequence per row: the label, then the values of step 0 (``csv_features``
    of them), step 1, and so on. Rows may end early (fewer cells, or empty
    trailing cells): those are shorter sequences.

    Without a header the label is the first column (when ``labelled``; else
    every column is a value). A first row with any non-numeric cell is a header,
    and then the column named ``label`` (or ``y``) holds the labels, wherever it
    stands, and is skipped when ``labelled`` is false.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(_numbered(csv.reader(handle)))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read {path} as CSV: {error}") from None
    if not rows:
        raise UserError(f"{path} holds no sequences (the file is empty)")

    label_column: int | None = 0 if labelled else None
    if not all(_is_number(cell) for cell in rows[0][1] if cell.strip()):
        header = [cell.strip().lower() for cell in rows[0][1]]
        rows = rows[1:]
        label_column = next((header.index(n) for n in LABEL_COLUMNS if n in header), None)
        if labelled and label_column is None:
            raise UserError(
                f"the header of {path} names no label column ({' or '.join(LABEL_COLUMNS)}); "
                f"columns: {', '.join(header)}"
            )
        if not rows:
            raise UserError(f"{path} holds no sequences (only a header)")

    labels, sequences = [], []
    for line, row in rows:
        cells = [cell.strip() for cell in row]
        if label_column is not None:
            if label_column >= len(cells) or not cells[label_column]:
                raise UserError(f"line {line} of {path} has no label")
            label = cells.pop(label_column)
            if labelled:
                labels.append(_number(label, line, path))
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            raise UserError(f"line {line} of {path} has no values")
        if "" in cells:
            raise UserError(
                f"line {line} of {path} has an empty cell before its last value; only "
                "trailing cells may be empty (a shorter sequence)"
            )
        if len(cells) % csv_features:
            raise UserError(
                f"line {line} of {path} has {len(cells)} values, not a whole number of "
                f"steps of --csv-features {csv_features}"
            )
        sequences.append([_number(cell, line, path) for cell in cells])

    steps = max(len(values) for values in sequences) // csv_features
    x = np.zeros((len(sequences), steps * csv_features), np.float64)
    lengths = np.array([len(values) // csv_features for values in sequences])
    for n, values in enumerate(sequences):
        x[n, : len(values)] = values
    return make_sequences(
        x.reshape(len(sequences), steps, csv_features),
        np.array(labels) if labelled else None,
        lengths,
        source=path.name,
    )


def _numbered(reader):
    """``(line, row)`` for each non-blank row of a ``csv.reader``."""
    for row in reader:
        if any(cell.strip() for cell in row):
            yield reader.line_num, row


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(text: str, line: int, path: Path) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"line {line} of {path}: {text!r} is not a number") from None


READERS: dict[str, Callable[[Path, bool, int], Sequences]] = {".npz": read_npz, ".csv": read_csv}
"""The reader of each file suffix."""
