"""Running a fused loop over independent pieces of work on several threads.

A layer's directions, and chunks of its batch, never read each other's
state, so each piece can run its whole sequence on a thread of its own with
no synchronisation per step. The loops release the GIL (``nogil``), so plain
Python threads suffice: no second OpenMP runtime competes with torch's for the
cores. The thread count follows ``torch.get_num_threads()``, the setting a
user already controls, and nothing global is changed.
"""

from __future__ import annotations

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
            (:data:`ROW_BLOCK` for numba's, ``BLAS_ROWS`` for BLAS).

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


def threads_for(work: int) -> int:
    """Threads that ``work`` multiply-adds are worth, up to ``torch.get_num_threads()``."""
    return max(1, min(torch.get_num_threads(), work // MIN_WORK_PER_THREAD))


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


def run(work: Callable[[T], None], pieces: list[T], threads: int) -> None:
    """Run ``work(piece)`` for every piece on up to ``threads`` threads.

    The calling thread works too, and every thread takes the next piece not
    yet taken; so a helper thread that is slow to wake (a busy or
    oversubscribed machine) costs nothing: the caller does its share, and
    waits only for pieces a helper has actually started.
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

    _submit(take_and_run, threads - 1)
    mine: list[int] = []
    take_and_run(mine)
    for index in set(range(len(pieces))) - set(mine):
        done[index].wait()
    if errors:
        raise errors[0]
