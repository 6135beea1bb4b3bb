"""Running a fused loop over independent pieces of work on several threads.

A layer's directions, and chunks of its batch, never read each other's
state, so each piece can run its whole sequence on a thread of its own with
no synchronisation per step. The loops release the GIL (``nogil``), so any
threads serve; rnnkit borrows torch's own OpenMP team where torch has GNU
OpenMP (its Linux builds), so that no second set of threads competes with
torch's for the cores, and keeps a pool of Python threads for elsewhere. The
thread count follows ``torch.get_num_threads()``, the setting a user already
controls, and nothing global is changed.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple, TypeVar

import torch

from rnnkit.kernels.numba_ops import ROW_BLOCK

MIN_WORK_PER_THREAD = 1_000_000
"""Multiply-adds of the recurrence below which a piece is not worth a thread:
handing work to a sleeping thread and waiting for it costs tens of microseconds,
about what a million multiply-adds take."""


T = TypeVar("T")


class Piece(NamedTuple):
    """One direction ``d`` of a layer for the batch rows ``n0 <= n < n1``."""

    d: int
    n0: int
    n1: int


def plan(directions: int, batch: int, work_per_row: int, row_block: int = ROW_BLOCK) -> tuple[list[Piece], int]:
    """Split a layer into pieces and say how many threads should share them.

    Args:
        directions: ``D``, 1 or 2.
        batch: ``N``.
        work_per_row: multiply-adds of one direction for one batch row over
            the whole sequence (``T * H * H`` for an Elman layer).
        row_block: the rows the per-step product computes together
            (:data:`ROW_BLOCK` for numba's, a BLAS call's rows for BLAS:
            :func:`rnnkit.kernels.blas.per_step_gemm`).

    Returns:
        ``(pieces, threads)``. Batch chunks start at multiples of
        ``row_block``, so every row is computed by the same arithmetic
        whatever the split.
    """
    threads = threads_for(directions * batch * work_per_row)
    chunks = max(1, min(-(-threads // directions), batch // row_block))
    rows = -(-batch // chunks)
    rows = max(row_block, -(-rows // row_block) * row_block)  # a multiple of row_block
    pieces = [
        Piece(d, n0, min(n0 + rows, batch)) for d in range(directions) for n0 in range(0, batch, rows)
    ]
    return pieces, min(threads, len(pieces))


def threads_for(work: int, per_thread: int = MIN_WORK_PER_THREAD) -> int:
    """Threads that ``work`` multiply-adds are worth, at least ``per_thread``
    each, up to ``torch.get_num_threads()``."""
    return max(1, min(torch.get_num_threads(), work // per_thread))


def spans(steps: int, parts: int) -> list[tuple[int, int]]:
    """``range(steps)`` cut into at most ``parts`` consecutive ``(t0, t1)`` spans."""
    size = -(-steps // max(1, min(parts, steps)))
    return [(t0, min(t0 + size, steps)) for t0 in range(0, steps, size)]


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _submit(task: Callable[[], None], copies: int) -> None:
    """Hand ``copies`` calls of ``task`` to the helper threads, first growing
    the pool to ``copies`` threads if it is smaller. Under the lock, so that
    no other thread can retire the pool between growing and submitting (a
    retired pool still finishes what it was given)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < copies:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(copies, thread_name_prefix="rnnkit"), copies
        for _ in range(copies):
            _pool.submit(task)


def _openmp_team() -> Callable[[Callable[[], None], int], None] | None:
    """``start(body, threads)``: run ``body()`` on ``threads`` threads of torch's
    own OpenMP team (the calling thread is one) and return when all are done;
    ``None`` where torch does not use GNU OpenMP (its ``libgomp``, loaded with
    torch, is found by name among the process's libraries).

    These are the threads torch's own parallel ops run on: right after one,
    they spin for a while waiting for more work, which plain Python threads
    would have to wait behind (on a 2-core machine a two-thread loop then ran
    no faster than one); here they take rnnkit's pieces at once."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libgomp" in line and "/" in line}
        torch_lib = os.path.dirname(torch.__file__)
        paths = sorted(p for p in paths if p.startswith(torch_lib)) or sorted(paths)
        gomp = ctypes.CDLL(paths[0])
        gomp_parallel = gomp.GOMP_parallel
    except (OSError, IndexError, AttributeError):
        return None
    body_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    gomp_parallel.restype = None
    gomp_parallel.argtypes = [body_type, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    # by key, for callers on several Python threads at once: (body, the caller's thread)
    bodies: dict[int, tuple[Callable[[], None], int]] = {}
    keys = itertools.count(1)

    ensure = ctypes.pythonapi.PyGILState_Ensure
    known = threading.local()

    @body_type
    def run_body(key: int) -> None:  # on every thread of the team; takes the GIL around body's Python
        body, caller = bodies[key]
        if threading.get_ident() != caller and not getattr(known, "kept", False):
            # An OpenMP worker is not Python's: each callback would make and drop
            # a thread state (tens of µs). One reference kept keeps its state.
            ensure()
            known.kept = True
        body()

    def start(body: Callable[[], None], threads: int) -> None:
        key = next(keys)
        bodies[key] = (body, threading.get_ident())
        try:
            gomp_parallel(run_body, key, threads, 0)
        finally:
            del bodies[key]

    return start


_team = _openmp_team()


def run(work: Callable[[T], None], pieces: list[T], threads: int) -> None:
    """Run ``work(piece)`` for every piece on up to ``threads`` threads.

    The threads are torch's OpenMP team where there is one (see
    :func:`_openmp_team`), else rnnkit's own pool. The calling thread works
    too, and every thread takes the next piece not yet taken; so a helper
    thread that is slow to wake (a busy or oversubscribed machine) costs
    nothing: the caller does its share, and waits only for pieces a helper
    has actually started.
    """
    if threads <= 1 or len(pieces) <= 1:
        for piece in pieces:
            work(piece)
        return
    lock = threading.Lock()
    next_piece = [0]
    done = [threading.Event() for _ in pieces]
    errors: list[BaseException] = []

    def take_and_run(mine: list[int] | None = None) -> None:
        while True:
            with lock:
                index = next_piece[0]
                if index == len(pieces):
                    return
                next_piece[0] += 1
            if mine is not None:
                mine.append(index)
            try:
                work(pieces[index])
            except BaseException as error:  # re-raised on the calling thread
                errors.append(error)
            finally:
                done[index].set()

    if _team is not None:
        _team(take_and_run, threads)
    else:
        _submit(take_and_run, threads - 1)
        mine: list[int] = []
        take_and_run(mine)
        for index in set(range(len(pieces))) - set(mine):
            done[index].wait()
    if errors:
        raise errors[0]
