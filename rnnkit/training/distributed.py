"""Multi-process training on PyTorch's own engine (``torchrun``).

Under ``torchrun`` every process finds ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in its environment; :func:`setup` joins the process group
(gloo on CPU, nccl on GPU). Without them the run is a world of one and
nothing here talks to another process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from rnnkit.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    """Where collectives run: the GPU under nccl, else the CPU."""

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that writes files and prints."""
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over all processes, on ``tensor``'s device."""
        if self.size == 1:
            return tensor
        total = tensor.to(self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.to(tensor.device)

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (a small picklable object)."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def setup(device_choice: str, threads: int = 0) -> tuple[World, torch.device]:
    """Join the process group when started by ``torchrun``, and pick the device.

    Args:
        device_choice: ``'auto'`` (cuda when present), ``'cpu'`` or ``'cuda'``.
        threads: CPU threads for tensor operations; 0 leaves PyTorch's choice.

    Returns:
        ``(world, device)``; each process of a GPU run takes the GPU of its
        ``LOCAL_RANK``.
    """
    device = pick_device(device_choice, threads)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    world = World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")), device)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world, device


def pick_device(device_choice: str, threads: int = 0) -> torch.device:
    """The device of this process, made current, and its CPU thread count,
    without joining any process group (see :func:`setup` for the arguments):
    a GPU process takes the GPU of its ``LOCAL_RANK``."""
    if threads > 0:
        torch.set_num_threads(threads)
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available to this process")
    if device_choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def teardown(world: World) -> None:
    """Leave the process group, if this process joined one: after a barrier,
    so that no process tears its group down while another's last collective
    is still under way (gloo's worker threads, still holding it at exit,
    would abort the process: "terminate called without an active exception")."""
    if world.size > 1 and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
