"""Which BLAS the fused loops hand their per-step products to, found at run time.

The loops call ``sgemm``/``dgemm`` from compiled code through its address
(:func:`~rnnkit.kernels.numba_ops.product`), so a call costs about 0.1 µs
against a Python-level ``torch.mm``'s 1.3 µs. Two libraries can serve:

* ``mkl``: the MKL inside torch's own wheel (x86-64 Linux builds export its
  Fortran symbols ``sgemm_``/``dgemm_`` from ``libtorch_cpu.so``). Not a
  documented interface, so it is looked up by name and skipped when absent.
* ``openblas``: the OpenBLAS in SciPy's wheel, through the documented
  ``scipy.linalg.cython_blas``: the fallback everywhere else.

:func:`per_step_gemm` decides, per layer call, whether the products go to
BLAS or stay in numba's own tiles (``matmul_rows``); ``RNNKIT_BLAS=mkl``, ``openblas``
or ``none`` in the environment overrides it. :func:`active` names the BLAS
(``rnnkit bench`` prints it).

Threads: rnnkit runs its own threads over directions and batch chunks, so
every BLAS call inside the loops must run on one thread. MKL has a per-thread
setting for that (``MKL_Set_Num_Threads_Local``, set and restored around each
piece of work, so the caller's own torch code keeps its threads). OpenBLAS's
setting is process-wide: while a fused call runs, SciPy's OpenBLAS is held at
one thread and given its count back afterwards (torch's and NumPy's BLAS are
other libraries and are never touched).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
from typing import Callable, Iterator, NamedTuple

BLAS_ROWS = 16
"""Batch rows per BLAS call. A BLAS library may sum a row's products in an
order that depends on how many rows the call has; the loops therefore call it
on fixed blocks of rows, counted from row 0, and chunks of the batch given to
threads start at multiples of this, so that a row's result does not depend on
the thread count. With 16 rows a call's fixed cost (about 0.1 µs) is small
beside its work from ``H = 32`` up, and a batch of 32 still splits over two
threads."""

SMALL_BLAS_ROWS = 8
"""Rows per BLAS call where blocks of :data:`BLAS_ROWS` would leave a thread
idle (a batch of 16, one direction): MKL's calls of 8 rows ran as fast as
those of 16 for the weights it takes (measured on an Intel Xeon, one thread,
``(N, 128) @ (128, 512)``: 185 GFLOP/s, against 164 for numba's tiles),
but not the input projection from a wide input (the bidirectional second
layer of ``H = 256``, ``H_in = 512``, ran 0.81x as fast in calls of 8), so
larger batches keep calls of 16."""

LARGE_BLAS_ROWS = 32
LARGE_WEIGHTS_BYTES = 2 << 20
"""For a ``W_hh`` of more bytes than this, which a core's L2 cache does not
hold, each BLAS call takes :data:`LARGE_BLAS_ROWS` rows: every call reads
the whole matrix again (measured on an Intel Xeon, one thread, MKL,
``(N, 512) @ (512, 2048)``: 117 GFLOP/s in calls of 16 rows, 148 of 32, 169
of 64)."""


class Blas(NamedTuple):
    """One BLAS library: its name, the addresses of ``sgemm`` and ``dgemm``
    (Fortran calling convention), and a context manager that keeps its calls
    on one thread inside the block."""

    name: str
    sgemm: int
    dgemm: int
    one_thread: Callable[[], contextlib.AbstractContextManager[None]]

    def gemm(self, double: bool) -> int:
        """The address of ``dgemm`` (``double``) or ``sgemm``."""
        return self.dgemm if double else self.sgemm


def _mkl() -> Blas | None:
    """torch's MKL, or ``None`` where its wheel does not export it."""
    import torch

    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        lib = ctypes.CDLL(path)
        sgemm, dgemm = (ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in ("sgemm_", "dgemm_"))
        set_local = lib.MKL_Set_Num_Threads_Local
    except (OSError, AttributeError):
        return None
    set_local.restype, set_local.argtypes = ctypes.c_int, [ctypes.c_int]

    @contextlib.contextmanager
    def one_thread() -> Iterator[None]:
        previous = set_local(1)  # this thread only; 0 would mean "the global setting"
        try:
            yield
        finally:
            set_local(previous)

    return Blas("mkl", sgemm, dgemm, one_thread)


def _openblas() -> Blas:
    """SciPy's OpenBLAS through ``scipy.linalg.cython_blas``."""
    from numba.extending import get_cython_function_address

    sgemm, dgemm = (get_cython_function_address("scipy.linalg.cython_blas", name) for name in ("sgemm", "dgemm"))
    get_threads, set_threads = _openblas_thread_setters(sgemm)
    lock, holders, saved = threading.Lock(), [0], [1]

    @contextlib.contextmanager
    def one_thread() -> Iterator[None]:
        # Process-wide: the first of concurrent holders saves the count, the last restores it.
        if set_threads is None:
            yield
            return
        with lock:
            if holders[0] == 0:
                saved[0] = get_threads()
                set_threads(1)
            holders[0] += 1
        try:
            yield
        finally:
            with lock:
                holders[0] -= 1
                if holders[0] == 0:
                    set_threads(saved[0])

    return Blas("openblas", sgemm, dgemm, one_thread)


def _openblas_thread_setters(address: int) -> tuple[Callable[[], int], Callable[[int], None]] | tuple[None, None]:
    """``get_num_threads`` and ``set_num_threads`` of the library that holds
    ``address`` (found by ``dladdr``), under OpenBLAS's names or the
    ``scipy_``-prefixed ones of SciPy's wheels; ``(None, None)`` if neither."""

    class DlInfo(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                    ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        info = DlInfo()
        if not libc.dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
            return None, None
        lib = ctypes.CDLL(info.fname.decode())
    except (OSError, AttributeError):
        return None, None
    for prefix in ("scipy_openblas", "openblas"):
        get_threads = getattr(lib, f"{prefix}_get_num_threads", None)
        set_threads = getattr(lib, f"{prefix}_set_num_threads", None)
        if get_threads is not None and set_threads is not None:
            get_threads.restype, set_threads.argtypes = ctypes.c_int, [ctypes.c_int]
            return get_threads, set_threads
    return None, None


_mkl = functools.cache(_mkl)
_openblas = functools.cache(_openblas)


def torch_mkl() -> Blas | None:
    """The MKL inside torch's wheel, or ``None`` where it has none (this
    loads nothing else, unlike :func:`available`)."""
    return _mkl()


def available() -> dict[str, Blas]:
    """Every BLAS found, best first (MKL, where torch's wheel has it).
    Loading SciPy's OpenBLAS starts its thread pool, so the loops ask for it
    only where it serves (:func:`active`)."""
    return {blas.name: blas for blas in (_mkl(), _openblas()) if blas is not None}


def active() -> Blas:
    """The BLAS the loops use where :func:`per_step_gemm` picks one:
    ``RNNKIT_BLAS`` if it names one, else MKL where found, else OpenBLAS."""
    name = os.environ.get("RNNKIT_BLAS", "")
    if name in ("", "none", "mkl") and _mkl() is not None:
        return _mkl()
    if name in ("", "none", "openblas"):
        return _openblas()
    found = available()
    if name not in found:
        raise ValueError(
            f"RNNKIT_BLAS={name!r}: expected 'none' or one of {', '.join(found)} (the BLAS found here)"
        )
    return found[name]


def _intel() -> bool:
    """Whether the CPU is Intel's: MKL takes its fastest code paths (AVX-512)
    on Intel CPUs only, and its AVX2 ones elsewhere."""
    try:
        with open("/proc/cpuinfo") as info:
            return "GenuineIntel" in info.read(4096)
    except OSError:
        return False


INTEL = _intel()


MKL_MIN_BLOCKS = 2
"""Blocks of a BLAS call's rows, in the batch times the directions, from
which MKL takes the per-step products on Intel CPUs: with fewer, a second
thread is left idle, where numba's tiles split the batch in pairs of rows."""

MKL_MIN_INNER = 64
MKL_MIN_WEIGHTS = 64 * 192
"""The smallest ``W_hh`` (inner dimension, and multiply-adds per row) whose
per-step products MKL does faster than numba's tiles on Intel CPUs."""

StepGemm = tuple[int, int]
"""How the loops do their per-step products, as they take it: ``(address,
rows)``, the GEMM to call and the rows of each call, or ``(0, 0)`` for
numba's tiles (:func:`rnnkit.kernels.numba_ops.product`)."""

TILES: StepGemm = (0, 0)


def per_step_gemm(double: bool, batch: int, directions: int, inner: int, outer: int) -> tuple[Blas | None, StepGemm]:
    """How a layer's per-step products ``(N, inner) @ (inner, outer)`` run
    (``W_hh^T`` is ``(inner, outer)``: ``inner`` the state's width, ``outer``
    the gates'): ``(blas, (address, rows))``, the BLAS, its GEMM to call from
    the loops and the rows of each call, or ``(None, TILES)`` for numba's
    ``matmul_rows``. The input projection goes the same way.

    ``double``: float64 (else float32); ``batch`` is ``N``, ``directions`` 1
    or 2. The choice depends on the layer's shape only (not on the thread
    count), so every split of the batch gets the same arithmetic.
    ``RNNKIT_BLAS=mkl`` or ``openblas`` sends every product to that BLAS,
    ``none`` keeps them all in numba.

    By measurement, one thread, products called from a compiled loop
    (README's Speed section). On AMD EPYC (Zen 5, AVX-512), where MKL runs
    its AVX2 code, numba's register tiles run 230-270 GFLOP/s float32 from
    ``N = 4`` against MKL's 75-95, so MKL is never used there. On Intel Xeon
    (AVX-512, AMX), float32: the tiles win at ``N <= 2`` (1.1-1.7x MKL's
    speed below ``H = 256``), are level at ``N = 4``, and fall behind from
    ``N = 8`` (MKL 0.93-0.96x the tiles' time at ``H = 64`` for the LSTM and
    GRU, 0.85-0.9x at ``H = 128-256``, 0.65-0.75x at ``H = 512``), but for
    a narrow ``W_hh`` (the Elman ``H = 64``, any ``H = 32``: the tiles
    1.04-1.15x MKL's speed); float64 alike. The batch goes to threads in
    whole blocks of a call's rows (:data:`SMALL_BLAS_ROWS`,
    :data:`BLAS_ROWS` or :data:`LARGE_BLAS_ROWS`), so MKL serves from
    :data:`MKL_MIN_BLOCKS` blocks (both directions counted), where the tiles
    would split the batch over two threads, and from :data:`MKL_MIN_WEIGHTS`.
    SciPy's OpenBLAS never beat numba's loops (6 GFLOP/s at ``N = 1``, 60 at
    ``N = 64`` on the EPYC), so it serves only when asked for.
    """
    forced = os.environ.get("RNNKIT_BLAS", "")
    if forced == "none":
        return None, TILES
    if inner * outer * (8 if double else 4) > LARGE_WEIGHTS_BYTES:
        rows = LARGE_BLAS_ROWS
    else:
        rows = BLAS_ROWS if batch * directions >= MKL_MIN_BLOCKS * BLAS_ROWS else SMALL_BLAS_ROWS
    if forced:
        blas = active()
        return blas, (blas.gemm(double), rows)
    mkl = _mkl()
    if mkl is None:
        return None, TILES
    use = (
        INTEL
        and batch * directions >= MKL_MIN_BLOCKS * rows
        and inner >= MKL_MIN_INNER
        and inner * outer >= MKL_MIN_WEIGHTS
    )
    return (mkl, (mkl.gemm(double), rows)) if use else (None, TILES)
