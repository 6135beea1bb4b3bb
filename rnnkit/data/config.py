"""The data configuration: which sequences to learn from, how to split and scale them."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.errors import UserError


@dataclass
class DataConfig:
    """Data: where the sequences come from and how they are split and scaled."""

    data: str = field(default="digits", metadata={
        "metavar": "NAME|FILE",
        "help": "digits (scikit-learn's 8x8 digits, read row by row: 8 steps x 8 features), "
                "mnist1d (MNIST-1D, generated offline: 40 steps x 1 feature), "
                "mnist (the original IDX files from --data-dir: 28 steps x 28 features), "
                "or your own .npz or .csv file (see the README)",
    })
    data_dir: str = field(default="data", metadata={
        "metavar": "DIR",
        "help": "folder with the MNIST IDX files (train-images-idx3-ubyte[.gz] and the other "
                "three), directly or in torchvision's MNIST/raw/ layout",
    })
    test_data: str | None = field(default=None, metadata={
        "metavar": "FILE",
        "help": "a separate .npz/.csv test set for your own data; without it, "
                "--test-fraction of --data is held out",
    })
    csv_features: int = field(default=1, metadata={
        "metavar": "F",
        "help": "features per step in CSV rows: a row's values are read F at a time, step "
                "after step; empty trailing cells make a row a shorter sequence",
    })
    test_fraction: float = field(default=0.2, metadata={
        "help": "share of the examples held out for the final test when the data set has "
                "no test split of its own",
    })
    val_fraction: float = field(default=0.1, metadata={
        "help": "share of the training examples held out to select the best epoch and to "
                "stop early (0: no validation; the last epoch is kept)",
    })
    split_seed: int = field(default=0, metadata={
        "help": "seed of the test and validation splits (and of --limit), kept apart from "
                "--seed so that runs with different seeds are scored on the same examples",
    })
    normalize: str = field(default="global", metadata={
        "choices": ("global", "feature", "none"),
        "help": "scaling learned on the training split: global (one mean and standard "
                "deviation for all values, right for pixels), feature (one per feature, "
                "for features of different units), or none",
    })
    limit: int | None = field(default=None, metadata={
        "metavar": "N",
        "help": "for quick trials, keep a random N examples before splitting: N in all "
                "(then split into test, validation and training) for a set without a test "
                "split of its own (digits, your file without --test-data), N training and "
                "N test examples for a set with one (mnist, mnist1d, --test-data)",
    })

    def __post_init__(self) -> None:
        if self.csv_features < 1:
            raise UserError(f"--csv-features must be at least 1, got {self.csv_features}")
        if not 0 < self.test_fraction < 1:
            raise UserError(
                f"--test-fraction must be between 0 and 1 (exclusive), got {self.test_fraction}"
            )
        if not 0 <= self.val_fraction < 1:
            raise UserError(
                f"--val-fraction must be in [0, 1), got {self.val_fraction}"
            )
        if self.limit is not None and self.limit < 2:
            raise UserError(f"--limit must be at least 2, got {self.limit}")
