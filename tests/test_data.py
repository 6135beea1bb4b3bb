"""Data sources, checks, splits and scaling (rnnkit.data)."""

from __future__ import annotations

import gzip
import random
import struct

import numpy as np
import pytest

from rnnkit.data import (
    DataConfig, Scaler, absolute_paths, load_source, make_sequences, prepare, read_file,
)
from rnnkit.data.idx import read_idx
from rnnkit.errors import UserError

# -- helpers ---------------------------------------------------------------------

IDX_CODES = {np.dtype("uint8"): 0x08, np.dtype("int16"): 0x0B, np.dtype("float32"): 0x0D}


def write_idx(path, array, compress=False):
    """Write ``array`` in the IDX format (big-endian), optionally gzipped."""
    array = np.asarray(array)
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist(folder, train=30, test=10, compress=False, spelling="-idx"):
    """A tiny MNIST in ``folder``: 28x28 images whose brightest row is the label."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 50, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), labels * 2] = 255
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images{spelling}3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{prefix}-labels{spelling}1-ubyte{suffix}", labels.astype(np.uint8), compress)
    return folder


def npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def toy(n=40, t=5, f=3, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, t, f)), np.arange(n) % classes


# -- IDX -------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_idx_round_trip(tmp_path, compress, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == "uint8":
        array = np.abs(array).astype(dtype)
    read = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array, compress))
    np.testing.assert_array_equal(read, array)
    assert read.dtype.isnative


@pytest.mark.parametrize("content, message", [
    (b"", "not an IDX file"),
    (b"\x01\x02\x03\x04rest", "not an IDX file"),
    (bytes([0, 0, 0x08, 2]) + struct.pack(">I", 3), "cut short"),
    (bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + b"abc", r"announces shape \(5,\)"),
    (b"\x1f\x8b" + b"not really gzip", "cannot read"),
])
def test_idx_bad_files(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_idx(path)


# -- built-in sets ---------------------------------------------------------------


def test_digits_rows_are_steps():
    source = load_source(DataConfig())
    assert source.train.x.shape == (1797, 8, 8) and source.test is None
    assert source.train.x.dtype == np.float32 and source.train.y.dtype == np.int64
    assert set(source.train.y.tolist()) == set(range(10))


def test_mnist1d_generated_offline_leaves_global_generators_alone():
    np.random.seed(123)
    random.seed(123)
    expected_numpy, expected_python = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    source = load_source(DataConfig(data="mnist1d"))
    assert (np.random.random(), random.random()) == (expected_numpy, expected_python)
    assert source.train.x.shape == (4000, 40, 1) and source.test.x.shape == (1000, 40, 1)
    assert set(source.train.y.tolist()) == set(range(10))


@pytest.mark.parametrize("layout, compress, spelling", [
    ("", False, "-idx"),
    ("", True, "-idx"),
    ("MNIST/raw", True, "-idx"),
    ("", False, ".idx"),
])
def test_mnist_reader(tmp_path, layout, compress, spelling):
    write_mnist(tmp_path / layout, compress=compress, spelling=spelling)
    source = load_source(DataConfig(data="mnist", data_dir=str(tmp_path)))
    assert source.train.x.shape == (30, 28, 28) and source.test.x.shape == (10, 28, 28)
    assert source.train.x.max() == 1.0 and source.train.x.min() >= 0.0
    # the brightest row (step) of each image is twice its label
    np.testing.assert_array_equal(source.train.x.sum(2).argmax(1), 2 * source.train.y)


def test_mnist_missing_and_mismatched(tmp_path):
    with pytest.raises(UserError, match="no MNIST file train-images-idx3-ubyte"):
        load_source(DataConfig(data="mnist", data_dir=str(tmp_path)))
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(UserError, match="should hold 10 labels"):
        load_source(DataConfig(data="mnist", data_dir=str(tmp_path)))


# -- npz -------------------------------------------------------------------------


def test_npz_shapes_and_lengths(tmp_path):
    x, y = toy()
    data = read_file(npz(tmp_path / "d.npz", x=x, y=y), labelled=True)
    assert data.x.shape == (40, 5, 3) and data.lengths is None
    data = read_file(npz(tmp_path / "flat.npz", x=x[:, :, 0], y=y), labelled=True)
    assert data.x.shape == (40, 5, 1)

    lengths = np.arange(40) % 5 + 1
    x[np.arange(5)[None, :] >= lengths[:, None]] = np.nan  # padding may be anything
    data = read_file(npz(tmp_path / "var.npz", x=x, y=y, lengths=lengths), labelled=True)
    np.testing.assert_array_equal(data.lengths, lengths)
    assert np.isfinite(data.x).all() and data.x[0, 1:].sum() == 0


def test_npz_unlabelled_needs_no_y(tmp_path):
    x, _ = toy()
    assert read_file(npz(tmp_path / "x.npz", x=x), labelled=False).y is None


BAD_ARRAYS = [
    (dict(x=np.zeros((4, 2, 2, 2)), y=np.zeros(4)), r"shape \(N, T, F\) or \(N, T\), got shape \(4, 2, 2, 2\)"),
    (dict(x=np.zeros(4), y=np.zeros(4)), "got shape"),
    (dict(x=np.zeros((0, 3, 2)), y=np.zeros(0)), "holds no sequences"),
    (dict(x=np.zeros((4, 0, 2)), y=np.zeros(4)), "empty"),
    (dict(x=np.array([["a", "b"]] * 4), y=np.zeros(4)), "real numbers"),
    (dict(x=np.zeros((4, 3)), y=np.zeros(5)), r"labels .* shape \(4,\)"),
    (dict(x=np.zeros((4, 3)), y=np.zeros((4, 1))), r"labels .* shape \(4,\)"),
    (dict(x=np.zeros((4, 3)), y=np.array([0, 1, 1.5, 0])), "must be integers, got 1.5"),
    (dict(x=np.zeros((4, 3)), y=np.array([0, 1, -1, 0])), "integers 0..C-1, got -1"),
    (dict(x=np.zeros((4, 3)), y=np.array([0, 1, np.nan, 0])), "must be integers, got nan"),
    (dict(x=np.zeros((4, 3)), y=np.array([0, 1, 2**63, 0], dtype=np.uint64)), "64-bit integers, got 9223372036854775808"),
    (dict(x=np.array([[0.0, np.nan, 1]] * 4), y=np.zeros(4)), r"NaN/inf .* sequence 0, step 1"),
    (dict(x=np.array([[0.0, 1, np.inf]] * 4), y=np.zeros(4)), "NaN/inf"),
    (dict(x=np.zeros((4, 3)), y=np.zeros(4), lengths=np.array([1, 2, 4, 1])), r"lengths .* must be in 1..3 .*got 4"),
    (dict(x=np.zeros((4, 3)), y=np.zeros(4), lengths=np.array([1, 0, 1, 1])), r"lengths .* got 0"),
    (dict(x=np.zeros((4, 3)), y=np.zeros(4), lengths=np.ones(3)), r"lengths .* shape \(4,\)"),
]


@pytest.mark.parametrize("arrays, message", BAD_ARRAYS)
def test_npz_bad_arrays(tmp_path, arrays, message):
    with pytest.raises(UserError, match=message):
        read_file(npz(tmp_path / "bad.npz", **arrays), labelled=True)


def test_npz_bad_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_file(tmp_path / "missing.npz", labelled=True)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(UserError, match="cannot read .* as a NumPy .npz archive"):
        read_file(tmp_path / "junk.npz", labelled=True)
    # numpy would read these as pickles and blame allow_pickle
    for name, content, found in (("text.npz", b"x,y\n1,2\n", "starts with b'x,y"),
                                 ("empty.npz", b"", "the file is empty")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=f"not a zip archive of .npy arrays.*{found}") as error:
            read_file(tmp_path / name, labelled=True)
        assert "pickle" not in str(error.value)
    np.savez(tmp_path / "noy.npz", x=np.zeros((3, 2)))
    with pytest.raises(UserError, match="no array 'y'"):
        read_file(tmp_path / "noy.npz", labelled=True)
    np.savez(tmp_path / "objects.npz", x=np.array([[1], [1, 2]], dtype=object), y=np.zeros(2))
    with pytest.raises(UserError, match="cannot read"):
        read_file(tmp_path / "objects.npz", labelled=True)
    np.save(tmp_path / "single.npz", np.zeros(3))
    (tmp_path / "single.npz.npy").rename(tmp_path / "single.npz")
    with pytest.raises(UserError, match="a single array"):
        read_file(tmp_path / "single.npz", labelled=True)
    with pytest.raises(UserError, match="expected a .npz or .csv file"):
        read_file(tmp_path / "data.txt", labelled=True)


# -- CSV -------------------------------------------------------------------------


def write(path, text):
    path.write_text(text)
    return path


def test_csv_headerless_label_first_with_ragged_rows(tmp_path):
    data = read_file(write(tmp_path / "d.csv", "1,0.5,0.25,3\n0,1,2\n\n2,7,,\n"), labelled=True)
    np.testing.assert_array_equal(data.y, [1, 0, 2])
    np.testing.assert_array_equal(data.lengths, [3, 2, 1])
    np.testing.assert_array_equal(data.x[:, :, 0], [[0.5, 0.25, 3], [1, 2, 0], [7, 0, 0]])


def test_csv_header_names_label_column_and_features_per_step(tmp_path):
    path = write(tmp_path / "d.csv", "a0,b0,a1,b1,label\n1,2,3,4,1\n5,6,,,0\n")
    data = read_file(path, labelled=True, csv_features=2)
    np.testing.assert_array_equal(data.y, [1, 0])
    assert data.x.shape == (2, 2, 2)
    np.testing.assert_array_equal(data.x[0], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(data.lengths, [2, 1])
    unlabelled = read_file(path, labelled=False, csv_features=2)
    assert unlabelled.y is None and unlabelled.x.shape == (2, 2, 2)
    # without a header and labels, every column is a value
    assert read_file(write(tmp_path / "x.csv", "1,2,3\n"), labelled=False).x.shape == (1, 3, 1)


# (file, labelled, labels read, values of the first sequence): which first rows are headers
CSV_HEADERS = [
    ("label,a,b\n1,2,3\n0,4,5\n", True, [1, 0], [2, 3]),
    ("a,b,Y\n2,3,1\n4,5,0\n", True, [1, 0], [2, 3]),
    ("label,0,1\n1,2,3\n0,4,5\n", True, [1, 0], [2, 3]),     # numbered columns, as pandas writes
    ("\ufefflabel,a,b\n1,2,3\n0,4,5\n", True, [1, 0], [2, 3]),  # Excel's CSV UTF-8: a BOM
    ("1,2,3\n0,4,5\n", True, [1, 0], [2, 3]),                  # no header
    ("1,0.126,7\n0,4,5\n", False, None, [1, 0.126, 7]),        # the first row is data, kept
    ("t0,t1,t2\n1,2,3\n", False, None, [1, 2, 3]),             # mostly words: a header
    ("label,t0,t1\n1,2,3\n", False, None, [2, 3]),             # the label column is skipped
    ("\ufeff1,2,3\n", False, None, [1, 2, 3]),
]


@pytest.mark.parametrize("text, labelled, labels, first", CSV_HEADERS)
def test_csv_header_rule(tmp_path, text, labelled, labels, first):
    path = tmp_path / "d.csv"
    path.write_text(text, encoding="utf-8")
    data = read_file(path, labelled=labelled)
    assert (None if data.y is None else data.y.tolist()) == labels
    np.testing.assert_allclose(data.x[0, :, 0], first)


@pytest.mark.parametrize("text, features, message", [
    ("", 1, "empty"),
    ("a,b,label\n", 1, "only a header"),
    ("a,b,c\n1,2,3\n", 1, r"first row of .* looks like a header \(a, b, c\) but names no label column"),
    ("0,1\n1,2,x\n", 1, "line 2, column 3 of .*: 'x' is not a number"),
    # string labels, or a typo in the first row: errors naming the cell, never a header
    ("cat,0.1,0.2\ndog,0.3,0.4\n", 1, r"line 1, column 1 of .*: the label 'cat' is not a number \(labels are class numbers"),
    ("1,0.126,O.5\n0,0.3,0.4\n", 1, "line 1, column 3 of .*: 'O.5' is not a number"),
    ("a,label,b\n1,x,2\n", 1, "line 2, column 2 of .*: the label 'x'"),
    ("label,a,b\n1,2,x\n", 1, "line 2, column 3 of .*: 'x'"),
    ("a,label,b\n1,1,x\n", 1, "line 2, column 3 of .*: 'x'"),
    ("1,2,,3\n", 1, "empty cell before its last value"),
    ("1,2,3,4\n", 2, "3 values, not a whole number of steps of --csv-features 2"),
    ("1\n", 1, "line 1 .* has no values"),
    ("0,1\n,2\n", 1, "line 2 .* has no label"),
    ("0,1\n0.5,2\n", 1, "must be integers, got 0.5"),
    ("0,1\n1,nan\n", 1, "NaN/inf"),
])
def test_csv_bad(tmp_path, text, features, message):
    with pytest.raises(UserError, match=message):
        read_file(write(tmp_path / "bad.csv", text), labelled=True, csv_features=features)


@pytest.mark.parametrize("text, message", [
    ("1,0.126,O.5\n0,0.3,0.4\n", "line 1, column 3 of .*: 'O.5' is not a number"),
    ("x,1,2\n3,4,5\n", "line 1, column 1 of .*: 'x' is not a number"),
])
def test_csv_unlabelled_first_row_is_never_dropped(tmp_path, text, message):
    """Input to predict: a first row with a typo is an error, not a header."""
    with pytest.raises(UserError, match=message):
        read_file(write(tmp_path / "in.csv", text), labelled=False)


# -- classes, splits, scaling ----------------------------------------------------


@pytest.mark.parametrize("labels, message", [
    (np.zeros(10), "single class"),
    (np.array([0, 1, 3] * 4), r"labels go up to 3 but 1 of those 4 classes never occurs \(2\)"),
    (np.array([0, 2, 4, 6, 8, 10, 12, 14] * 2), r"never occur \(1, 3, 5, 7, 9 and 2 more\)"),
    # a huge label is refused without building anything of its size
    (np.array([0, 1, 10**9]), r"the largest label is 1000000000 \(sequence 2\), which would "
                              r"make 1000000001 classes for 3 examples"),
    (np.array([0, 1, 2**62] * 5), "which would make 4611686018427387905 classes for 15 examples"),
])
def test_class_checks(tmp_path, labels, message):
    path = npz(tmp_path / "d.npz", x=np.zeros((len(labels), 3)), y=labels)
    with pytest.raises(UserError, match=message):
        prepare(DataConfig(data=str(path)))


def test_split_is_stratified_disjoint_and_seeded(tmp_path):
    x, y = toy(n=100, classes=4)
    x[:, 0, 0] = np.arange(100)  # identify each sequence
    path = npz(tmp_path / "d.npz", x=x, y=y)
    splits = prepare(DataConfig(data=str(path), test_fraction=0.2, val_fraction=0.25))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (60, 20, 20)
    ids = [set(s.x[:, 0, 0].tolist()) for s in (splits.train, splits.val, splits.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert np.bincount(splits.test.y).tolist() == [5, 5, 5, 5]
    again = prepare(DataConfig(data=str(path), test_fraction=0.2, val_fraction=0.25))
    np.testing.assert_array_equal(again.test.x, splits.test.x)
    other = prepare(DataConfig(data=str(path), split_seed=1, test_fraction=0.2, val_fraction=0.25))
    assert set(other.test.x[:, 0, 0].tolist()) != ids[2]
    assert prepare(DataConfig(data=str(path), val_fraction=0)).val is None


def test_a_split_that_would_leave_a_class_without_training_examples_is_refused(tmp_path):
    x, y = toy(n=20, classes=10)
    path = npz(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(UserError, match="cannot hold out a validation set .* each of its 10 classes"):
        prepare(DataConfig(data=str(path), test_fraction=0.5))
    with pytest.raises(UserError, match="cannot hold out a test set of 0.999 of 1797 examples from digits"):
        prepare(DataConfig(test_fraction=0.999))


def test_limit_and_separate_test_file(tmp_path):
    x, y = toy(n=100)
    train, test = npz(tmp_path / "a.npz", x=x, y=y), npz(tmp_path / "b.npz", x=x[:30], y=y[:30])
    splits = prepare(DataConfig(data=str(train), test_data=str(test), limit=40, val_fraction=0.25))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 30)
    wrong = npz(tmp_path / "c.npz", x=x[:30, :, :2], y=y[:30])
    with pytest.raises(UserError, match="test set .* has 2 features per step, but the model reads 3"):
        prepare(DataConfig(data=str(train), test_data=str(wrong)))
    beyond = npz(tmp_path / "e.npz", x=x[:30], y=y[:30] + 4)
    with pytest.raises(UserError, match="label 7, but the model knows classes 0..3"):
        prepare(DataConfig(data=str(train), test_data=str(beyond)))
    with pytest.raises(UserError, match="cannot hold out"):
        prepare(DataConfig(data=str(train), test_fraction=0.004))


@pytest.mark.parametrize("limit, message", [
    # digits, 10 classes: the sample misses some, and the data is not to blame
    (12, r"--limit 12 keeps too few examples per class: 12 of the 1797 training examples of "
         r"digits leave \d+ of its 10 classes without an example; give a larger --limit \(say 100\)"),
    (2, "--limit 2 keeps too few examples per class"),
])
def test_small_limit_blames_the_limit(limit, message):
    with pytest.raises(UserError, match=message):
        prepare(DataConfig(limit=limit))


def test_limit_counts_all_examples_without_a_test_split_and_each_split_with_one(tmp_path):
    digits = prepare(DataConfig(limit=200))
    assert len(digits.train) + len(digits.val) + len(digits.test) == 200
    x, y = toy(n=100)
    own = dict(data=str(npz(tmp_path / "a.npz", x=x, y=y)), test_data=str(npz(tmp_path / "b.npz", x=x, y=y)))
    splits = prepare(DataConfig(**own, limit=50))
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (50, 50)


def test_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = absolute_paths(DataConfig(data="sub/a.npz", data_dir="data", test_data="../b.csv"))
    assert config.data == str(tmp_path.resolve() / "sub" / "a.npz")
    assert config.data_dir == str(tmp_path.resolve() / "data")
    assert config.test_data == str(tmp_path.resolve().parent / "b.csv")
    assert absolute_paths(DataConfig(data="digits")).data == "digits"


def test_unknown_data_name():
    with pytest.raises(UserError, match="--data should be digits, mnist1d, mnist, or a .npz or .csv file"):
        load_source(DataConfig(data="cifar"))


@pytest.mark.parametrize("how", ["global", "feature", "none"])
def test_scaler_learns_valid_steps_and_keeps_padding_zero(how):
    x = np.array([[[1.0, 10], [3, 30]], [[5, 50], [99, 99]]])
    data = make_sequences(x, np.array([0, 1]), np.array([2, 1]), source="t")
    scaler = Scaler.fit(data, how)
    valid = np.array([[1.0, 10], [3, 30], [5, 50]])
    if how == "global":
        np.testing.assert_allclose(scaler.mean, [valid.mean()] * 2, rtol=1e-6)
    elif how == "feature":
        np.testing.assert_allclose(scaler.mean, valid.mean(0), rtol=1e-6)
        np.testing.assert_allclose(scaler.std, valid.std(0), rtol=1e-6)
    else:
        np.testing.assert_array_equal(scaler.mean, [0, 0])
    scaled = scaler(data)
    assert scaled.x[1, 1].tolist() == [0, 0]
    assert scaled.x.dtype == np.float32


def test_data_config_checks():
    for bad in (dict(test_fraction=0), dict(val_fraction=1), dict(csv_features=0), dict(limit=1)):
        with pytest.raises(UserError):
            DataConfig(**bad)
