"""``rnnkit bench``: rnnkit against torch.nn, side by side, in one run.

The measuring is :mod:`rnnkit.bench`; this module reads the options and
prints a table (or JSON).
"""

from __future__ import annotations

import argparse
import json
import sys

from rnnkit.errors import UserError
from rnnkit.kinds import CELLS

DESCRIPTION = """\
Time rnnkit's RNN, LSTM and GRU against torch.nn's on the same weights and
input, in one process: a forward pass under no_grad (inference) and a training step
(zero_grad, forward, loss, backward, SGD step). Runs of the two alternate and
each time is the median of its runs; speedup = torch time / rnnkit time, so
above 1 means rnnkit is faster. The floor is the time of the matrix
products an inference pass needs (the input projections and every step's
product with W_hh), done back to back the way the kernels do them (BLAS or
numba's tiles) on one thread, and beside it rnnkit's inference time as a
multiple of it (below 1 where rnnkit's threads share the work). Peak memory is the rise in resident
memory during a training step (after a first one), each layer measured in a
fresh process.

The default configurations cover, for each cell type, the size regimes
rnnkit sets itself targets in (printed beside each speedup): small batches
with long sequences, batch ~32 with small hidden sizes, hidden sizes 128-256,
and 512 with batch 64. A default run of one cell type takes a few minutes,
of all three about ten; --quick takes seconds.

A second, small table (the streaming set) times one call as streaming and
decoding make them: each sequence layer on one step and each cell, batch 1,
8 -> 16 features, in microseconds per call, under no_grad and as a forward
and backward pass (no optimiser step, which a decoder takes once per
sequence). It runs with the default and --quick configurations (for
--cell's cell types), not with --config; --no-streaming leaves it out.

With --device cuda the same comparison runs on the GPU (peak memory, which
is the CPU's resident memory, is then not measured). There every call of
rnnkit's goes to the step-by-step reference recurrence, one kernel launch
per op and step, so expect it to be far slower than torch.nn's cuDNN layers.

A default run on the CPU also times rnnkit's options beyond torch.nn (layer_norm=True
for LSTM and GRU, zoneout for LSTM) against what a user writes without them:
a Python loop over an nn.LSTMCell / nn.GRUCell step with nn.LayerNorm (or
zoneout masks), on the same weights; and, timed as a pair of their own,
rnnkit's layer with the option against its plain layer of the same size
("x plain"). Its max |diff| compares
the two on float64 copies: a layer-normalised LSTM amplifies rounding over a
long sequence, so float32 runs of the same equations drift apart by O(1).
"""

EPILOG = """\
configuration syntax (--config, repeatable):
  T=<steps>,N=<batch>,H=<hidden>[,I=<input size>][,L=<layers>][,bi][,rnn|lstm|gru][,relu][,P=<proj>][,lengths]
  the input size defaults to the hidden size; 'bi' makes the layer
  bidirectional; the cell is an RNN unless 'lstm' or 'gru' is given;
  'relu' uses nonlinearity='relu' (RNN), P= a projection (LSTM's proj_size);
  'lengths' makes the input a padded batch of varied lengths, which rnnkit
  takes with lengths= and torch.nn packs, runs and unpacks (same result)

examples:
  rnnkit bench                                  # every default configuration, all cells
  rnnkit bench --cell lstm                      # the LSTM ones only
  rnnkit bench --quick                          # three tiny ones, to check the set-up
  rnnkit bench --config T=1000,N=1,H=32,gru --config T=100,N=16,H=256,I=128,L=2,bi,lstm
  rnnkit bench --threads 1 --json > bench.json  # one thread each, for machines

Force the plain-torch reference recurrence (to see what the fused kernels
bring) with RNNKIT_BACKEND=reference in the environment; the table's
'backend' column says which one ran, and for the fused one how it did the
per-step products (numba's own loop, or the BLAS named in the title;
RNNKIT_BLAS=mkl, openblas or none forces one).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time rnnkit against torch.nn (inference and a training step) and compare memory",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to measure")
    what.add_argument(
        "--config", action="append", metavar="SPEC", default=None,
        help="a configuration to measure instead of the defaults (syntax below); repeatable",
    )
    what.add_argument(
        "--cell", choices=(*CELLS, "all"), default="all",
        help="which cell type's default configurations to measure (default: all)",
    )
    what.add_argument(
        "--quick", action="store_true",
        help="three tiny configurations and short timing: checks that everything runs",
    )
    what.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32",
        help="parameter and input dtype (default: float32)",
    )
    what.add_argument(
        "--no-memory", dest="memory", action="store_false",
        help="skip the peak-memory measurement (two extra processes per configuration)",
    )
    what.add_argument(
        "--no-streaming", dest="streaming", action="store_false",
        help="skip the streaming set (one step per call, batch 1)",
    )
    what.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu",
        help="where both layers and their inputs live (default: cpu)",
    )
    how = parser.add_argument_group("how")
    how.add_argument(
        "--threads", type=int, metavar="N",
        help="torch.set_num_threads(N) for both layers; rnnkit's kernels follow the same "
             "setting (default: torch's own default, usually the number of cores)",
    )
    how.add_argument(
        "--min-time", type=float, default=None, metavar="SECONDS",
        help="time to spend per configuration and measurement, at least 5 rounds "
             "(default: 2.0, or 0.1 with --quick)",
    )
    how.add_argument("--json", action="store_true",
                     help="print the results as JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console

    from rnnkit import bench

    try:
        cells = list(CELLS) if args.cell == "all" else [args.cell]
        configs = (
            [bench.BenchConfig.parse(spec) for spec in args.config] if args.config
            else bench.QUICK_CONFIGS if args.quick
            else [config for cell in cells
                  for config in bench.DEFAULT_CONFIGS[cell] + bench.LENGTHS_CONFIGS[cell]]
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.min_time is not None and not args.min_time >= 0:
        raise UserError(f"--min-time must be at least 0 seconds, got {args.min_time:g}")
    min_time = args.min_time if args.min_time is not None else 0.1 if args.quick else 2.0
    dtype = getattr(torch, args.dtype)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: no CUDA device is available to torch (torch.cuda.is_available() is False)"
        )
    streaming = (
        [name for cell in cells for name in (CELLS[cell].layer, CELLS[cell].cell_class)]
        if args.streaming and not args.config else []
    )

    console = Console(stderr=True)
    results, streaming_results = [], []
    for index, config in enumerate(configs, 1):
        if not args.json and console.is_terminal:
            console.print(f"[dim]{index}/{len(configs)} {config.label}...[/]", end="\r")
        results.append(bench.measure(config, dtype, min_time, memory=args.memory, device=args.device))
    for module in streaming:
        streaming_results.append(bench.measure_streaming(module, dtype, min_time, device=args.device))
    extensions = [] if args.config or args.quick or args.device != "cpu" else [
        bench.measure_extension(config, dtype, min_time)
        for config in bench.EXTENSION_CONFIGS if config.cell in cells
    ]
    environment = dict(bench.environment(), dtype=args.dtype, device=args.device)

    if args.json:
        json.dump(dict(environment=environment, results=[r.to_json() for r in results],
                       streaming=[r.to_json() for r in streaming_results],
                       extensions=[r.to_json() for r in extensions]),
                  sys.stdout, indent=2)
        print()
    else:
        out = Console(width=max(Console().width, 160))
        out.print(table(results, environment))
        if streaming_results:
            out.print(streaming_table(streaming_results))
        if extensions:
            out.print(extension_table(extensions))
    return 0


def streaming_table(results: list):
    """The streaming set as a rich table: microseconds per call and speedups."""
    from rich.table import Table

    t = Table(title="streaming: one step per call, microseconds per call (median)")
    for name in (
        "module", "inference us\ntorch / rnnkit", "speedup",
        "forward+backward us\ntorch / rnnkit", "speedup",
    ):
        t.add_column(name, justify="left" if name == "module" else "right")
    for r in results:
        t.add_row(
            r.label,
            f"{r.inference_torch_us:.1f} / {r.inference_rnnkit_us:.1f}", f"{r.inference_speedup:.2f}x",
            f"{r.training_torch_us:.1f} / {r.training_rnnkit_us:.1f}", f"{r.training_speedup:.2f}x",
        )
    return t


def table(results: list, environment: dict):
    """The results as a rich table: times, speedups against targets, memory."""
    from rich.table import Table

    from rnnkit.bench import REGIMES

    def speedup(value: float, target: float | None) -> str:
        text = f"{value:.2f}x"
        if target is None:
            return text
        if value >= target:
            return f"[green]{text}[/] (>={target:g})"
        return f"[red]{text}[/] (>={target:g}, missed)"  # said in words too: a pipe has no colour

    def pair(a: float | None, b: float | None, digits: int) -> str:
        return "-" if a is None or b is None else f"{a:.{digits}f} / {b:.{digits}f}"

    title = (
        f"rnnkit {environment['rnnkit']} vs torch {environment['torch']}: {environment['cpu']}, "
        f"{environment['cpus']} CPUs, {environment['threads']} torch threads, {environment['dtype']}, "
        f"BLAS {environment['blas']}, on {environment['device']}"
    )
    caption = "; ".join(f"{key}: {regime.name}" for key, regime in REGIMES.items())
    t = Table(title=title, caption=f"regimes: {caption}")
    for name in (
        "configuration", "regime", "backend", "inference ms\ntorch / rnnkit", "speedup\n(target)",
        "training step ms\ntorch / rnnkit", "speedup\n(target)", "floor ms\n(rnnkit x)",
        "peak MiB\ntorch / rnnkit", "max |diff|",
    ):
        left = name in ("configuration", "regime", "backend")
        t.add_column(name, justify="left" if left else "right", no_wrap=name == "configuration")
    keys = {regime: key for key, regime in REGIMES.items()}
    for r in results:
        regime = r.regime
        backend = f"{r.backend} ({r.products})" if r.backend == "fused" else r.backend
        t.add_row(
            r.config.label, keys.get(regime, "-"), backend,
            pair(r.inference_torch_ms, r.inference_rnnkit_ms, 2),
            speedup(r.inference_speedup, regime and regime.inference_target),
            pair(r.training_torch_ms, r.training_rnnkit_ms, 2),
            speedup(r.training_speedup, regime and regime.training_target),
            "-" if r.floor_ms is None else f"{r.floor_ms:.2f} ({r.floor_multiple:.1f}x)",
            pair(r.peak_torch_mb, r.peak_rnnkit_mb, 1), f"{r.max_abs_diff:.0e}",
        )
    return t


def extension_table(results: list):
    """The options beyond torch.nn against a plain-torch step loop, as a rich table."""
    from rich.table import Table

    from rnnkit.bench import REGIMES

    keys = {regime: key for key, regime in REGIMES.items()}
    t = Table(title="beyond torch.nn: rnnkit's option against a plain-torch step loop "
                    "(nn.LSTMCell / nn.GRUCell + nn.LayerNorm, or zoneout masks)")
    for name in (
        "configuration", "regime", "backend", "inference ms\nloop / rnnkit", "speedup",
        "training step ms\nloop / rnnkit", "speedup\n(target)", "training ms, rnnkit:\noption / plain (x plain)",
        "max |diff|\n(float64)",
    ):
        left = name in ("configuration", "regime", "backend")
        t.add_column(name, justify="left" if left else "right", no_wrap=name == "configuration")
    for r in results:
        target = r.regime and r.regime.training_target
        speedup = f"{r.training_speedup:.2f}x"
        if target:
            speedup += f" (>={target:g}{'' if r.training_speedup >= target else ', missed'})"
        t.add_row(
            r.config.label, keys.get(r.regime, "-"), r.backend,
            f"{r.inference_torch_ms:.2f} / {r.inference_rnnkit_ms:.2f}", f"{r.inference_speedup:.2f}x",
            f"{r.training_torch_ms:.2f} / {r.training_rnnkit_ms:.2f}", speedup,
            f"{r.training_option_ms:.2f} / {r.training_plain_ms:.2f} ({r.over_plain:.2f}x)", f"{r.max_abs_diff:.0e}",
        )
    return t
