"""The run directory: everything one training run leaves behind.

::

    runs/digits-rnn-20260101-120000/
        config.json      the configuration, data sizes, processes, commands
        metrics.csv      one row per epoch: losses, accuracies, learning rate, seconds
        metrics.json     the same rows as a JSON list
        last.pt          the latest epoch (with optimiser state, for --resume)
        best.pt          the epoch of best validation accuracy
        results.json     the test scores of best.pt, with the confusion matrix
        curves.png       loss and accuracy per epoch
        confusion.png    the test confusion matrix
        samples.png      test sequences with predicted and true labels

Only the main process writes. Every file is replaced atomically, so an
interrupted run leaves complete files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from rnnkit.errors import UserError

RUN_FILES = (
    "config.json", "metrics.csv", "metrics.json", "last.pt", "best.pt",
    "results.json", "curves.png", "confusion.png", "samples.png",
)
"""The files a run writes; ``--overwrite`` removes these and nothing else."""

RUNS_ROOT = Path("runs")
"""Where runs go when ``--out`` is not given."""


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @staticmethod
    def default_path(data: str, cell: str) -> Path:
        """``runs/<data>-<cell>-<date>-<time>``, with a suffix if that exists."""
        stem = f"{Path(data).stem}-{cell}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, number = RUNS_ROOT / stem, 2
        while path.exists():
            path, number = RUNS_ROOT / f"{stem}-{number}", number + 1
        return path

    @classmethod
    def check_new(cls, path: str | Path, overwrite: bool) -> RunDir:
        """A directory a new run may use: absent, empty, or a run to replace
        when ``overwrite``."""
        run = cls(path)
        with _reported(f"cannot use {run.path} as the run directory"):
            if run.path.exists() and not run.path.is_dir():
                raise UserError(f"--out {run.path} is a file, not a directory")
            used = run.path.is_dir() and any(run.path.iterdir())
        if used and not overwrite and not run.holds_run():
            raise UserError(
                f"{run.path} is not empty and holds no rnnkit run; choose another --out, "
                f"or add --overwrite to write the run there (only rnnkit's files are replaced)"
            )
        if used and not overwrite:
            raise UserError(
                f"run directory {run.path} already exists; choose another --out, add "
                f"--overwrite to replace it, or continue it with --resume {run.path}"
            )
        return run

    def holds_run(self) -> bool:
        """Whether an rnnkit run was written here: it has a ``last.pt``, written
        before the first epoch."""
        return (self / "last.pt").is_file()

    @classmethod
    def existing(cls, path: str | Path) -> RunDir:
        """A directory written by an earlier run."""
        run = cls(path)
        if not run.path.is_dir():
            raise UserError(f"no run directory at {run.path}")
        if not run.holds_run():
            raise UserError(f"{run.path} is not an rnnkit run directory (it has no last.pt)")
        return run

    def create(self) -> None:
        """Make the directory, removing the files of an earlier run in it."""
        with _reported(f"cannot create the run directory {self.path}"):
            self.path.mkdir(parents=True, exist_ok=True)
            for name in RUN_FILES:
                (self / name).unlink(missing_ok=True)

    def description(self) -> dict[str, Any]:
        """The contents of ``config.json``; empty when it is missing or unreadable."""
        try:
            value = json.loads((self / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def write_json(self, name: str, value: Any) -> None:
        self._write_text(name, json.dumps(value, indent=2) + "\n")

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """``metrics.csv`` and ``metrics.json`` from the per-epoch rows."""
        self.write_json("metrics.json", history)
        text = io.StringIO()
        if history:
            writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(history)
        self._write_text("metrics.csv", text.getvalue())

    def _write_text(self, name: str, text: str) -> None:
        write_atomically(self / name, lambda partial: partial.write_text(text, encoding="utf-8"))


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a file next to ``path``, then rename it to ``path``: readers
    (and a run stopped mid-write) only ever see a whole file.

    Raises:
        UserError: the file cannot be written (no such folder, no permission,
            a full disk...), with the path and the reason.
    """
    partial = path.with_name(path.name + ".partial")
    with _reported(f"cannot write {path}"):
        try:
            write(partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _reported(what: str) -> Iterator[None]:
    """Turn an ``OSError`` into a one-line :class:`UserError`: ``what``, then the reason."""
    try:
        yield
    except OSError as error:
        raise UserError(f"{what}: {error.strerror or error}") from None
