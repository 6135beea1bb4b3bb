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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from rnnkit.data.config import DataConfig
from rnnkit.data.dataset import Sequences, make_sequences, plural
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


def absolute_paths(config: DataConfig) -> DataConfig:
    """``config`` with its files and folder as absolute paths (symbolic links
    resolved), so that a run saved with it reads the same data from any
    working directory."""
    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    return replace(
        config,
        data=config.data if config.data in BUILTIN else absolute(config.data),
        data_dir=absolute(config.data_dir),
        test_data=None if config.test_data is None else absolute(config.test_data),
    )


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


_ZIP_MAGIC = b"PK"
_NPY_MAGIC = b"\x93NUMPY"
"""The first bytes of a zip archive (an ``.npz``) and of a single ``.npy`` array."""


def read_npz(path: Path, labelled: bool, csv_features: int) -> Sequences:
    """A NumPy archive with ``x`` ``(N, T, F)`` or ``(N, T)``, ``y`` ``(N,)`` integer
    labels, and optionally ``lengths`` ``(N,)`` for variable-length sequences
    (``x`` padded to the longest). ``csv_features`` is not used."""
    try:
        # np.load is given an open file so that it is closed even when numpy fails
        with path.open("rb") as handle:
            start = handle.read(len(_NPY_MAGIC))
            handle.seek(0)
            if not (start.startswith(_ZIP_MAGIC) or start == _NPY_MAGIC):
                # numpy would try it as a pickle and blame allow_pickle
                found = f"it starts with {start!r}" if start else "the file is empty"
                raise ValueError(
                    f"it is not a zip archive of .npy arrays, as numpy.savez writes ({found})"
                )
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
    every column is a value). The first row is a header when it names a label
    column (``label`` or ``y``: no data row can hold that cell), or, for
    unlabelled data, when most of its cells are not numbers; the named label
    column then holds the labels wherever it stands, and is skipped when
    ``labelled`` is false. Any other first row is data, and a cell in it that
    is not a number is an error, as in every other row: no row is ever
    dropped unread. A UTF-8 byte order mark (Excel's "CSV UTF-8") is skipped.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(_numbered(csv.reader(handle)))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read {path} as CSV: {error}") from None
    if not rows:
        raise UserError(f"{path} holds no sequences (the file is empty)")

    label_column: int | None = 0 if labelled else None
    header = [cell.strip().lower() for cell in rows[0][1]]
    named = next((header.index(name) for name in LABEL_COLUMNS if name in header), None)
    filled = [cell for cell in header if cell]
    mostly_words = sum(not _is_number(cell) for cell in filled) > len(filled) / 2
    if labelled and named is None and mostly_words:
        raise UserError(
            f"the first row of {path} looks like a header ({', '.join(filled[:6])}"
            f"{', ...' * (len(filled) > 6)}) but names no label column; name it "
            f"{' or '.join(map(repr, LABEL_COLUMNS))}, or remove the header"
        )
    if named is not None or (not labelled and mostly_words):
        rows, label_column = rows[1:], named
        if not rows:
            raise UserError(f"{path} holds no sequences (only a header)")

    labels, sequences = [], []
    for line, row in rows:
        cells = [(column, cell.strip()) for column, cell in enumerate(row, 1)]
        if label_column is not None:
            if label_column >= len(cells) or not cells[label_column][1]:
                raise UserError(f"line {line} of {path} has no label")
            column, label = cells.pop(label_column)
            if labelled:
                labels.append(_number(
                    label, line, column, path, "the label ", " (labels are class numbers 0..C-1)"
                ))
        while cells and not cells[-1][1]:
            cells.pop()
        if not cells:
            raise UserError(f"line {line} of {path} has no values")
        if any(not cell for _, cell in cells):
            raise UserError(
                f"line {line} of {path} has an empty cell before its last value; only "
                "trailing cells may be empty (a shorter sequence)"
            )
        if len(cells) % csv_features:
            raise UserError(
                f"line {line} of {path} has {plural(len(cells), 'value')}, not a whole number of "
                f"steps of --csv-features {csv_features}"
            )
        sequences.append([_number(cell, line, column, path) for column, cell in cells])

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


def _number(
    text: str, line: int, column: int, path: Path, what: str = "", hint: str = ""
) -> float:
    """The number in a cell; ``what`` names the cell in the message (``'the label '``)
    and ``hint`` ends it."""
    try:
        return float(text)
    except ValueError:
        raise UserError(
            f"line {line}, column {column} of {path}: {what}{text!r} is not a number{hint}"
        ) from None


READERS: dict[str, Callable[[Path, bool, int], Sequences]] = {".npz": read_npz, ".csv": read_csv}
"""The reader of each file suffix."""
