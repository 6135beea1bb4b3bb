"""The configuration of a training run: data, model and optimisation, each a dataclass.

The command line is built from these fields (one flag per field, see
:mod:`rnnkit.cli.options`); a run saves :meth:`RunConfig.to_dict` in its
``config.json`` and in every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rnnkit.data.config import DataConfig
from rnnkit.errors import UserError, flag
from rnnkit.kinds import CELLS

READOUTS = ("last", "mean", "max")
"""How the per-step outputs become one feature vector per sequence."""


@dataclass
class ModelConfig:
    """Model: a recurrent layer reads each sequence, a linear layer picks its class."""

    cell: str = field(default="rnn", metadata={
        "choices": tuple(CELLS),
        "help": "recurrent cell type",
    })
    hidden_size: int = field(default=128, metadata={
        "help": "features in the hidden state h, H_out",
    })
    num_layers: int = field(default=1, metadata={
        "help": "stacked recurrent layers; layer k+1 reads layer k's outputs",
    })
    nonlinearity: str = field(default="tanh", metadata={
        "choices": ("tanh", "relu"),
        "help": "the RNN cell's activation (--cell rnn only)",
    })
    bias: bool = field(default=True, metadata={
        "help": "give the recurrent layers the biases b_ih and b_hh",
    })
    dropout: float = field(default=0.0, metadata={
        "help": "dropout on the outputs of every recurrent layer but the last, "
                "during training (needs --num-layers 2 or more)",
    })
    bidirectional: bool = field(default=False, metadata={
        "help": "also read each sequence backwards and join both directions' features",
    })
    layer_norm: bool = field(default=False, metadata={
        "help": "layer-normalised cells: normalise the recurrent layers' input and recurrent "
                "products (and an LSTM's cell state), as Ba, Kiros & Hinton (2016); the layer "
                "then also reads a constant feature 1 at every step, which keeps each step's "
                "scale through the input's normalisation",
    })
    recurrent_dropout: float = field(default=0.0, metadata={
        "help": "variational dropout on the state where it enters the recurrent product: one "
                "mask per sequence, layer and direction for the whole sequence, during training",
    })
    zoneout: float = field(default=0.0, metadata={
        "help": "probability that each unit of h keeps its previous value at each step during "
                "training (evaluation: the expected mix), as Krueger et al. (2017)",
    })
    readout: str = field(default="last", metadata={
        "choices": READOUTS,
        "help": "what the linear layer sees: last (the state after each sequence's true "
                "last step, as in the tutorial; with --bidirectional, joined with the "
                "backward state after the first step), mean or max (over the valid steps "
                "of the last layer's output)",
    })

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise UserError(f"--cell should be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in ("hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise UserError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        if "nonlinearity" not in CELLS[self.cell].layer_arguments and self.nonlinearity != "tanh":
            raise UserError(f"--nonlinearity is an option of --cell rnn, not of {self.cell}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.dropout > 0 and self.num_layers == 1:
            raise UserError(
                "--dropout acts between recurrent layers, so it needs --num-layers 2 or more"
            )
        for name in ("recurrent_dropout", "zoneout"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"{flag(name)} must be in [0, 1], got {getattr(self, name)}")
        if self.readout not in READOUTS:
            raise UserError(f"--readout should be one of {', '.join(READOUTS)}, got {self.readout!r}")


@dataclass
class OptimConfig:
    """Training: Adam on the cross-entropy loss, in mini-batches."""

    epochs: int = field(default=30, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=32, metadata={
        "help": "sequences per optimiser step, in total over all processes under torchrun",
    })
    lr: float = field(default=3e-3, metadata={"help": "Adam's learning rate"})
    schedule: str = field(default="cosine", metadata={
        "choices": ("constant", "cosine"),
        "help": "learning rate over the epochs: constant, or cosine (epoch e of E runs at "
                "--lr x (1 + cos(pi (e-1) / E)) / 2, from --lr at the first epoch down "
                "towards zero, as torch's CosineAnnealingLR with T_max = E)",
    })
    weight_decay: float = field(default=0.0, metadata={
        "help": "Adam's L2 penalty on the weights",
    })
    clip_grad: float = field(default=1.0, metadata={
        "help": "largest gradient norm before each step; 0 turns clipping off",
    })
    patience: int = field(default=0, metadata={
        "help": "stop after this many epochs without a better validation accuracy "
                "(0: train every epoch)",
    })
    seed: int = field(default=0, metadata={
        "help": "seed of the initial weights, the shuffling and dropout",
    })
    device: str = field(default="auto", metadata={
        "choices": ("auto", "cpu", "cuda"),
        "help": "where to train: auto picks cuda when a GPU is present",
    })
    threads: int = field(default=1, metadata={
        "help": "CPU threads per process for tensor operations (0: PyTorch's default, one "
                "per core); one suits small recurrent models, whose many small steps lose "
                "more to thread hand-offs than they gain",
    })

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (1-based) under :attr:`schedule`."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / self.epochs))

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        for name in ("weight_decay", "clip_grad", "patience", "threads"):
            if getattr(self, name) < 0:
                raise UserError(f"{flag(name)} must not be negative, got {getattr(self, name)}")


@dataclass
class RunConfig:
    """Everything that defines a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.optim.patience and not self.data.val_fraction:
            raise UserError("--patience stops on validation accuracy, so it needs --val-fraction > 0")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain values only (for JSON and checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_dict`."""
        try:
            return cls(
                DataConfig(**values["data"]),
                ModelConfig(**values["model"]),
                OptimConfig(**values["optim"]),
            )
        except (KeyError, TypeError) as error:
            raise UserError(f"the saved configuration is not one this rnnkit can read ({error})") from None
