"""Data for the sequence classifier: sources, checks, splits and scaling.

* :mod:`~rnnkit.data.config` — :class:`DataConfig`, the data options of a run.
* :mod:`~rnnkit.data.dataset` — :class:`Sequences` (``x (N, T, F)``, ``y (N,)``,
  ``lengths``) and the checks every source goes through.
* :mod:`~rnnkit.data.sources` — the built-in sets and the ``.npz``/``.csv`` readers.
* :mod:`~rnnkit.data.idx` — the MNIST IDX reader.
* :mod:`~rnnkit.data.splits` — train/validation/test splits and :class:`Scaler`.
"""

from rnnkit.data.config import DataConfig
from rnnkit.data.dataset import Sequences, check_compatible, make_sequences
from rnnkit.data.sources import BUILTIN, Source, absolute_paths, load_source, read_file
from rnnkit.data.splits import Scaler, Splits, prepare

__all__ = [
    "BUILTIN",
    "DataConfig",
    "Scaler",
    "Sequences",
    "Source",
    "Splits",
    "absolute_paths",
    "check_compatible",
    "load_source",
    "make_sequences",
    "prepare",
    "read_file",
]
