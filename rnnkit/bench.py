"""rnnkit against torch.nn, side by side in one process: speed and peak memory;
the library side of ``rnnkit bench`` (whose command line is :mod:`rnnkit.cli.bench`).

For each configuration (an RNN, LSTM or GRU layer and an input size) both
layers get the same weights (:meth:`rnnkit.RNN.from_torch` and its likes)
and the same input. After a warm-up, runs of
the two alternate (rnnkit first on even rounds, torch first on odd ones, so
that neither always runs on a cache the other warmed or a core the other
heated), and each side's time is the median over the rounds:

* **inference**: a forward pass under ``torch.no_grad()``;
* **training step**: ``zero_grad``, forward, a loss on the output and final
  state, backward, and an SGD step;
* **floor**: the matrix products an inference pass cannot avoid, done back to
  back the way the fused loops do them (BLAS or numba's product, per
  :func:`rnnkit.kernels.blas.per_step_gemm`; :func:`floor_ms`), in the same
  run; rnnkit's inference time as a multiple of it says how much the loops
  add around the products.

Speedup is torch's time over rnnkit's. Peak memory is that of one training
step, measured in a fresh process per layer and configuration (see
:func:`peak_memory_mb`). Benchmarks, not tests: no timing here asserts anything.

>>> from rnnkit.bench import BenchConfig, measure
>>> result = measure(BenchConfig(steps=20, batch=2, hidden=8), min_time=0.01, memory=False)
>>> result.max_abs_diff < 1e-5
True
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.kernels import blas
from rnnkit.kernels.fused_common import step_weights
from rnnkit.kernels.numba_ops import products_repeatedly, project_rows, project_steps
from rnnkit.kinds import CELLS


@dataclass(frozen=True)
class BenchConfig:
    """One layer and input size: ``(T, N, H_in)`` into a layer of hidden size ``H``."""

    steps: int
    batch: int
    hidden: int
    input_size: int = 0  # 0: the same as hidden
    layers: int = 1
    bidirectional: bool = False
    nonlinearity: str = "tanh"  # RNN only
    cell: str = "rnn"  # a key of rnnkit.kinds.CELLS
    proj_size: int = 0  # LSTM only
    lengths: bool = False  # a padded batch of varied lengths: see padded_lengths

    def __post_init__(self) -> None:
        if not self.input_size:
            object.__setattr__(self, "input_size", self.hidden)
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {', '.join(CELLS)}")
        taken = CELLS[self.cell].layer_arguments
        if self.nonlinearity != "tanh" and "nonlinearity" not in taken:
            raise ValueError(f"nonlinearity={self.nonlinearity!r} is for RNN only, not {self.cell}")
        if self.proj_size and "proj_size" not in taken:
            raise ValueError(f"a projection (P=) is for LSTM only, not {self.cell}")
        if self.proj_size >= self.hidden:
            raise ValueError(
                f"a projection (P=) must be smaller than the hidden size H={self.hidden}, "
                f"got P={self.proj_size}"
            )

    @property
    def label(self) -> str:
        text = f"{CELLS[self.cell].layer} T={self.steps} N={self.batch} {self.input_size}->{self.hidden}"
        if self.proj_size:
            text += f"->{self.proj_size}"
        if self.layers > 1:
            text += f" x{self.layers} layers"
        if self.bidirectional:
            text += " bidir"
        if self.nonlinearity != "tanh":
            text += f" {self.nonlinearity}"
        if self.lengths:
            text += " lengths"
        return text

    KEYS = {"T": "steps", "N": "batch", "H": "hidden", "I": "input_size", "L": "layers", "P": "proj_size"}

    @classmethod
    def parse(cls, text: str) -> BenchConfig:
        """``"T=200,N=32,H=64"`` plus optional ``I=`` (input size), ``L=``
        (layers), ``bi`` (bidirectional), a cell (``rnn``, the default,
        ``lstm`` or ``gru``), ``relu`` (RNN), ``P=`` (LSTM projection) and
        ``lengths`` (a padded batch: see :func:`padded_lengths`)."""
        values: dict = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            if part == "bi":
                values["bidirectional"] = True
            elif part == "relu":
                values["nonlinearity"] = "relu"
            elif part == "lengths":
                values["lengths"] = True
            elif part in CELLS:
                values["cell"] = part
            elif key in cls.KEYS and value.isdigit() and int(value) > 0:
                values[cls.KEYS[key]] = int(value)
            else:
                raise ValueError(
                    f"cannot read {part!r} in configuration {text!r}: expected T=, N=, H=, "
                    f"I=, L= or P= with a positive integer, 'bi', 'relu', 'lengths', or a cell "
                    f"({', '.join(CELLS)})"
                )
        missing = [k for k in ("T", "N", "H") if cls.KEYS[k] not in values]
        if missing:
            raise ValueError(f"configuration {text!r} lacks {', '.join(missing)}")
        return cls(**values)


@dataclass(frozen=True)
class Regime:
    """A class of sizes and the speedups rnnkit aims at there (torch time / rnnkit time)."""

    name: str
    inference_target: float
    training_target: float


REGIMES = {
    "small": Regime("batch 1-4, H <= 64, long sequences", 10.0, 10.0),
    "medium": Regime("batch ~32, H <= 64", 2.0, 3.0),
    "large": Regime("H 128-256", 1.5, 1.5),
    "huge": Regime("H >= 512, batch >= 64", 1.0, 1.1),
    "lstm-long": Regime("LSTM, batch 1, H <= 64, long sequences", 2.0, 2.0),
    "lstm": Regime("LSTM, every other size (torch.nn.LSTM runs oneDNN's fused kernel)", 1.0, 1.2),
}


def regime_of(config: BenchConfig) -> Regime | None:
    """The regime a configuration belongs to, or ``None`` (no target)."""
    h, n = config.hidden, config.batch
    if config.cell == "lstm":
        return REGIMES["lstm-long" if n == 1 and h <= 64 and config.steps >= 100 else "lstm"]
    if h >= 512 and n >= 64:
        return REGIMES["huge"]
    if 128 <= h <= 256:
        return REGIMES["large"]
    if h <= 64 and n <= 4 and config.steps >= 100:
        return REGIMES["small"]
    if h <= 64 and 16 <= n <= 64:
        return REGIMES["medium"]
    return None


def _each_regime(cell: str) -> list[BenchConfig]:
    """At least one configuration of each regime for ``cell`` (``lstm``, ``gru``, ...)."""
    return [
        BenchConfig(steps=1000, batch=1, hidden=32, cell=cell),
        BenchConfig(steps=1000, batch=4, hidden=64, cell=cell),
        BenchConfig(steps=500, batch=1, hidden=64, bidirectional=True, cell=cell),
        BenchConfig(steps=200, batch=32, hidden=64, cell=cell),
        BenchConfig(steps=100, batch=16, hidden=128, cell=cell),
        BenchConfig(steps=100, batch=16, input_size=128, hidden=256, layers=2, bidirectional=True, cell=cell),
        BenchConfig(steps=50, batch=64, hidden=512, cell=cell),
    ]


DEFAULT_CONFIGS = {
    "rnn": [
        BenchConfig(steps=1000, batch=1, hidden=32),
        BenchConfig(steps=1000, batch=4, hidden=64),
        BenchConfig(steps=500, batch=1, hidden=64, bidirectional=True),
        BenchConfig(steps=200, batch=32, hidden=64),
        BenchConfig(steps=200, batch=32, hidden=32, layers=2, nonlinearity="relu"),
        BenchConfig(steps=100, batch=16, hidden=128),
        BenchConfig(steps=100, batch=16, input_size=128, hidden=256, layers=2, bidirectional=True),
        BenchConfig(steps=50, batch=64, hidden=512),
    ],
} | {cell: _each_regime(cell) for cell in CELLS if cell != "rnn"}
"""For each cell, at least one configuration of each regime."""

QUICK_CONFIGS = [
    BenchConfig(steps=50, batch=2, hidden=16),
    BenchConfig(steps=20, batch=4, hidden=8, layers=2, bidirectional=True, cell="lstm"),
    BenchConfig(steps=20, batch=4, hidden=8, cell="gru"),
]


@dataclass
class Result:
    """Medians in milliseconds, peak memory in MiB (``None`` when not measured)."""

    config: BenchConfig
    backend: str
    rounds: int
    inference_torch_ms: float
    inference_rnnkit_ms: float
    training_torch_ms: float
    training_rnnkit_ms: float
    max_abs_diff: float
    floor_ms: float | None  # None off the CPU: the floor is the CPU BLAS's
    products: str  # how the fused loops did their per-step products: a BLAS's name or "numba"
    peak_torch_mb: float | None = None
    peak_rnnkit_mb: float | None = None
    regime: Regime | None = field(init=False)

    def __post_init__(self) -> None:
        self.regime = regime_of(self.config)

    @property
    def inference_speedup(self) -> float:
        return self.inference_torch_ms / self.inference_rnnkit_ms

    @property
    def training_speedup(self) -> float:
        return self.training_torch_ms / self.training_rnnkit_ms

    @property
    def floor_multiple(self) -> float | None:
        """rnnkit's inference time over the floor's."""
        return None if self.floor_ms is None else self.inference_rnnkit_ms / self.floor_ms

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(
            label=self.config.label,
            inference_speedup=self.inference_speedup,
            training_speedup=self.training_speedup,
            floor_multiple=self.floor_multiple,
        )
        return data


# -- one configuration -----------------------------------------------------------------


def build(
    config: BenchConfig, dtype: torch.dtype, seed: int = 0, device: str = "cpu"
) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """torch's layer, rnnkit's with the same weights, and an input ``(T, N, H_in)``."""
    torch.manual_seed(seed)
    options: dict = dict(bidirectional=config.bidirectional, dtype=dtype, device=device)
    if "nonlinearity" in CELLS[config.cell].layer_arguments:
        options["nonlinearity"] = config.nonlinearity
    if config.proj_size:
        options["proj_size"] = config.proj_size
    name = CELLS[config.cell].layer
    theirs = getattr(nn, name)(config.input_size, config.hidden, config.layers, **options)
    x = torch.randn(config.steps, config.batch, config.input_size, dtype=dtype, device=device)
    return theirs, getattr(rnnkit, name).from_torch(theirs), x


def training_step(
    module: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, run: Forward | None = None
) -> None:
    """One step: forward (``run``, by default ``module(x)``), a loss on the
    output and final state, backward, update."""
    optimizer.zero_grad(set_to_none=True)
    output, state = (run or _whole)(module, x)
    states = state if isinstance(state, tuple) else (state,)  # an LSTM's is (h_n, c_n)
    loss = output.square().mean() + sum(s.square().mean() for s in states)
    loss.backward()
    optimizer.step()


def _alternate(
    ours: Callable[[], object], theirs: Callable[[], object], min_time: float, min_rounds: int = 5,
    device: str = "cpu",
) -> tuple[float, float, int]:
    """Medians (ms) of alternated runs: at least ``min_rounds`` rounds and
    ``min_time`` seconds of both together, at most 200 rounds. On CUDA each
    run waits for the device before the clock is read (launches are asynchronous)."""
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    for _ in range(2):  # warm-up: compiled code loaded, allocator and caches primed
        ours(), theirs()
    times: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start < min_time and rounds < 200):
        order = ((0, ours), (1, theirs)) if rounds % 2 == 0 else ((1, theirs), (0, ours))
        for side, run in order:
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            times[side].append(time.perf_counter() - t0)
        rounds += 1
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3, rounds


def measure(
    config: BenchConfig, dtype: torch.dtype = torch.float32, min_time: float = 1.0, memory: bool = True,
    device: str = "cpu",
) -> Result:
    """Time inference and a training step of both layers on ``device``;
    optionally their peak memory (the CPU's resident memory: not on CUDA)."""
    theirs, ours, x = build(config, dtype, device=device)
    side = forward(config)
    with torch.no_grad():
        max_abs_diff = (side(ours, x)[0] - side(theirs, x)[0]).abs().max().item()
    backend = kernels.select_backend(ours.kind, x, ours._direction_weights()[0]).name

    def inference(module: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return side(module, x)
        return run

    def training(module: nn.Module) -> Callable[[], None]:
        optimizer = torch.optim.SGD(module.parameters(), lr=1e-6)
        return lambda: training_step(module, optimizer, x, side)

    inf_ours, inf_theirs, rounds = _alternate(inference(ours), inference(theirs), min_time / 2, device=device)
    train_ours, train_theirs, _ = _alternate(training(ours), training(theirs), min_time / 2, device=device)
    library, _ = per_step_gemm(config, dtype)
    result = Result(
        config, backend, rounds, inf_theirs, inf_ours, train_theirs, train_ours, max_abs_diff,
        floor_ms(config, dtype, min_time / 4) if device == "cpu" else None,
        "numba" if library is None else library.name,
    )
    if memory and device == "cpu":
        result.peak_torch_mb = peak_memory_mb(config, dtype, "torch")
        result.peak_rnnkit_mb = peak_memory_mb(config, dtype, "rnnkit")
    return result


def per_step_gemm(config: BenchConfig, dtype: torch.dtype) -> tuple[blas.Blas | None, blas.StepGemm]:
    """How the layers of ``config`` do their per-step products
    (:func:`blas.per_step_gemm`)."""
    gates = len(CELLS[config.cell].gates)
    return blas.per_step_gemm(
        dtype == torch.float64, config.batch, 2 if config.bidirectional else 1,
        config.proj_size or config.hidden, gates * config.hidden,
    )


def floor_ms(config: BenchConfig, dtype: torch.dtype, min_time: float, min_rounds: int = 5) -> float:
    """The floor of an inference pass, in ms (median of rounds), on one
    thread: for each layer, its input projection ``(T*N, H_in) @ (H_in,
    D*G*H)`` (:func:`~rnnkit.kernels.numba_ops.project_rows`, as the layers
    do it), and for each direction ``T`` per-step products ``(N, P) @ (P,
    G*H)`` (and, with a projection, ``(N, H) @ (H, P)``) from compiled code,
    the way the loops do them (BLAS GEMMs of 8-, 16- or 32-row blocks, or numba's
    tiles, as :func:`blas.per_step_gemm` picks). Nothing else: no
    gates, no copies. A layer that runs on several threads can beat it."""
    gates = len(CELLS[config.cell].gates)
    hidden, width = config.hidden, config.proj_size or config.hidden
    directions = 2 if config.bidirectional else 1
    library, gemm = per_step_gemm(config, dtype)

    def zeros(*shape: int):
        return torch.zeros(shape, dtype=dtype)

    layers = []
    for layer in range(config.layers):
        features = config.input_size if layer == 0 else directions * width
        (w_ih_t,) = step_weights([zeros(features, directions * gates * hidden)], dtype)
        layers.append((zeros(config.steps, config.batch, features).numpy(), w_ih_t,
                       zeros(directions * gates * hidden).numpy(),
                       zeros(config.steps, config.batch, directions * gates * hidden).numpy()))
    w_hh_t, w_hr_t = step_weights([zeros(width, gates * hidden), zeros(hidden, width)], dtype)
    h, m = zeros(config.batch, width).numpy(), zeros(config.batch, hidden).numpy()
    z, p = zeros(config.batch, w_hh_t.shape[1]).numpy(), zeros(config.batch, w_hr_t.shape[1]).numpy()

    def run() -> None:
        for x, w_ih_t, b_ih, projected in layers:
            with contextlib.nullcontext() if library is None else library.one_thread():
                if library is None:
                    project_rows(x, w_ih_t, b_ih, projected, 0, 0, config.batch, 0, config.steps)
                else:
                    project_steps(x, w_ih_t, b_ih, projected, 0, 0, config.batch, 0, config.steps, gemm)
                for _ in range(directions):
                    products_repeatedly(h, w_hh_t, z, config.steps, gemm)
                    if config.proj_size:
                        products_repeatedly(m, w_hr_t, p, config.steps, gemm)

    times = []
    start = time.perf_counter()
    run()  # warm-up
    while len(times) < min_rounds or (time.perf_counter() - start < min_time and len(times) < 200):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


# -- padded batches: lengths= against torch's pack, run, unpack -------------------------

Forward = Callable[[nn.Module, torch.Tensor], tuple]
"""How a side runs the input: ``(module, x (T, N, H_in)) -> (output (T, N, ·), state)``."""

LENGTHS_CONFIGS = {
    cell: [BenchConfig(steps=200, batch=32, hidden=64, cell=cell, lengths=True)] for cell in CELLS
}
"""For each cell, a padded batch run with ``lengths=`` against torch's packed route."""


def padded_lengths(steps: int, batch: int) -> torch.Tensor:
    """The valid lengths of a padded benchmark batch ``(N,)``: spread evenly
    from ``T`` down to about ``T/2``, in no order (odd rows first), so that
    torch's route has to sort."""
    lengths = torch.linspace(steps, max(1, steps // 2), batch).round().to(torch.int64)
    return torch.cat([lengths[1::2], lengths[::2]])


def forward(config: BenchConfig) -> Forward:
    """Both sides' forward for ``config``: whole sequences, or with
    ``config.lengths`` a padded batch, which rnnkit takes with ``lengths=``
    and torch.nn packs (``enforce_sorted=False``), runs and unpacks to ``T``
    steps: the same result, zeros past each length."""
    return _padded if config.lengths else _whole


def _whole(module: nn.Module, x: torch.Tensor) -> tuple:
    return module(x)


def _padded(module: nn.Module, x: torch.Tensor) -> tuple:
    lengths = padded_lengths(x.shape[0], x.shape[1])
    if not isinstance(module, nn.RNNBase):  # rnnkit's
        return module(x, lengths=lengths)
    output, state = module(pack_padded_sequence(x, lengths, enforce_sorted=False))
    return pad_packed_sequence(output, total_length=x.shape[0])[0], state


# -- streaming: one step per call ------------------------------------------------------

STREAMING_MODULES = tuple(name for cell in CELLS.values() for name in (cell.layer, cell.cell_class))
"""The modules of the streaming set: each sequence layer called on one step,
and each cell, as a char-RNN sampler or a seq2seq decoder calls them."""

STREAMING_BATCH, STREAMING_INPUT, STREAMING_HIDDEN = 1, 8, 16
"""The streaming set's sizes: batch 1, 8 input features -> 16 hidden, where
the fixed cost of a call is nearly all of its time."""

@dataclass
class StreamingResult:
    """Medians per call in microseconds, one step at batch 1; training is a
    forward and backward pass (:func:`streaming_backward`)."""

    module: str  # a name of STREAMING_MODULES
    rounds: int
    inference_torch_us: float
    inference_rnnkit_us: float
    training_torch_us: float
    training_rnnkit_us: float

    @property
    def label(self) -> str:
        steps = "" if self.module.endswith("Cell") else " T=1"
        return f"{self.module}{steps} N={STREAMING_BATCH} {STREAMING_INPUT}->{STREAMING_HIDDEN}"

    @property
    def inference_speedup(self) -> float:
        return self.inference_torch_us / self.inference_rnnkit_us

    @property
    def training_speedup(self) -> float:
        return self.training_torch_us / self.training_rnnkit_us

    def to_json(self) -> dict:
        return dict(
            asdict(self), label=self.label,
            inference_speedup=self.inference_speedup, training_speedup=self.training_speedup,
        )


def build_streaming(
    module: str, dtype: torch.dtype, seed: int = 0, device: str = "cpu"
) -> tuple[nn.Module, nn.Module, tuple]:
    """torch's module, rnnkit's with the same weights, and the arguments of
    one call: a sequence layer gets one step ``(1, N, H_in)`` (and a zero
    state of its own), a cell one step ``(N, H_in)`` and the state ``(N, H)``
    that a caller carries from call to call."""
    torch.manual_seed(seed)
    theirs = getattr(nn, module)(STREAMING_INPUT, STREAMING_HIDDEN, dtype=dtype, device=device)
    ours = getattr(rnnkit, module).from_torch(theirs)
    if not module.endswith("Cell"):
        step = torch.randn(1, STREAMING_BATCH, STREAMING_INPUT, dtype=dtype, device=device)
        return theirs, ours, (step,)
    x = torch.randn(STREAMING_BATCH, STREAMING_INPUT, dtype=dtype, device=device)
    h = torch.randn(STREAMING_BATCH, STREAMING_HIDDEN, dtype=dtype, device=device)
    return theirs, ours, (x, (h, torch.randn_like(h)) if module == "LSTMCell" else h)


def output_tensors(value: object) -> list[torch.Tensor]:
    """Every tensor in a module's output: a tensor, or tuples of them."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for part in value for t in output_tensors(part)]  # type: ignore[attr-defined]


def streaming_backward(module: nn.Module, args: tuple) -> None:
    """One call with autograd: forward, a loss on every output, backward (the
    gradients add up in ``.grad``; an optimiser step, which a decoder takes once
    per sequence rather than per call, is left out)."""
    loss = sum(t.square().mean() for t in output_tensors(module(*args)))
    loss.backward()  # type: ignore[union-attr]


def measure_streaming(
    module: str, dtype: torch.dtype = torch.float32, min_time: float = 1.0, device: str = "cpu"
) -> StreamingResult:
    """Time one call of both modules, under ``no_grad`` (inference) and with
    autograd, forward and backward (training)."""
    theirs, ours, args = build_streaming(module, dtype, device=device)

    def inference(m: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                m(*args)
        return run

    def training(m: nn.Module) -> Callable[[], None]:
        return lambda: streaming_backward(m, args)

    # Each call timed on its own (8 us and more: well above the clock's
    # resolution), so that the median leaves out what other processes and
    # Python's garbage collector now and then add to one of them.
    per_call = 1e3  # ms -> us
    inf_ours, inf_theirs, rounds = _alternate(inference(ours), inference(theirs), min_time / 2, device=device)
    train_ours, train_theirs, _ = _alternate(training(ours), training(theirs), min_time / 2, device=device)
    return StreamingResult(
        module, rounds, inf_theirs * per_call, inf_ours * per_call,
        train_theirs * per_call, train_ours * per_call,
    )


# -- beyond torch.nn: layer norm and zoneout against a hand-written step loop ----------


@dataclass(frozen=True)
class ExtensionConfig:
    """A layer with rnnkit's ``layer_norm=True`` or ``zoneout=p`` over ``(T, N, H)``.

    torch.nn has no such layer: what a user writes today is a Python loop
    over the steps of an ``nn.LSTMCell`` or ``nn.GRUCell`` (with
    ``nn.LayerNorm`` modules for layer norm), :class:`StepLoop`, the other side here.
    """

    steps: int
    batch: int
    hidden: int
    cell: str = "lstm"  # 'lstm' or 'gru'
    layer_norm: bool = False
    zoneout: float = 0.0

    @property
    def label(self) -> str:
        option = "layer_norm" if self.layer_norm else f"zoneout={self.zoneout:g}"
        return f"{CELLS[self.cell].layer} T={self.steps} N={self.batch} {self.hidden}->{self.hidden} {option}"

    @property
    def plain(self) -> BenchConfig:
        """The same size without the option, for rnnkit's own plain layer."""
        return BenchConfig(steps=self.steps, batch=self.batch, hidden=self.hidden, cell=self.cell)


EXTENSION_CONFIGS = [
    ExtensionConfig(steps=1000, batch=1, hidden=32, cell=cell, layer_norm=True) for cell in ("lstm", "gru")
] + [
    ExtensionConfig(steps=1000, batch=4, hidden=64, cell=cell, layer_norm=True) for cell in ("lstm", "gru")
] + [
    ExtensionConfig(steps=200, batch=32, hidden=64, cell=cell, layer_norm=True) for cell in ("lstm", "gru")
] + [
    ExtensionConfig(steps=1000, batch=1, hidden=32, cell="lstm", zoneout=0.1),
    ExtensionConfig(steps=200, batch=32, hidden=64, cell="lstm", zoneout=0.1),
]
"""The layer-norm LSTM and GRU in the small and medium regimes, and zoneout."""


class StepLoop(nn.Module):
    """The plain-torch way to a layer-normalised or zoned LSTM or GRU: a loop
    over the steps around an ``nn.LSTMCell`` / ``nn.GRUCell``, with
    ``nn.LayerNorm(G*H, bias=False)`` on both products (and ``nn.LayerNorm(H)``
    on an LSTM's cell state), or zoneout masks drawn per step. Its
    ``forward(x (T, N, H))`` returns ``(output (T, N, H), final state)`` like a layer's."""

    def __init__(self, config: ExtensionConfig, dtype: torch.dtype) -> None:
        super().__init__()
        self.config = config
        factory = {"dtype": dtype}
        h, rows = config.hidden, len(CELLS[config.cell].gates) * config.hidden
        self.cell = (nn.LSTMCell if config.cell == "lstm" else nn.GRUCell)(h, h, **factory)
        if config.layer_norm:
            self.ln_ih = nn.LayerNorm(rows, bias=False, **factory)
            self.ln_hh = nn.LayerNorm(rows, bias=False, **factory)
            if config.cell == "lstm":
                self.ln_c = nn.LayerNorm(h, **factory)

    def _normed_step(self, x_t: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None):
        cell = self.cell
        a = self.ln_ih(x_t @ cell.weight_ih.t()) + cell.bias_ih
        b = self.ln_hh(h @ cell.weight_hh.t()) + cell.bias_hh
        if c is None:
            a_r, a_z, a_n = a.chunk(3, 1)
            b_r, b_z, b_n = b.chunk(3, 1)
            r, z = torch.sigmoid(a_r + b_r), torch.sigmoid(a_z + b_z)
            n = torch.tanh(a_n + r * b_n)
            return (1 - z) * n + z * h, None
        i, f, g, o = (a + b).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(self.ln_c(c)), c

    def forward(self, x: torch.Tensor) -> tuple:
        lstm = self.config.cell == "lstm"
        h = x.new_zeros(x.shape[1], self.config.hidden)
        c = h if lstm else None
        p = self.config.zoneout
        outputs = []
        for x_t in x:
            if self.config.layer_norm:
                new_h, c = self._normed_step(x_t, h, c)
            elif lstm:
                new_h, c = self.cell(x_t, (h, c))
            else:
                new_h = self.cell(x_t, h)
            if p:
                keep = torch.bernoulli(torch.full_like(h, p)) if self.training else p
                new_h = keep * h + (1 - keep) * new_h
            h = new_h
            outputs.append(h)
        return torch.stack(outputs), ((h, c) if lstm else h)


def build_extension(config: ExtensionConfig, dtype: torch.dtype, seed: int = 0):
    """The step loop, rnnkit's layer with the same weights, and an input ``(T, N, H)``."""
    torch.manual_seed(seed)
    theirs = StepLoop(config, dtype)
    ours = getattr(rnnkit, CELLS[config.cell].layer)(
        config.hidden, config.hidden, dtype=dtype, layer_norm=config.layer_norm, zoneout=config.zoneout,
    )
    weights = {f"{name}_l0": p for name, p in theirs.cell.named_parameters()}
    if config.layer_norm:
        weights |= {"ln_ih_weight_l0": theirs.ln_ih.weight, "ln_hh_weight_l0": theirs.ln_hh.weight}
        if config.cell == "lstm":
            weights |= {"ln_c_weight_l0": theirs.ln_c.weight, "ln_c_bias_l0": theirs.ln_c.bias}
    ours.load_state_dict({name: p.detach().clone() for name, p in weights.items()})
    x = torch.randn(config.steps, config.batch, config.hidden, dtype=dtype)
    return theirs, ours, x


@dataclass
class ExtensionResult:
    """Medians in milliseconds: the step loop against rnnkit's layer with the
    option; then, in a separate alternation of their own, the layer with the
    option against rnnkit's plain layer of the same size (training steps).
    The pair is timed apart from the step loop because whatever runs after
    that long Python loop finds its caches cold (measured: the layer-norm
    LSTM's step at ``T=1000 N=1 H=32`` took 3.6 ms beside the loop and 1.9 ms
    beside the plain layer, whose step took 1.35 ms either way)."""

    config: ExtensionConfig
    backend: str
    rounds: int
    inference_torch_ms: float
    inference_rnnkit_ms: float
    training_torch_ms: float
    training_rnnkit_ms: float
    training_option_ms: float  # beside the plain layer
    training_plain_ms: float
    max_abs_diff: float  # of the eval-mode outputs, in float64
    regime: Regime | None = field(init=False)

    def __post_init__(self) -> None:
        self.regime = regime_of(self.config.plain)

    @property
    def inference_speedup(self) -> float:
        return self.inference_torch_ms / self.inference_rnnkit_ms

    @property
    def training_speedup(self) -> float:
        return self.training_torch_ms / self.training_rnnkit_ms

    @property
    def over_plain(self) -> float:
        """rnnkit's training step with the option over its plain layer's, timed together."""
        return self.training_option_ms / self.training_plain_ms

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(
            label=self.config.label, inference_speedup=self.inference_speedup,
            training_speedup=self.training_speedup, over_plain=self.over_plain,
        )
        return data


def measure_extension(config: ExtensionConfig, dtype: torch.dtype = torch.float32, min_time: float = 1.0):
    """Time inference (eval mode, no_grad) and a training step (training mode:
    zoneout draws its masks) of the step loop and of rnnkit's layer, then
    the training steps of rnnkit's layer and its plain layer; each pair in
    alternated runs, medians."""
    theirs, ours, x = build_extension(config, dtype)
    with torch.no_grad():
        # On float64 copies: a layer-normalised LSTM's recurrence amplifies
        # rounding (a 1e-14 change of the input moves the step loop's own
        # output by 1e-5 after 1000 steps), so float32 runs of the same
        # equations part by O(1) whatever computes them.
        loop, layer = (copy.deepcopy(m).double().eval() for m in (theirs, ours))
        max_abs_diff = (layer(x.double())[0] - loop(x.double())[0]).abs().max().item()
    backend = kernels.select_backend(
        ours.kind, x, ours._direction_weights()[0],
        zoneout_mask=x.new_empty(1) if config.zoneout else None,
    ).name

    def inference(module: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return module.eval()(x)
        return run

    def training(module: nn.Module) -> Callable[[], None]:
        optimizer = torch.optim.SGD(module.parameters(), lr=1e-6)
        return lambda: training_step(module.train(), optimizer, x)

    inf_ours, inf_theirs, rounds = _alternate(inference(ours), inference(theirs), min_time / 2)
    train_ours, train_theirs, _ = _alternate(training(ours), training(theirs), min_time / 2)
    _, plain, _ = build(config.plain, dtype)
    train_plain, train_option, _ = _alternate(training(plain), training(ours), min_time / 2)
    return ExtensionResult(
        config, backend, rounds, inf_theirs, inf_ours, train_theirs, train_ours, train_option, train_plain,
        max_abs_diff,
    )


# -- peak memory ----------------------------------------------------------------------


def peak_memory_mb(config: BenchConfig, dtype: torch.dtype, implementation: str) -> float | None:
    """Peak memory of one training step, in MiB, measured in a fresh process
    (``None`` where the system cannot say: it needs Linux's ``/proc``).

    The child builds the layer and input and runs a full-size training step
    first, so that what is made once per process (compiled code, oneDNN's
    kernels, thread pools and their stacks, the gradients' storage) exists
    before the measurement. It then hands freed heap memory back to the system
    (``malloc_trim``), resets the high-water mark of its resident memory
    (``/proc/self/clear_refs``), runs one full-size training step and reads
    the new high-water mark: its rise over the resident memory before the
    step is what the step needed at its peak, whoever allocated it (torch,
    numba, BLAS). The gradients, allocated before, are not in it.
    """
    request = dict(config=asdict(config), dtype=str(dtype), implementation=implementation,
                   threads=torch.get_num_threads())
    child = subprocess.run(
        [sys.executable, "-m", "rnnkit.bench", json.dumps(request)],
        capture_output=True, text=True, check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{child.stderr.strip()}")
    value = child.stdout.strip().splitlines()[-1]
    return None if value == "None" else float(value)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(field + ":")))


def _memory_child(request: dict) -> float | None:
    """The child side of :func:`peak_memory_mb`."""
    torch.set_num_threads(request["threads"])
    config = BenchConfig(**request["config"])
    dtype = getattr(torch, request["dtype"].removeprefix("torch."))
    theirs, ours, x = build(config, dtype)
    module = ours if request["implementation"] == "rnnkit" else theirs
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-6)
    optimizer.zero_grad = lambda set_to_none=True: None  # keep the gradients' storage
    run = forward(config)
    training_step(module, optimizer, x, run)  # one-time costs (compiled kernels, thread stacks) out of the way
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM, the peak resident set size
        before = _status_kib("VmRSS")
    except (OSError, StopIteration):
        return None
    training_step(module, optimizer, x, run)
    return (_status_kib("VmHWM") - before) / 1024


# -- where it ran --------------------------------------------------------------------------


def environment() -> dict:
    """The machine and versions, to print beside the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(
        cpu=cpu, cpus=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
        rnnkit=rnnkit.__version__, python=platform.python_version(), system=platform.system(),
        blas="none" if os.environ.get("RNNKIT_BLAS") == "none" else blas.active().name,
    )


if __name__ == "__main__":
    print(_memory_child(json.loads(sys.argv[1])))
